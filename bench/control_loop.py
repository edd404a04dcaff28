"""Control-loop timing of the deployment Controller, paced to the wall clock at the policy rate
(50 Hz on the Go2) against a MuJoCo robot stepping in its own physics thread, with the onboard
replay writer on: per-stage tick latency (state, obs, inference, safety, command, replay enqueue)
as p50 / p99 / p99.9, loop jitter (wake-up lateness against the absolute deadline) and overruns,
against bare onnxruntime inference of the same bundle measured in the same run: one bare
`session.run` per period in the loop thread at mid-period (after a sleep, as cold in caches and
CPU as the tick's own inference; the reference for the ratio), and a hot back-to-back block
before the loop. Only ticks under the policy are counted. Prints one
JSON object.

Targets: tick p99 <= 2 x inference p99; jitter p99 <= 1 ms.

    python3 bench/control_loop.py [--bundle PATH] [--seconds 30] [--backend mujoco|static]

The bundle: --bundle, else $SAC2REAL_GATE_BUNDLE, else the registry's current Go2 bundle, else a
few-second SAC run with the CPU profile's network (256, 256, 128) exported on the spot (torch).
`--backend static` replaces the robot with a fresh constant reading every tick (no physics thread)."""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from deploy.backend import StateSample  # noqa: E402
from deploy.bundle import PolicyBundle  # noqa: E402
from deploy.controller import STAGES, Controller  # noqa: E402
from deploy.deploy_config import DeployConfig  # noqa: E402
from deploy.observations import RobotState  # noqa: E402
from deploy.registry import PolicyRegistry  # noqa: E402
from deploy.spec import RobotSpec  # noqa: E402
from deploy.state_machine import Mode  # noqa: E402


def find_bundle(arg: str | None, workdir: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), "--bundle"
    env = os.environ.get("SAC2REAL_GATE_BUNDLE")
    if env:
        return Path(env), "$SAC2REAL_GATE_BUNDLE"
    current = PolicyRegistry().current("go2")
    if current is not None:
        return current, "registry current go2"
    import torch
    torch.set_num_threads(1)
    from training.export import export_checkpoint
    from training.sac import SACConfig
    from training.smoke import train_smoke_run
    ckpt = train_smoke_run(workdir / "run", "go2", max_iterations=2,
                           sac=SACConfig(actor_hidden=(256, 256, 128), critic_hidden=(64, 64)))
    return export_checkpoint(ckpt, workdir / "policies", parity_samples=200,
                             log=lambda *a: None), "smoke run, CPU-profile network (untrained)"


class StaticBackend:
    def __init__(self, spec: RobotSpec):
        j = spec.num_joints
        self.state = RobotState(np.array([[1.0, 0, 0, 0]]), np.zeros((1, 3)),
                                spec.default_pos[None].copy(), np.zeros((1, j)), np.zeros((1, 3)))
        self.zero_j, self.zero3 = np.zeros(j), np.zeros(3)

    def read_state(self):
        return StateSample(self.state, self.zero_j, self.zero3, time.monotonic())

    def write_command(self, targets, kp, kd):
        pass

    def close(self):
        pass


def summary(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    p = np.percentile(v, [50, 99, 99.9])
    return {"p50": round(float(p[0]), 1), "p99": round(float(p[1]), 1),
            "p99.9": round(float(p[2]), 1), "max": round(float(v.max()), 1), "n": int(len(v))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--backend", choices=("mujoco", "static"), default="mujoco")
    ap.add_argument("--switch-interval", type=float, default=0.001,
                    help="sys.setswitchinterval for the run (Python's default is 0.005)")
    ap.add_argument("--spin-us", type=float, default=0.0, help="busy-wait before each deadline")
    ap.add_argument("--no-replay", action="store_true")
    ap.add_argument("--rt-priority", type=int, default=None,
                    help="SCHED_FIFO priority of the loop (physics thread: one below)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-control-loop-"))
    spec = RobotSpec.load("go2")
    path, source = find_bundle(args.bundle, work)
    bundle = PolicyBundle.load(path, spec, providers="cpu")
    obs_row = np.asarray(bundle.meta["golden"]["obs"][1], np.float32)[None]
    session, out = bundle.session, ["actions"]

    # bare inference, back to back, before the loop
    for _ in range(200):
        session.run(out, {"obs": obs_row})
    block = []
    for _ in range(3000):
        t = time.perf_counter()
        session.run(out, {"obs": obs_row})
        block.append((time.perf_counter() - t) * 1e6)

    if args.backend == "mujoco":
        from deploy.backends.mujoco_backend import MujocoBackend, SimConditions
        backend = MujocoBackend(spec, conditions=SimConditions(), realtime=True).start(
            None if args.rt_priority is None else max(1, args.rt_priority - 1))
    else:
        backend = StaticBackend(spec)
    writer = None
    if not args.no_replay:
        from deploy.observations import ObservationPipeline
        from deploy.replay import ReplayWriter, TransitionLayout
        writer = ReplayWriter(work / "replay", TransitionLayout.from_spec(
            spec, ObservationPipeline(spec).layout)).start()
    # the simulated robot's physics thread runs when this host schedules it: a late state is the
    # host's, so the age limit alone decides (as in `sac2real run`)
    config = DeployConfig.load(spec)
    ctrl = Controller(spec, backend, bundle, replay=writer,
                      config=config.repeats_within_age(spec) if args.backend == "mujoco" else config)
    ctrl.set_command(0.5, 0.0, 0.0)

    stages = {k: [] for k in STAGES}
    bare, jitter, period = [], [], []
    faults = []
    timer = ctrl.timer

    half = spec.policy_dt / 2

    def after_tick(c: Controller) -> None:
        # the reference: one bare session.run at mid-period, after sleeping like the loop does,
        # so that it starts as cold (caches, CPU) as the tick's own inference
        r = timer.stages["tick"]
        start = time.perf_counter() - r.buf[(r.count - 1) % r.size]
        delay = start + half - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        session.run(out, {"obs": obs_row})
        dt = (time.perf_counter() - t) * 1e6
        if c.mode is Mode.POLICY:
            bare.append(dt)
            for name in STAGES:
                r = timer.stages[name]
                stages[name].append(r.buf[(r.count - 1) % r.size] * 1e6)
            jitter.append(timer.jitter.buf[(timer.jitter.count - 1) % timer.jitter.size] * 1e3)
            if timer.period.count:
                period.append(timer.period.buf[(timer.period.count - 1) % timer.period.size] * 1e3)
        elif c.mode is Mode.DAMPING:         # the operator resets and stands it up again
            ev = c.safety.last_fatal()
            if ev is not None and (not faults or faults[-1] != ev.to_dict()):
                faults.append(ev.to_dict())
            c.request_reset()
            c.request_stand()
        elif c.mode is Mode.STAND:
            c.request_policy()

    ctrl.on_tick = after_tick
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(args.switch_interval)
    overruns0 = 0
    try:
        ctrl.start(spin_s=args.spin_us * 1e-6, rt_priority=args.rt_priority)
        ctrl.request_stand()
        time.sleep(ctrl.config.controller.stand_duration_s + 1.0)
        overruns0, missed0 = timer.overruns, timer.missed
        time.sleep(args.seconds)
        overruns, missed = timer.overruns - overruns0, timer.missed - missed0
        ctrl.stop()
    finally:
        sys.setswitchinterval(old_switch)
        backend.close()
    replay = None
    if writer is not None:
        w = writer.close()
        replay = {"enqueued": w.enqueued, "dropped": w.dropped, "written": w.written}

    st = {k: summary(v) for k, v in stages.items() if v}
    inf_ref = summary(bare)
    ratio = st["tick"]["p99"] / inf_ref["p99"]
    jit = {k: round(v / 1e3, 3) if k != "n" else v for k, v in summary(np.array(jitter) * 1e3).items()}
    result = {
        "bench": "control_loop",
        "robot": spec.name, "bundle": bundle.id, "bundle_source": source,
        "network": bundle.meta["training"]["config"].get("sac", {}).get("actor_hidden"),
        "backend": f"{args.backend}" + (" (physics thread paced to the wall clock)"
                                        if args.backend == "mujoco" else ""),
        "rate_hz": round(1 / spec.policy_dt, 3), "seconds": args.seconds,
        "switch_interval_s": args.switch_interval, "spin_us": args.spin_us,
        "scheduling": ctrl.scheduling,
        "replay_writer": not args.no_replay,
        "policy_ticks": len(stages["tick"]),
        "tick_stages_us": st,
        "bare_inference_us": {"mid_period_in_loop_thread": inf_ref,
                              "back_to_back_before_loop": summary(block)},
        "tick_p99_over_inference_p99": round(ratio, 2),
        "jitter_ms": jit, "period_ms": summary(period) if period else None,
        "overruns": overruns, "missed_deadlines": missed,
        "faults_during_run": faults[:5],
        "replay": replay,
        "targets": {"tick_p99_le_2x_inference_p99": bool(ratio <= 2.0),
                    "jitter_p99_le_1ms": bool(jit["p99"] <= 1.0)},
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
