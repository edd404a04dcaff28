"""SimBridge: what every bridge does whatever wire protocol it speaks (deploy/bridges/unitree_dds.py,
anymal_ros2.py), so that a simulated robot is paced, measured and reported the same way behind
each: the SimRobot starts standing or lying, each physics step applies the newest command and
publishes one state at absolute deadlines, and a status file says how it went; its command line
ends in the same options and the same ready line ("bridge ready: ..."), which
deploy/bridges/process.py waits for."""
from __future__ import annotations

import argparse
import collections
import signal
import threading
import time

from deploy.bridges.sim_robot import Pacer, SimRobot, StatusFile
from deploy.cli_types import number
from deploy.spec import RobotSpec


class SimBridge:
    """A subclass steps with `_step()` (apply the newest command, step the robot, publish; return
    robot_status), adds its own status with `_status()`, names its drop counters in the status
    with `drops_key`, and lets go of its middleware in `_close()`."""

    drops_key: str

    def __init__(self, spec: RobotSpec, rate_hz: float, start: str, status_file):
        self.spec = spec
        self.robot = SimRobot(spec, 1.0 / rate_hz)
        if start == "lying":
            self.robot.settle_limp(1.5)
        elif start != "standing":
            raise ValueError(f"start must be standing or lying, got {start!r}")
        self.status = StatusFile(status_file)
        self.counts = collections.Counter()
        self.drops = collections.Counter()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, duration: float | None = None) -> None:
        pacer = Pacer(self.robot.dt)
        t_end = None if duration is None else time.monotonic() + duration
        rate_t, rate_n, rate = time.monotonic(), 0, 0.0
        try:
            while not self._stop.is_set() and (t_end is None or time.monotonic() < t_end):
                status = self._step()
                rate_n += 1
                now = time.monotonic()
                if now - rate_t >= 1.0:
                    rate, rate_t, rate_n = rate_n / (now - rate_t), now, 0
                if self.status.due():
                    self.status.write({**status, "robot": self.spec.name, **self._status(),
                                       "rate_hz": round(rate, 1), "resyncs": pacer.resyncs,
                                       **dict(self.counts), self.drops_key: dict(self.drops)})
                pacer.wait()
        finally:
            self._stop.set()
            self._close()

    def _step(self) -> dict:
        raise NotImplementedError

    def _status(self) -> dict:
        return {}

    def _close(self) -> None:
        raise NotImplementedError


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--start", default="standing", choices=("standing", "lying"))
    ap.add_argument("--status-file", help="write a JSON status here every 0.1 s")
    ap.add_argument("--duration", type=number(0.0, open_low=True), help="stop after this many seconds")


def serve(bridge: SimBridge, where: str, duration: float | None) -> int:
    """Run until SIGTERM, SIGINT or `duration`, after the ready line a parent process waits for."""
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    signal.signal(signal.SIGINT, lambda *_: bridge.stop())
    print(f"bridge ready: {where}", flush=True)
    bridge.run(duration)
    return 0
