"""The operator of a simulated robot: what a person does at the bench, done for a MuJoCo robot so
that a Controller can collect data for hours without one (`sac2real run --episodes S`, the runner
of `sac2real demo`).

An episode: release the e-stop, stand, start the policy, change the velocity command every
`resampling_time` of the spec (drawn by the rule training draws them with, CommandSpec.draw) or
hold a fixed one, and end after `episode_s` (an operator stop: the last transition is truncated)
or when the Controller leaves POLICY by itself (a fall or another safety fault). Then damping, and
the simulated robot is put back on its feet. The operator only uses the Controller's operator API
(request_*, set_command) and the backend's reset_robot(): on hardware a person and the remote do
the same, and the Controller cannot tell the difference."""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deploy.controller import FALL, end_reason
from deploy.event_log import append_event
from deploy.state_machine import Mode


@dataclass
class EpisodeRecord:
    episode: int
    start: float                      # wall clock (time.time()) when the policy took over
    policy_s: float = 0.0             # seconds under the policy
    end: str = "time"                 # time | fall | fault | stand_failed | stopped (the run's end)
    fault: str | None = None          # the safety event that ended it, if any
    policies: list[str] = field(default_factory=list)   # bundle ids that drove it, in order
    commands: list[list[float]] = field(default_factory=list)


class SimOperator:
    """Runs episodes on a started (real-time) Controller and MujocoBackend until `duration_s` of
    wall clock or `stop` is set; one JSON line per episode in `log_path`."""

    SETTLE_S = 1.5     # s lying under damping after a reset, before standing up

    def __init__(self, ctrl, backend, episode_s: float, seed: int = 0,
                 command: tuple[float, float, float] | None = None,
                 log_path: str | Path | None = None, log: Callable[[str], None] = print):
        if not episode_s > 0:
            raise ValueError(f"episode length {episode_s!r} s: must be > 0")
        self.ctrl, self.backend, self.episode_s = ctrl, backend, float(episode_s)
        self.rng = np.random.default_rng(seed)
        self.fixed = command
        self.log_path = Path(log_path) if log_path else None
        self.log = log
        self.records: list[EpisodeRecord] = []

    def run(self, duration_s: float, stop: threading.Event | None = None) -> list[EpisodeRecord]:
        stop = stop or threading.Event()
        t_end = time.monotonic() + duration_s
        while time.monotonic() < t_end and not stop.is_set():
            rec = self._episode(len(self.records), t_end, stop)
            self.records.append(rec)
            self._write(rec)
            self.log(f"episode {rec.episode}: {rec.end}{' (' + rec.fault + ')' if rec.fault else ''}"
                     f" after {rec.policy_s:.1f} s under {', '.join(rec.policies) or 'no policy'}")
            self._recover()
        return self.records

    def _episode(self, k: int, deadline: float, stop: threading.Event) -> EpisodeRecord:
        ctrl = self.ctrl
        rec = EpisodeRecord(episode=k, start=time.time())
        ctrl.request_reset()
        ctrl.request_stand()
        if not wait_until(lambda: ctrl.mode is Mode.STAND, 2.0, stop):
            rec.end = "stand_failed"
            return rec
        wait_until(lambda: False, ctrl._stand_T, stop)
        self._next_command(rec)
        ctrl.request_policy()
        if not wait_until(lambda: ctrl.mode is Mode.POLICY, 3.0, stop):
            rec.end = "stand_failed"
            return rec
        t0 = time.monotonic()
        rec.start = time.time()
        next_command = t0 + ctrl.spec.commands.resampling_time
        while True:
            now = time.monotonic()
            if ctrl.policy_id and (not rec.policies or rec.policies[-1] != ctrl.policy_id):
                rec.policies.append(ctrl.policy_id)
            if ctrl.mode is not Mode.POLICY:
                fatal = ctrl.safety.last_fatal()
                rec.fault = fatal.reason if fatal else None
                rec.end = "fall" if end_reason(rec.fault) == FALL else "fault"   # the replay's rule
                break
            if now - t0 >= self.episode_s or now >= deadline or stop.is_set():
                rec.end = "time" if now - t0 >= self.episode_s else "stopped"
                ctrl.request_damping()
                break
            if now >= next_command:
                self._next_command(rec)
                next_command += ctrl.spec.commands.resampling_time
            time.sleep(0.01)
        rec.policy_s = time.monotonic() - t0
        return rec

    def _next_command(self, rec: EpisodeRecord) -> None:
        cmd = self.fixed if self.fixed is not None else self.ctrl.spec.commands.draw(self.rng, 1)[0]
        rec.commands.append([round(float(c), 4) for c in self.ctrl.set_command(*cmd)])

    def _recover(self) -> None:
        """Damping, the robot put back where it started, and left to settle on the ground under
        damping before the next stand-up (dropped from the spawn height straight into STAND, a
        robot carrying an off-centre payload lands tilted often enough to trip the tilt check)."""
        self.ctrl.request_damping()
        time.sleep(3 * self.ctrl.period)
        if not self.backend.reset_robot():
            self.log("operator: the simulated robot was not reset (physics thread busy)")
        time.sleep(self.SETTLE_S)

    def _write(self, rec: EpisodeRecord) -> None:
        if self.log_path is not None:
            append_event(self.log_path, {"event": "episode", **asdict(rec)})


def wait_until(cond: Callable[[], bool], timeout: float, stop: threading.Event | None = None) -> bool:
    """Poll `cond` every 10 ms for up to `timeout` s (or until `stop` is set); its last value:
    how an operator, person or program, waits for the Controller to change mode."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not (stop is not None and stop.is_set()):
        if cond():
            return True
        time.sleep(0.01)
    return cond()
