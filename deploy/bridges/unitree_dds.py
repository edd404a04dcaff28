"""A MuJoCo robot behind Unitree's low-level DDS topics, like Unitree's own simulator bridge:

    python -m deploy.bridges.unitree_dds --robot g1 --network-interface lo --domain 1 [--rate 500]
           [--builtin-mode normal] [--start standing|lying] [--status-file F] [--duration S]

Every physics step (dt = 1 / rate) it publishes one rt/lowstate (hg for G1, go for Go2, CRC
filled in, motors at the spec's hardware index, tick counting steps) and applies the newest valid
rt/lowcmd: per motor q, dq, tau, kp and kd, as the motor drivers do; a slot with mode 0 is limp.
A lowcmd with a wrong CRC or size is dropped and counted. Until the first command the motors are
limp; after that the last command holds (the drivers keep it).

`--builtin-mode NAME` plays the robot's motion service: the mode is active at start, holds the
default pose with the spec's stand gains and makes the robot ignore rt/lowcmd, until a client
releases it through the SDK's motion_switcher RPC (CheckMode / ReleaseMode), as on the robot.
`--start lying` lets the robot fall limp onto the floor before the first state goes out.
`--gantry` hangs the robot from the stand gantry (deploy.sim_world.Gantry) until SIGUSR1 removes it.
A Go2 also answers the sport service's StandDown (the built-in mode then lowers the robot), and
the status lists the motion-service calls in order (`service_calls`).

`--inject-file F` plays what a test cannot do to a simulated robot through its physics: every
50 ms the bridge reads F (JSON, every key optional) and puts into each following lowstate
    {"remote": ["L2", "B"],                 buttons held on the wireless remote
     "motor_error": {"joint_name": code},   the driver's error word (hg robots)
     "temperature": {"joint_name": deg_C},  motor temperatures (others 40 C)
     "battery_soc": percent,                the battery (go robots)
     "mode_machine": n,                     the G1 variant (default: the spec's, rev 1.0)
     "foreign_lowcmd": "idle"|"publishing"} another participant of this process with a rt/lowcmd
                                            writer that sends nothing, or damping at 50 Hz"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

import numpy as np

from deploy.backends import unitree_msgs as M
from deploy.cli_types import dds_domain, number
from deploy.backends.unitree import LOWCMD_TOPIC, LOWSTATE_TOPIC, DdsLink, init_channel_factory
from deploy.bridges.sim_bridge import SimBridge, add_run_arguments, serve
from deploy.bridges.sim_robot import robot_status
from deploy.robot_health import g1_mode_machines
from deploy.spec import RobotSpec

MOTION_SWITCHER = "motion_switcher"
API_CHECK_MODE, API_SELECT_MODE, API_RELEASE_MODE = 1001, 1002, 1003
SPORT = "sport"
API_STAND_DOWN = 1005           # unitree_sdk2py.go2.sport.sport_api.SPORT_API_ID_STANDDOWN
AMBIENT_C = 40.0                # motor temperature reported when none is injected


def _motion_switcher_service(bridge: "UnitreeDdsBridge"):
    from unitree_sdk2py.rpc.server import Server

    class MotionSwitcherService(Server):
        """The robot's motion_switcher RPC, enough of it to be released."""

        def __init__(self):
            super().__init__(MOTION_SWITCHER)

        def Init(self):
            self._RegistHandler(API_CHECK_MODE, self.check, False)
            self._RegistHandler(API_SELECT_MODE, self.select, False)
            self._RegistHandler(API_RELEASE_MODE, self.release, False)
            self._SetApiVersion("1.0.0.1")

        def check(self, parameter: str):
            bridge.service_calls.append("CheckMode")
            return 0, json.dumps({"form": "0", "name": bridge.builtin_mode})

        def select(self, parameter: str):
            bridge.builtin_mode = json.loads(parameter or "{}").get("name", "")
            bridge.stood_down = False
            return 0, ""

        def release(self, parameter: str):
            bridge.service_calls.append("ReleaseMode")
            bridge.builtin_mode = ""
            return 0, ""

    svc = MotionSwitcherService()
    svc.Init()
    svc.Start(False)
    return svc


def _sport_service(bridge: "UnitreeDdsBridge"):
    from unitree_sdk2py.rpc.server import Server

    class SportService(Server):
        """The Go2's sport service: StandDown only."""

        def __init__(self):
            super().__init__(SPORT)

        def Init(self):
            self._RegistHandler(API_STAND_DOWN, self.stand_down, False)
            self._SetApiVersion("1.0.0.1")

        def stand_down(self, parameter: str):
            bridge.service_calls.append("StandDown")
            bridge.stood_down = True
            return 0, ""

    svc = SportService()
    svc.Init()
    svc.Start(False)
    return svc


class Injection:
    """The --inject-file's content, validated, as per-slot arrays for encode_state."""

    def __init__(self, spec: RobotSpec, fam, path):
        self.spec, self.fam, self.path = spec, fam, path
        self.mtime = None
        self.remote = None
        self.motor_error = self.temperature = None
        self.battery_soc = None
        self.mode_machine = None
        self.foreign = ""

    def poll(self) -> bool:
        """Re-read the file if it changed; True when it did."""
        from pathlib import Path

        from deploy.remote import remote_bytes
        try:
            mtime = Path(self.path).stat().st_mtime_ns
        except OSError:
            return False
        if mtime == self.mtime:
            return False
        self.mtime = mtime
        d = json.loads(Path(self.path).read_text() or "{}")
        slots, idx = self.fam.motor_slots, self.spec.joint_index
        self.remote = remote_bytes(d.get("remote", []))
        self.motor_error = np.zeros(slots, dtype=np.int64)
        for name, code in d.get("motor_error", {}).items():
            self.motor_error[self.spec.policy_to_hardware[idx(name)]] = int(code)
        self.temperature = np.full(slots, AMBIENT_C)
        for name, t in d.get("temperature", {}).items():
            self.temperature[self.spec.policy_to_hardware[idx(name)]] = float(t)
        self.battery_soc = d.get("battery_soc")
        self.mode_machine = d.get("mode_machine")
        self.foreign = d.get("foreign_lowcmd", "")
        if self.foreign not in ("", "idle", "publishing"):
            raise ValueError(f"{self.path}: foreign_lowcmd must be idle or publishing, got {self.foreign!r}")
        return True


class UnitreeDdsBridge(SimBridge):
    drops_key = "lowcmd_dropped"

    def __init__(self, spec: RobotSpec, network_interface: str, domain: int, rate_hz: float = 500.0,
                 builtin_mode: str = "", start: str = "standing", status_file=None,
                 gantry: bool = False, inject_file=None):
        self.fam = M.family(spec.interface)
        self.rate_hz = rate_hz
        self.builtin_mode = builtin_mode
        self.stood_down = False
        self.service_calls: list[str] = []
        self.mode_machine = g1_mode_machines(spec)[-1] if self.fam.has_mode_machine else 0
        self.inject = Injection(spec, self.fam, inject_file) if inject_file else None
        self._foreign_link = self._foreign_out = None
        super().__init__(spec, rate_hz, start, status_file)
        self.robot.set_gantry(gantry)
        self._drop_gantry = threading.Event()
        self._p2h = spec.policy_to_hardware
        self._command = None            # latest applied M.LowCmdReading
        self.last_kp_max = 0.0          # the highest kp of the last applied command
        self._tick = 0
        init_channel_factory(domain, network_interface)
        LowState_, LowCmd_ = M.sdk_types(spec.interface)
        self.link = DdsLink(domain)
        self.state_out = self.link.writer(LOWSTATE_TOPIC, LowState_)
        self.cmd_in = self.link.reader(LOWCMD_TOPIC, LowCmd_, depth=1)
        self.service = _motion_switcher_service(self)
        self.sport = _sport_service(self) if self.fam.interface == "unitree_go" else None
        self._lowcmd_type = LowCmd_
        self._domain = domain
        if self.inject is not None and self.inject.poll():      # the first lowstate has it too
            self._set_foreign(self.inject.foreign)

    def drop_gantry(self) -> None:
        self._drop_gantry.set()

    def _apply_commands(self) -> None:
        for data in self.cmd_in.take(8):
            try:
                cmd = M.decode_cmd(self.fam, data)
            except M.MalformedMessage as exc:
                self.drops[exc.reason] += 1
                continue
            self.counts["lowcmd_received"] += 1
            if self.builtin_mode:
                self.counts["lowcmd_ignored_builtin_mode"] += 1
                continue
            self._command = cmd
        spec, p2h = self.spec, self._p2h
        if self.builtin_mode:    # StandDown: the built-in mode folds the legs (the lying pose)
            pose = self._folded if self.stood_down else spec.default_pos
            self.robot.set_command(pose, spec.stand_kp, spec.stand_kd)
        elif self._command is None:
            self.robot.limp()
        else:
            c = self._command
            on = c.mode[p2h] != 0
            self.robot.set_command(np.where(on, c.q[p2h], 0.0), np.where(on, c.kp[p2h], 0.0),
                                   np.where(on, c.kd[p2h], 0.0), np.where(on, c.dq[p2h], 0.0),
                                   np.where(on, c.tau[p2h], 0.0))
            self.counts["lowcmd_applied_steps"] += 1
            self.last_kp_max = float(np.max(np.where(on, c.kp[p2h], 0.0)))

    @property
    def _folded(self) -> np.ndarray:
        return np.clip(self.spec.default_pos * 1.6, self.spec.soft_lower, self.spec.soft_upper)

    def _injected(self) -> dict:
        """The injected fields for encode_state, and the foreign writer's part (50 ms polls)."""
        inj = self.inject
        if inj is None:
            return {"temperature": np.full(self.fam.motor_slots, AMBIENT_C)}
        if self._tick % max(1, int(self.rate_hz * 0.05)) == 0 and inj.poll():
            self._set_foreign(inj.foreign)
        if self._foreign_out is not None and inj.foreign == "publishing" and self._tick % 10 == 0:
            self._foreign_out.write(self._foreign_cmd)          # damping (kd 1) on every slot
            self.counts["foreign_lowcmd_sent"] += 1
        out = {"remote": inj.remote, "temperature": inj.temperature,
               "motor_error": inj.motor_error, "battery_soc": inj.battery_soc}
        if inj.mode_machine is not None:
            out["mode_machine"] = int(inj.mode_machine)
        return out

    def _set_foreign(self, kind: str) -> None:
        if kind and self._foreign_link is None:
            z = np.zeros(self.fam.motor_slots)
            self._foreign_cmd = M.LowCmdEncoder(self.fam).encode(z, z, z, z, z, z + 1.0)
            self._foreign_link = DdsLink(self._domain)
            self._foreign_out = self._foreign_link.writer(LOWCMD_TOPIC, self._lowcmd_type)
        elif not kind and self._foreign_link is not None:
            self._foreign_link.close()
            self._foreign_link = self._foreign_out = None

    def _step(self) -> dict:
        if self._drop_gantry.is_set() and self.robot.hung:
            self.robot.set_gantry(False)
        self._apply_commands()
        self.robot.step()
        self._tick += 1
        s = self.robot.sensors()
        slots = self.fam.motor_slots
        q, dq, tau = np.zeros(slots), np.zeros(slots), np.zeros(slots)
        q[self._p2h], dq[self._p2h], tau[self._p2h] = s.q, s.dq, s.tau
        extra = {"mode_machine": self.mode_machine, **self._injected()}
        self.state_out.write(M.encode_state(self.fam, q, dq, tau, s.quat_wxyz, s.gyro, s.accel,
                                            self._tick, **extra))
        self.counts["lowstate_sent"] += 1
        return robot_status(self.robot, s)

    def _status(self) -> dict:
        return {"tick": self._tick, "builtin_mode": self.builtin_mode,
                "gantry": self.robot.hung, "service_calls": self.service_calls[-20:],
                "stood_down": self.stood_down, "last_kp_max": self.last_kp_max}

    def _close(self) -> None:
        self._set_foreign("")
        self.link.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.bridges.unitree_dds", description=__doc__.splitlines()[0])
    ap.add_argument("--robot", required=True, help="g1 or go2 (a spec with a Unitree interface)")
    ap.add_argument("--network-interface", default="lo")
    ap.add_argument("--domain", type=dds_domain, default=1, help="DDS domain (default 1, not the robots' 0)")
    ap.add_argument("--rate", type=number(1.0, 5000.0), default=500.0, help="lowstate rate = physics rate, Hz")
    ap.add_argument("--builtin-mode", default="", help="a built-in motion mode active at start")
    ap.add_argument("--gantry", action="store_true",
                    help="hang the robot from the stand gantry until SIGUSR1")
    ap.add_argument("--inject-file", help="JSON of remote buttons, motor errors, temperatures, "
                                          "battery, mode_machine, a foreign lowcmd writer")
    add_run_arguments(ap)
    args = ap.parse_args(argv)
    spec = RobotSpec.load(args.robot)
    bridge = UnitreeDdsBridge(spec, args.network_interface, args.domain, args.rate,
                              args.builtin_mode, args.start, args.status_file, args.gantry,
                              args.inject_file)
    signal.signal(signal.SIGUSR1, lambda *_: bridge.drop_gantry())
    return serve(bridge, f"{spec.name} ({spec.interface}) on domain {args.domain} via "
                         f"{args.network_interface} at {args.rate:g} Hz", args.duration)


if __name__ == "__main__":
    sys.exit(main())
