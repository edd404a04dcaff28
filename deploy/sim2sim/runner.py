"""Run sim2sim episodes: one deploy.Controller per episode (the robot's own code, unchanged), each
driving one robot of a shared SimFleet on the simulation clock, faster than real time.

All episodes of a scenario file run side by side in one MuJoCo world (`parallel=True`): every tick
each active Controller ticks, then the world steps once for all of them. `parallel=False` runs
them one world at a time (same results up to sensor-noise draws; kept to measure the speed-up).

The runner plays the operator: it requests STAND after the episode's passive time, then POLICY
(which waits until the default pose is reached), sets the scheduled velocity commands and pushes,
and ends an episode at its duration, on a fall (ground truth) or when the Controller faults. A
robot whose spec asks for a stand gantry hangs from it from its reset until the policy's blend-in
ends (mujoco_backend.GantryRelease, the rule `sac2real run` and the ROS 2 node use too)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from deploy.backends.mujoco_backend import SimConditions, SimFleet, release_after_blend_in
from deploy.controller import Controller
from deploy.deploy_config import DeployConfig
from deploy.safety import FATAL_ACTION, FATAL_STATE
from deploy.sim2sim.faults import Fault
from deploy.sim2sim.metrics import Trace, check, episode_metrics
from deploy.sim2sim.scenarios import Episode, start_pose
from deploy.spec import RobotSpec
from deploy.state_machine import Mode

STAND_GRACE_S = 3.0     # after the stand interpolation, how long POLICY may take to begin
FATAL = set(FATAL_STATE) | set(FATAL_ACTION) | {"backend_error", "controller_error"}


@dataclass
class EpisodeResult:
    episode: Episode
    conditions: SimConditions
    metrics: dict
    failures: list[str]
    reached_policy: bool
    end_reason: str
    arrays: dict
    transitions: list
    safety_counts: dict
    safety_events: list
    ticks: int

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> dict:
        return {"name": self.episode.name, "scenario": self.episode.scenario,
                "passed": self.passed, "failures": self.failures, "end": self.end_reason,
                "metrics": {k: _round(v) for k, v in self.metrics.items()},
                "conditions": {k: v for k, v in vars(self.conditions).items()},
                "episode": self.episode.to_dict(), "transitions": self.transitions,
                "safety_counts": self.safety_counts, "safety_events": self.safety_events,
                "ticks": self.ticks}


def _round(v):
    return None if isinstance(v, float) and math.isnan(v) else (round(v, 6) if isinstance(v, float) else v)


@dataclass
class _Live:
    """The runner's bookkeeping for one episode in flight."""

    ep: Episode
    ctrl: Controller
    effort: np.ndarray
    trace: Trace = field(default_factory=Trace)
    phase: str = "passive"
    t0: float = 0.0                 # episode start (sim time)
    policy_t0: float | None = None
    last_change: float = 0.0
    command: tuple = (0.0, 0.0, 0.0)
    pushes_done: int = 0
    fell: bool = False
    end: str | None = None
    stand_error: float | None = None
    clamps: int = 0
    ticks: int = 0


def conditions_for(ep: Episode, spec: RobotSpec, faults: tuple[Fault, ...]) -> SimConditions:
    c = SimConditions(friction=ep.friction, added_base_mass=ep.added_base_mass,
                      payload_offset=ep.payload_offset,
                      motor_strength=ep.motor_strength, action_latency_s=ep.action_latency_s,
                      sensor_latency_s=ep.sensor_latency_s, sensor_noise=ep.sensor_noise)
    for f in faults:
        c = f.conditions(spec, c)
    return c


def run_episodes(spec: RobotSpec, bundle, episodes: list[Episode], faults: tuple[Fault, ...] = (),
                 config: DeployConfig | None = None, parallel: bool = True, threads: int = 1,
                 progress: Callable[[str], None] | None = None) -> list[EpisodeResult]:
    config = config or DeployConfig.load(spec)
    for f in faults:
        bundle = f.bundle(bundle)
    groups = [list(episodes)] if parallel else [[e] for e in episodes]
    results: list[EpisodeResult] = []
    for g in groups:
        results.extend(_run_group(spec, bundle, g, faults, config, threads, progress))
    return results


def _run_group(spec, bundle, episodes, faults, config, threads, progress) -> list[EpisodeResult]:
    conds = [conditions_for(e, spec, faults) for e in episodes]
    fleet = SimFleet(spec, conds, seed=episodes[0].seed, threads=threads)
    lives: list[_Live] = []
    try:
        for i, ep in enumerate(episodes):
            q, pos, quat = start_pose(spec, ep.start, ep.yaw, np.random.default_rng(ep.seed))
            fleet.reset(i, joint_pos=q, base_pos=pos, base_quat=quat)   # hung if spec.stand_gantry
            robot = fleet.robots[i]
            for f in faults:
                robot = f.backend(spec, robot)
            ctrl = Controller(spec, robot, bundle, config=config, clock=fleet.clock)
            for f in faults:
                f.controller(ctrl)
            release_after_blend_in(ctrl, fleet.robots[i])
            lives.append(_Live(ep, ctrl, spec.effort_limit * conds[i].motor_strength))
        active = list(range(len(lives)))
        started = time.perf_counter()
        next_note = started + 5.0
        while active:
            now = fleet.time
            for i in active:
                _operate(lives[i], i, fleet, now, spec)
                lives[i].ctrl.tick()
            fleet.step()
            truth = fleet.truth()
            still = []
            for i in active:
                if _record(lives[i], i, truth, fleet.time, spec):
                    still.append(i)
            active = still
            if progress and time.perf_counter() > next_note:
                progress(f"sim2sim: t = {fleet.time:.1f} s simulated, {len(active)} episodes running")
                next_note = time.perf_counter() + 5.0
    finally:
        fleet.close()
    return [_result(l, c, spec) for l, c in zip(lives, conds)]


def _operate(live: _Live, i: int, fleet: SimFleet, now: float, spec: RobotSpec) -> None:
    """The operator's side of one tick: requests, commands, pushes."""
    ep, ctrl = live.ep, live.ctrl
    if live.phase == "passive" and now - live.t0 >= ep.passive_s - 1e-9:
        ctrl.request_stand()
        live.phase = "stand_requested"
    elif live.phase == "stand_requested" and ctrl.mode is Mode.STAND:
        ctrl.request_policy()
        live.phase = "policy_requested"
    if live.policy_t0 is not None:
        t = now - live.policy_t0
        cmd = ep.command_at(t)
        if cmd != live.command:
            live.command = cmd
            live.last_change = now
            ctrl.set_command(*cmd)
        while live.pushes_done < len(ep.pushes) and ep.pushes[live.pushes_done].t <= t + 1e-9:
            fleet.robots[i].push(ep.pushes[live.pushes_done].dv)
            live.pushes_done += 1


def _record(live: _Live, i: int, truth: dict, now: float, spec: RobotSpec) -> bool:
    """Record this tick's ground truth; False when the episode has ended."""
    ep, ctrl = live.ep, live.ctrl
    live.ticks += 1
    st = truth["state"]
    in_policy = ctrl.mode is Mode.POLICY
    if in_policy and live.policy_t0 is None:
        live.policy_t0 = now - spec.policy_dt      # the tick that entered POLICY began then
        live.last_change = live.policy_t0
        live.stand_error = float(np.abs(st.joint_pos[i] - spec.default_pos).max())
        live.command = ep.command_at(0.0)
        ctrl.set_command(*live.command)
    counts = ctrl.safety.counts
    clamps = counts.get("rate_limited", 0) + counts.get("torque_clamped", 0)
    clamped, live.clamps = clamps > live.clamps, clamps
    if live.policy_t0 is not None:
        tr = live.trace
        tr.t.append(now)
        tr.policy.append(in_policy)
        blend_end = live.policy_t0 + ctrl.config.controller.blend_in_s
        tr.settled.append(now - max(live.last_change, blend_end) >= ep.settle_s - 1e-9)
        tr.blended.append(now >= blend_end + spec.policy_dt - 1e-9)
        tr.command.append(np.array(live.command))
        tr.lin_vel.append(st.base_lin_vel[i])
        tr.ang_vel.append(st.base_ang_vel[i])
        tr.height.append(truth["base_pos"][i, 2])
        tr.torque.append(truth["torque"][i])
        tr.joint_pos.append(st.joint_pos[i])
        tr.target.append(ctrl._last_target.copy())
        tr.feet.append(truth["feet"][i])
        tr.clamped.append(clamped)
        quat = st.base_quat[i]
        up_z = 1.0 - 2.0 * (quat[1] ** 2 + quat[2] ** 2)
        if in_policy and spec.toppled(truth["fall_contact"][i], up_z, truth["base_pos"][i, 2]):
            live.fell = True
            live.end = f"fell at t = {now - live.policy_t0:.2f} s"
            return False
        if now - live.policy_t0 >= ep.duration_s - 1e-9:
            live.end = "completed"
            return False
    if ctrl.mode is Mode.DAMPING:
        ev = ctrl.safety.last_fatal()
        live.end = f"controller fault: {ev.reason} ({ev.detail})" if ev else "controller DAMPING"
        return False
    limit = ep.passive_s + ctrl._stand_T + STAND_GRACE_S
    if live.policy_t0 is None and now - live.t0 > limit:
        live.end = f"no POLICY after {limit:.1f} s (mode {ctrl.mode.value}; " \
                   f"{ctrl.last_request.get('result', '')})"
        return False
    return True


def _result(live: _Live, cond: SimConditions, spec: RobotSpec) -> EpisodeResult:
    arrays = live.trace.finish()
    arrays["t_policy"] = arrays["t"] - live.policy_t0 if live.policy_t0 is not None else arrays["t"]
    ctrl = live.ctrl
    faults = sum(v for k, v in ctrl.safety.counts.items() if k in FATAL)
    metrics = episode_metrics(arrays, spec, live.effort, live.fell, faults,
                              ctrl.timer.budget_exceeded, live.ticks, live.stand_error)
    reached = live.policy_t0 is not None
    failures = check(metrics, live.ep.thresholds, reached)
    events = [e.to_dict() for e in ctrl.safety.events if e.fatal or e.reason.startswith("swap")]
    return EpisodeResult(live.ep, cond, metrics, failures, reached, live.end or "?", arrays,
                         list(ctrl.transitions), dict(ctrl.safety.counts), events[-10:], live.ticks)
