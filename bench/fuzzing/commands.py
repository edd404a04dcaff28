"""Fuzzing of the velocity command (Controller.set_command: what the ROS 2 node's /cmd_vel and
`sac2real run --command` feed): command sequences into a Controller that drives the registry's
current Go2 bundle (models/policies/go2) on the lockstep MuJoCo backend.

One Controller stands the robot up and enters POLICY once; each trial then runs one pattern for
TRIAL_TICKS ticks (a new robot only after a trial that ended POLICY):

    nonfinite   NaN or inf on one axis, among in-range commands
    huge        values far outside the ranges (up to 1e308), either sign
    junk        values that are not numbers (None, strings, booleans, lists)
    corners     a random corner of the command ranges every tick
    bangbang    the ends of every range switched each millisecond from another thread (wall
                clock) while the lockstep loop ticks as fast as it can
    random      uniform in-range commands every tick

Outcomes: refused = every bad value raised CommandRefused naming its axis (command unchanged) or
was clamped with a note naming it, and the robot stayed safe; handled = an in-range pattern
applied within the ranges and the acceleration limits, no fall, no fault; silently_accepted = a
non-finite or out-of-range value reached the controller's command or the applied command, the
applied command changed faster than its limit, or the robot fell or faulted."""
from __future__ import annotations

import math
import random
import threading
import time

import numpy as np

from bench.fuzzing.tally import Tally
from deploy.backends.mujoco_backend import MujocoBackend
from deploy.bundle import PolicyBundle
from deploy.controller import COMMAND_AXES, CommandRefused, Controller
from deploy.registry import PolicyRegistry
from deploy.spec import RobotSpec
from deploy.state_machine import Mode

ROBOT = "go2"
TRIAL_TICKS = 150
PATTERNS = ("nonfinite", "huge", "junk", "corners", "bangbang", "random")
JUNK = (None, "0.5", "nan", True, [0.1], {}, b"\x00")


class Robot:
    """A Controller in POLICY on a lockstep MuJoCo Go2, checked on every tick."""

    def __init__(self, spec: RobotSpec, bundle, seed: int):
        self.spec = spec
        self.backend = MujocoBackend(spec, seed=seed)
        self.ctrl = Controller(spec, self.backend, bundle, clock=self.backend.clock)
        self.ctrl.request_stand()
        for _ in range(int(10.0 / spec.policy_dt)):
            if self.ctrl.mode is Mode.STAND and self.ctrl.last_request.get("request") == "stand":
                self.ctrl.request_policy()
            self.ctrl.tick()
            self.backend.advance()
            if self.ctrl.mode is Mode.POLICY:
                break
        if self.ctrl.mode is not Mode.POLICY:
            raise RuntimeError(f"the fuzz robot never reached POLICY: {self.ctrl.diagnostics()['last_request']}")
        self.low, self.high = spec.commands.low, spec.commands.high
        self.step = self.ctrl.config.commands.max_accel(spec) * spec.policy_dt

    def close(self) -> None:
        self.backend.close()

    def problem(self) -> str | None:
        """What is unsafe after a tick: a bad command or applied command, a fall, a fault."""
        c, a = self.ctrl.command, self.ctrl.applied_command
        for name, v in (("command", c), ("applied command", a)):
            if not np.isfinite(v).all() or (v < self.low).any() or (v > self.high).any():
                return f"{name} {v.tolist()} outside the ranges"
        fatal = self.ctrl.safety.last_fatal()
        if self.ctrl.mode is not Mode.POLICY or fatal is not None:
            return f"left POLICY ({fatal.reason if fatal else self.ctrl.mode.value})"
        if self.backend.fleet.world.base_pos[0, 2] < self.spec.termination.min_base_height:
            return "the robot fell"
        return None

    def tick(self) -> str | None:
        before = self.ctrl.applied_command
        self.ctrl.tick()
        self.backend.advance()
        jump = np.abs(self.ctrl.applied_command - before)
        if (jump > self.step + 1e-9).any():
            return f"applied command jumped {jump.tolist()} > {self.step.tolist()} in one tick"
        return self.problem()


def _set(robot: Robot, values: list) -> str | None:
    """set_command with `values`; None when it behaved (refused or clamped with a reason naming the
    bad axis, or took a good command as is), else what went wrong."""
    ctrl = robot.ctrl
    before = ctrl.command
    bad = [i for i, v in enumerate(values) if not _finite_number(v)]
    try:
        got = ctrl.set_command(*values)
    except CommandRefused as exc:
        if not bad or COMMAND_AXES[bad[0]] not in str(exc) or not np.array_equal(ctrl.command, before):
            return f"refused {values!r} without naming the bad axis or changed the command: {exc}"
        return None
    if bad:
        return f"set_command took {values!r} -> {got}"
    out = [i for i, v in enumerate(values) if not robot.low[i] <= v <= robot.high[i]]
    if out and not all(COMMAND_AXES[i] in ctrl.command_note for i in out):
        return f"clamped {values!r} -> {got} without a note naming the axis ({ctrl.command_note!r})"
    return None


def _finite_number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def _good(robot: Robot, rng: random.Random) -> list[float]:
    return [rng.uniform(lo, hi) for lo, hi in zip(robot.low.tolist(), robot.high.tolist())]


def _bad_value(pattern: str, rng: random.Random):
    if pattern == "nonfinite":
        return rng.choice([math.nan, math.inf, -math.inf])
    if pattern == "huge":
        return rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(1, 308)
    return rng.choice(JUNK)


def _trial(robot: Robot, pattern: str, rng: random.Random) -> str:
    """Run one pattern; the outcome, or raise _Unsafe with what went wrong."""
    corners = [robot.low.tolist(), robot.high.tolist()]
    bang = _BangBang(robot) if pattern == "bangbang" else None
    try:
        for k in range(TRIAL_TICKS):
            if pattern in ("nonfinite", "huge", "junk"):
                values = _good(robot, rng)
                if k % 5 == 0:
                    values[rng.randrange(3)] = _bad_value(pattern, rng)
                problem = _set(robot, values)
            elif pattern == "corners":
                problem = _set(robot, [corners[rng.randrange(2)][i] for i in range(3)])
            elif pattern == "random":
                problem = _set(robot, _good(robot, rng))
            else:
                problem = bang.problem
            problem = problem or robot.tick()
            if problem:
                raise _Unsafe(f"{pattern} tick {k}: {problem}")
    finally:
        if bang is not None:
            bang.stop()
    return "refused" if pattern in ("nonfinite", "huge", "junk") else "handled"


class _Unsafe(Exception):
    pass


class _BangBang:
    def __init__(self, robot: Robot):
        self.robot = robot
        self.problem: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ends, k = (self.robot.low.tolist(), self.robot.high.tolist()), 0
        while not self._stop.is_set() and self.problem is None:
            self.problem = _set(self.robot, ends[k % 2])
            k += 1
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def fuzz(n: int, seed: int) -> Tally:
    tally = Tally("commands")
    rng = random.Random(seed)
    spec = RobotSpec.load(ROBOT)
    path = PolicyRegistry().current(ROBOT)
    if path is None:
        raise RuntimeError(f"no current {ROBOT} bundle in the registry to fuzz with")
    bundle = PolicyBundle.load(path, spec, providers="cpu")
    robot = Robot(spec, bundle, seed)
    try:
        for i in range(n):
            pattern = PATTERNS[i] if i < len(PATTERNS) else rng.choice(PATTERNS)
            unsafe = []

            def attempt() -> str:
                try:
                    return _trial(robot, pattern, rng)
                except _Unsafe as exc:
                    unsafe.append(str(exc))
                    return "silently_accepted"
            tally.trial(f"{pattern} #{i}", attempt)
            if unsafe or tally.crashed and robot.ctrl.mode is not Mode.POLICY:
                if unsafe and tally.examples and tally.examples[-1] == f"{pattern} #{i}":
                    tally.examples[-1] = f"{pattern} #{i}: {unsafe[0]}"[:500]
                robot.close()
                robot = Robot(spec, bundle, seed + i + 1)
    finally:
        robot.close()
    return tally
