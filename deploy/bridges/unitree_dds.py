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
`--gantry` hangs the base from a support spring (a humanoid's gantry) until SIGUSR1 removes it."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

import numpy as np

from deploy.backends import unitree_msgs as M
from deploy.backends.unitree import LOWCMD_TOPIC, LOWSTATE_TOPIC, DdsLink, init_channel_factory
from deploy.bridges.sim_bridge import SimBridge, add_run_arguments, serve
from deploy.bridges.sim_robot import robot_status
from deploy.spec import RobotSpec

MOTION_SWITCHER = "motion_switcher"
API_CHECK_MODE, API_SELECT_MODE, API_RELEASE_MODE = 1001, 1002, 1003


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
            return 0, json.dumps({"form": "0", "name": bridge.builtin_mode})

        def select(self, parameter: str):
            bridge.builtin_mode = json.loads(parameter or "{}").get("name", "")
            return 0, ""

        def release(self, parameter: str):
            bridge.builtin_mode = ""
            return 0, ""

    svc = MotionSwitcherService()
    svc.Init()
    svc.Start(False)
    return svc


class UnitreeDdsBridge(SimBridge):
    drops_key = "lowcmd_dropped"

    def __init__(self, spec: RobotSpec, network_interface: str, domain: int, rate_hz: float = 500.0,
                 builtin_mode: str = "", start: str = "standing", status_file=None,
                 gantry: bool = False):
        self.fam = M.family(spec.interface)
        self.rate_hz = rate_hz
        self.builtin_mode = builtin_mode
        super().__init__(spec, rate_hz, start, status_file)
        self.robot.set_gantry(gantry)
        self._drop_gantry = threading.Event()
        self._p2h = spec.policy_to_hardware
        self._command = None            # latest applied M.LowCmdReading
        self._tick = 0
        init_channel_factory(domain, network_interface)
        LowState_, LowCmd_ = M.sdk_types(spec.interface)
        self.link = DdsLink(domain)
        self.state_out = self.link.writer(LOWSTATE_TOPIC, LowState_)
        self.cmd_in = self.link.reader(LOWCMD_TOPIC, LowCmd_, depth=1)
        self.service = _motion_switcher_service(self)

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
        if self.builtin_mode:
            self.robot.set_command(spec.default_pos, spec.stand_kp, spec.stand_kd)
        elif self._command is None:
            self.robot.limp()
        else:
            c = self._command
            on = c.mode[p2h] != 0
            self.robot.set_command(np.where(on, c.q[p2h], 0.0), np.where(on, c.kp[p2h], 0.0),
                                   np.where(on, c.kd[p2h], 0.0), np.where(on, c.dq[p2h], 0.0),
                                   np.where(on, c.tau[p2h], 0.0))
            self.counts["lowcmd_applied_steps"] += 1

    def _step(self) -> dict:
        if self._drop_gantry.is_set() and self.robot.gantry is not None:
            self.robot.set_gantry(False)
        self._apply_commands()
        self.robot.step()
        self._tick += 1
        s = self.robot.sensors()
        slots = self.fam.motor_slots
        q, dq, tau = np.zeros(slots), np.zeros(slots), np.zeros(slots)
        q[self._p2h], dq[self._p2h], tau[self._p2h] = s.q, s.dq, s.tau
        self.state_out.write(M.encode_state(self.fam, q, dq, tau, s.quat_wxyz, s.gyro, s.accel,
                                            self._tick,
                                            mode_machine=1 if self.fam.has_mode_machine else 0))
        self.counts["lowstate_sent"] += 1
        return robot_status(self.robot, s)

    def _status(self) -> dict:
        return {"tick": self._tick, "builtin_mode": self.builtin_mode,
                "gantry": self.robot.gantry is not None}

    def _close(self) -> None:
        self.link.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.bridges.unitree_dds", description=__doc__.splitlines()[0])
    ap.add_argument("--robot", required=True, help="g1 or go2 (a spec with a Unitree interface)")
    ap.add_argument("--network-interface", default="lo")
    ap.add_argument("--domain", type=int, default=1, help="DDS domain (default 1, not the robots' 0)")
    ap.add_argument("--rate", type=float, default=500.0, help="lowstate rate = physics rate, Hz")
    ap.add_argument("--builtin-mode", default="", help="a built-in motion mode active at start")
    ap.add_argument("--gantry", action="store_true", help="hang the base from a spring until SIGUSR1")
    add_run_arguments(ap)
    args = ap.parse_args(argv)
    spec = RobotSpec.load(args.robot)
    bridge = UnitreeDdsBridge(spec, args.network_interface, args.domain, args.rate,
                              args.builtin_mode, args.start, args.status_file, args.gantry)
    signal.signal(signal.SIGUSR1, lambda *_: bridge.drop_gantry())
    return serve(bridge, f"{spec.name} ({spec.interface}) on domain {args.domain} via "
                         f"{args.network_interface} at {args.rate:g} Hz", args.duration)


if __name__ == "__main__":
    sys.exit(main())
