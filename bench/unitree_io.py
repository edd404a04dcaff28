"""State-to-command latency and CPU cost of the Unitree backend over DDS on the loopback interface.

    python bench/unitree_io.py [--robot g1] [--rate 500] [--seconds 5]

This process plays the robot: it publishes rt/lowstate (hg for G1, go for Go2, CRC filled in) at
`--rate` on absolute deadlines and times, for each state, the first rt/lowcmd that comes back
before the next state is due. Two controller sides run in a child process, one after the other,
against the same stimulus:

  backend      deploy.backends.unitree.UnitreeBackend (bytes codec, raw cyclonedds samples,
               one lowcmd per lowstate from the latest targets), no Controller on top
  reference    a bare cyclonedds publish/subscribe of the same messages with the SDK's typed
               IDL classes: take LowState_, fill a LowCmd_ from it (q of the used motors, gains,
               mode_machine), CRC().Crc, write

Reported per side: latency p50 / p99 / max (state written -> command received, both hops through
DDS), the fraction of states answered before the next one, the command rate sustained, and the
child's CPU time per second of wall time (utime + stime from /proc) and per state handled. Ratios
compare the two sides measured in this run. Prints ONE JSON object."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ---- controller sides (child process) ------------------------------------------------------------
def _child_backend(robot: str, domain: int, seconds: float) -> dict:
    from deploy.backends.unitree import UnitreeBackend
    from deploy.spec import RobotSpec

    spec = RobotSpec.load(robot)
    be = UnitreeBackend(spec, "lo", domain, release_motion_mode=False, lowcmd_check_s=0.3,
                        stale_timeout_s=0.5)
    be.write_command(spec.default_pos, spec.stand_kp, spec.stand_kd)
    print("child ready", flush=True)
    time.sleep(seconds)
    d = be.diagnostics()
    be.close()
    return {k: d[k] for k in ("states_received", "states_dropped", "commands_sent", "damping_sent")}


def _child_reference(robot: str, domain: int, seconds: float) -> dict:
    from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.qos import Policy, Qos
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from unitree_sdk2py.utils.crc import CRC

    from deploy.backends import unitree_msgs as M
    from deploy.backends.unitree import init_channel_factory
    from deploy.spec import RobotSpec

    spec = RobotSpec.load(robot)
    init_channel_factory(domain, "lo")
    state_t, cmd_t = M.sdk_types(spec.interface)
    if spec.interface == "unitree_hg":
        from unitree_sdk2py.idl.default import unitree_hg_msg_dds__LowCmd_ as make_cmd
    else:
        from unitree_sdk2py.idl.default import unitree_go_msg_dds__LowCmd_ as make_cmd
    dp = DomainParticipant(domain)
    reader = DataReader(dp, Topic(dp, "rt/lowstate", state_t),
                        Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1)))
    writer = DataWriter(dp, Topic(dp, "rt/lowcmd", cmd_t))
    ws = WaitSet(dp)
    ws.attach(ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any))
    crc = CRC()
    cmd = make_cmd()
    motors = [int(m) for m in spec.policy_to_hardware]
    kp, kd = spec.stand_kp, spec.stand_kd
    handled = 0
    print("child ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ws.wait(20_000_000)
        for s in reader.take(8):
            for i, m in enumerate(motors):
                c = cmd.motor_cmd[m]
                c.mode, c.q, c.kp, c.kd = 1, s.motor_state[m].q, float(kp[i]), float(kd[i])
            if hasattr(cmd, "mode_machine"):
                cmd.mode_machine = s.mode_machine
            cmd.crc = crc.Crc(cmd)
            writer.write(cmd)
            handled += 1
    return {"states_received": handled, "commands_sent": handled}


def child_main(args) -> int:
    fn = {"backend": _child_backend, "reference": _child_reference}[args.child]
    result = fn(args.robot, args.domain, args.child_seconds)
    print("child result " + json.dumps(result), flush=True)
    return 0


# ---- the robot side (this process) -------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(side: str, robot: str, domain: int, rate: float, seconds: float, warmup: float) -> dict:
    from deploy.backends import unitree_msgs as M
    from deploy.backends.unitree import DdsLink
    from deploy.bridges.process import ChildProcess
    from deploy.spec import RobotSpec

    spec = RobotSpec.load(robot)
    fam = M.family(spec.interface)
    state_t, cmd_t = M.sdk_types(spec.interface)
    link = DdsLink(domain)
    state_out = link.writer("rt/lowstate", state_t)
    cmd_in = link.reader("rt/lowcmd", cmd_t, depth=8)
    child = ChildProcess([sys.executable, __file__, "--child", side, "--robot", robot,
                          "--domain", str(domain), "--child-seconds", str(seconds + warmup + 2.0)],
                         "child ready", timeout_s=60)
    try:
        n = fam.motor_slots
        q = np.zeros(n)
        q[spec.policy_to_hardware] = spec.default_pos
        z = np.zeros(n)
        period = 1.0 / rate
        time.sleep(0.5)                                   # discovery
        lat, answered, sent, late_sends = [], 0, 0, 0
        cpu0 = t_cpu0 = None
        t0 = time.monotonic()
        k = 0
        measuring = False
        while True:
            deadline = t0 + k * period
            now = time.monotonic()
            if now < deadline:
                time.sleep(deadline - now)
            elif now - deadline > period:
                late_sends += measuring
            if not measuring and time.monotonic() - t0 >= warmup:
                measuring, t_meas = True, time.monotonic()
                cpu0, t_cpu0 = _cpu_seconds(child.proc.pid), time.monotonic()
                k0 = k
            if measuring and time.monotonic() - t_meas >= seconds:
                break
            cmd_in.take(8)                                # a late answer to the previous state
            payload = M.encode_state(fam, q, z, z, [1.0, 0, 0, 0], [0, 0, 0], [0, 0, 9.81], k, 1)
            t_send = time.monotonic()
            state_out.write(payload)
            k += 1
            next_deadline = t0 + k * period
            got = None
            while got is None:
                left = next_deadline - time.monotonic()
                if left <= 0:
                    break
                cmd_in.wait(left)
                if cmd_in.take(8):
                    got = time.monotonic()
            if measuring:
                sent += 1
                if got is not None:
                    answered += 1
                    lat.append(got - t_send)
        wall = time.monotonic() - t_cpu0
        cpu = _cpu_seconds(child.proc.pid) - cpu0
        child.proc.wait(seconds + warmup + 30)
        result = {}
        for line in child.lines:
            if line.startswith("child result "):
                result = json.loads(line[len("child result "):])
        lat_ms = np.array(lat) * 1e3
        pct = (lambda p: round(float(np.percentile(lat_ms, p)), 3)) if len(lat_ms) else (lambda p: None)
        return {
            "latency_ms": {"p50": pct(50), "p99": pct(99), "max": round(float(lat_ms.max()), 3)
                           if len(lat_ms) else None, "n": int(len(lat_ms))},
            "answered_within_period": round(answered / max(sent, 1), 4),
            "command_rate_hz": round(answered / wall, 1),
            "stimulus_rate_hz": round((k - k0) / wall, 1),
            "stimulus_late_sends": late_sends,
            "cpu_core_fraction": round(cpu / wall, 4),
            "cpu_us_per_state": round(cpu / max(sent, 1) * 1e6, 1),
            "child": result,
        }
    finally:
        child.kill()
        link.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robot", default="g1", choices=("g1", "go2"))
    ap.add_argument("--rate", type=float, default=500.0, help="lowstate rate (the robots: 500 Hz)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per side")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--domain", type=int, default=200 + os.getpid() % 30)
    ap.add_argument("--child", choices=("backend", "reference"), help=argparse.SUPPRESS)
    ap.add_argument("--child-seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args)

    from deploy.backends.unitree import init_channel_factory

    init_channel_factory(args.domain, "lo")
    sides = {}
    for side in ("backend", "reference"):
        sides[side] = measure(side, args.robot, args.domain, args.rate, args.seconds, args.warmup)
    b, r = sides["backend"], sides["reference"]
    ratio = lambda x, y: round(x / y, 3) if x is not None and y else None
    out = {
        "bench": "unitree_io", "robot": args.robot, "state_rate_hz": args.rate,
        "seconds_per_side": args.seconds, "transport": "cyclonedds 11.0.1 on lo, two processes",
        "backend": b, "reference_typed_cyclonedds": r,
        "ratio_backend_over_reference": {
            "latency_p50": ratio(b["latency_ms"]["p50"], r["latency_ms"]["p50"]),
            "latency_p99": ratio(b["latency_ms"]["p99"], r["latency_ms"]["p99"]),
            "cpu_per_state": ratio(b["cpu_us_per_state"], r["cpu_us_per_state"]),
            "command_rate": ratio(b["command_rate_hz"], r["command_rate_hz"])},
        "machine": {"cpus": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
