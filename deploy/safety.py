"""The safety supervisor: every state the Controller reads, every target it sends and every policy
it swaps in passes through here. It never raises inside the loop: a check that fails in an
unexpected way is itself a fault ("supervisor_error").

State checks (fatal: the Controller goes to DAMPING in the same tick)
    no_state        no sample from the backend (outside PASSIVE)
    nan_state       NaN/Inf anywhere in the state
    stale_state     now - sample.stamp > max_state_age_s, or the same sample read again on more
                    than max_repeated_ticks consecutive ticks (no new valid state arrived)
    bad_quaternion  | |q| - 1 | > max_quat_norm_error
    tilt            angle between the base z axis and the world z axis > max_tilt
    joint_limit     a measured joint beyond its hard limit by more than hard_limit_tolerance
    joint_velocity  |qd| > joint_velocity_factor x the spec's velocity limit
                    (these two while the policy drives: at rest or standing up from a folded
                    pose a joint may lean on its stop)
    nan_observation the policy observation holds NaN/Inf
Action checks, on every target (the first is fatal, the others clamp and are counted)
    nan_action      non-finite target: the last safe target is held this tick, then DAMPING
    torque_clamped  |kp (q* - q) - kd qd| > torque_limit_factor x effort: q* moved into the box
    rate_limited    |q*_t - q*_{t-1}| > rate_limit_factor x velocity limit x policy_dt
    soft_clamped    q* outside the soft joint limits (always enforced last: nothing outside them
                    is ever commanded)
Swap checks (the swap is refused, the running policy stays)
    swap_refused    robot, spec hash, observation layout, action dim or dt differ; no passing
                    sim2sim verdict where one is required; the candidate returns non-finite or
                    out-of-bounds actions on the current observation

Every event is kept with its reason (a bounded log plus counters per reason)."""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from deploy.action_map import ActionMap
from deploy.backend import StateSample
from deploy.deploy_config import SafetyConfig
from deploy.spec import RobotSpec

FATAL_STATE = ("no_state", "nan_state", "stale_state", "bad_quaternion", "tilt", "joint_limit",
               "joint_velocity", "nan_observation", "supervisor_error", "robot_health")
FATAL_ACTION = ("nan_action",)
CLAMPS = ("torque_clamped", "rate_limited", "soft_clamped")


@dataclass(frozen=True)
class SafetyEvent:
    tick: int
    time: float
    reason: str
    fatal: bool
    detail: str

    def to_dict(self) -> dict:
        return {"tick": self.tick, "time": round(self.time, 6), "reason": self.reason,
                "fatal": self.fatal, "detail": self.detail}


class SafetySupervisor:
    def __init__(self, spec: RobotSpec, config: SafetyConfig, log_size: int = 256):
        self.spec = spec
        self.config = config
        self.names = spec.joint_names
        self.soft_lower, self.soft_upper = spec.soft_lower, spec.soft_upper
        self.hard_lower = spec.hard_lower - config.hard_limit_tolerance
        self.hard_upper = spec.hard_upper + config.hard_limit_tolerance
        self.max_joint_vel = spec.velocity_limit * config.joint_velocity_factor
        self.max_step = spec.velocity_limit * config.rate_limit_factor * spec.policy_dt
        self.effort = spec.effort_limit * config.torque_limit_factor
        self.cos_max_tilt = math.cos(config.max_tilt)
        # the per-tick checks run on Python floats: on a 12-joint robot a loop over lists costs
        # less than the numpy calls it replaces, and far less right after the loop's sleep, when
        # each distinct numpy function first pays to come back into the CPU caches
        self._joint_box = tuple(zip(self.hard_lower.tolist(), self.hard_upper.tolist(),
                                    self.max_joint_vel.tolist()))
        self._target_box = tuple(zip(self.soft_lower.tolist(), self.soft_upper.tolist(),
                                     self.max_step.tolist(), self.effort.tolist()))
        self.action_map = ActionMap(spec)
        self.events: collections.deque[SafetyEvent] = collections.deque(maxlen=log_size)
        self.counts: collections.Counter[str] = collections.Counter()
        self.tick = 0
        self.now = 0.0

    # ---- bookkeeping ------------------------------------------------------------------------
    def begin_tick(self, tick: int, now: float) -> None:
        self.tick, self.now = tick, now

    def record(self, reason: str, detail: str, fatal: bool) -> str:
        self.counts[reason] += 1
        self.events.append(SafetyEvent(self.tick, self.now, reason, fatal, detail))
        return reason

    def last_fatal(self) -> SafetyEvent | None:
        for e in reversed(self.events):
            if e.fatal:
                return e
        return None

    # ---- state ----------------------------------------------------------------------------
    def check_state(self, sample: StateSample | None, now: float, allow_missing: bool = False,
                    policy_active: bool = True, repeats: int = 0) -> str | None:
        """The first fatal reason, or None when the state is usable. Joint limits and joint
        velocities are checked while the policy drives (`policy_active`): a robot lying on the
        floor or being stood up from a folded pose rests against its joint stops. `repeats`: how
        many ticks in a row before this one have already read this same sample."""
        try:
            return self._check_state(sample, now, allow_missing, policy_active, repeats)
        except Exception as exc:  # never raise in the loop
            return self.record("supervisor_error", f"state check failed: {exc!r}", True)

    def _check_state(self, sample, now, allow_missing, policy_active, repeats):
        if sample is None:
            if allow_missing:
                return None
            return self.record("no_state", "the backend has not delivered a state", True)
        st = sample.state
        q, qd = st.joint_pos[0].tolist(), st.joint_vel[0].tolist()
        w, x, y, z = st.base_quat[0].tolist()
        total = sum(q) + sum(qd) + sum(st.base_ang_vel[0].tolist()) + sample.stamp + w + x + y + z
        if st.base_lin_vel is not None:
            total += sum(st.base_lin_vel[0].tolist())
        if not math.isfinite(total):
            return self.record("nan_state", self._nonfinite_detail(sample), True)
        if repeats > self.config.max_repeated_ticks:
            return self.record("stale_state", f"no new state for {repeats} ticks (sample "
                               f"{sample.sequence} read again; limit "
                               f"{self.config.max_repeated_ticks})", True)
        health = sample.health
        if health is not None and health.fault is not None:
            return self._health_fault(health)
        age = now - sample.stamp
        if age > self.config.max_state_age_s:
            return self.record("stale_state", f"state is {age * 1e3:.1f} ms old "
                               f"(limit {self.config.max_state_age_s * 1e3:.1f} ms)", True)
        n2 = w * w + x * x + y * y + z * z
        if abs(math.sqrt(n2) - 1.0) > self.config.max_quat_norm_error:
            return self.record("bad_quaternion", f"|quat| = {math.sqrt(n2):.3f}", True)
        cos_tilt = 1.0 - 2.0 * (x * x + y * y) / n2
        if cos_tilt < self.cos_max_tilt:
            tilt = math.acos(max(-1.0, min(1.0, cos_tilt)))
            return self.record("tilt", f"tilt {tilt:.3f} rad > {self.config.max_tilt:.3f} rad", True)
        if not policy_active:
            return None
        for qi, vi, (lo, hi, vmax) in zip(q, qd, self._joint_box):
            if qi < lo or qi > hi or abs(vi) > vmax:
                return self._joint_fault(st.joint_pos[0], st.joint_vel[0])
        return None

    def _health_fault(self, health) -> str:
        """What the robot says of itself (deploy/robot_health.py, judged by the backend once per
        reading): a motor error, an over-temperature, a low battery or another G1 variant than
        the spec's is fatal in every mode."""
        return self.record("robot_health", health.fault, True)

    def _joint_fault(self, q, qd):
        if (q < self.hard_lower).any() or (q > self.hard_upper).any():
            i = int(np.argmax((self.hard_lower - q).clip(0) + (q - self.hard_upper).clip(0)))
            return self.record("joint_limit", f"joint '{self.names[i]}' at {q[i]:.3f} rad, hard "
                               f"limits [{self.spec.hard_lower[i]:.3f}, {self.spec.hard_upper[i]:.3f}]"
                               f" +- {self.config.hard_limit_tolerance:g}", True)
        if (np.abs(qd) > self.max_joint_vel).any():
            i = int(np.argmax(np.abs(qd) / self.max_joint_vel))
            return self.record("joint_velocity", f"joint '{self.names[i]}' at {qd[i]:.1f} rad/s > "
                               f"{self.max_joint_vel[i]:.1f}", True)
        return None

    def _nonfinite_detail(self, sample: StateSample) -> str:
        st = sample.state
        fields = [("joint_pos", st.joint_pos[0]), ("joint_vel", st.joint_vel[0]),
                  ("base_quat", st.base_quat[0]), ("base_ang_vel", st.base_ang_vel[0]),
                  ("stamp", np.array([sample.stamp]))]
        if st.base_lin_vel is not None:
            fields.append(("base_lin_vel", st.base_lin_vel[0]))
        for name, arr in fields:
            bad = np.flatnonzero(~np.isfinite(arr))
            if len(bad):
                where = [self.names[i] for i in bad] if name.startswith("joint") else bad.tolist()
                return f"non-finite {name} at {where}"
        return "non-finite state"

    def check_observation(self, obs: np.ndarray) -> str | None:
        try:
            if math.isfinite(sum(obs.tolist())):
                return None
            bad = np.flatnonzero(~np.isfinite(obs))
            return self.record("nan_observation", f"non-finite observation entries {bad[:8].tolist()}",
                               True)
        except Exception as exc:
            return self.record("supervisor_error", f"observation check failed: {exc!r}", True)

    # ---- action -----------------------------------------------------------------------------
    def filter_targets(self, targets: np.ndarray, last_safe: np.ndarray, q: np.ndarray,
                       qd: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Safe joint targets for this tick and the fatal reason (nan_action) if any. `last_safe`
        is the previous tick's commanded target (itself within the soft limits)."""
        try:
            return self._filter(targets, last_safe, q, qd, kp, kd)
        except Exception as exc:
            reason = self.record("supervisor_error", f"action filter failed: {exc!r}", True)
            return np.clip(last_safe, self.soft_lower, self.soft_upper), reason

    def _filter(self, targets, last_safe, q, qd, kp, kd):
        fatal = None
        t = np.array(targets, dtype=np.float64)
        tl = t.tolist()
        if not math.isfinite(sum(tl)):
            bad = np.flatnonzero(~np.isfinite(t))
            fatal = self.record("nan_action", f"non-finite target for "
                                f"{[self.names[i] for i in bad]}: holding the last safe target", True)
            t = last_safe.copy()
            tl = t.tolist()
        kpl = kp.tolist()
        if not any(kpl):      # damping: the target has no effect; keep it inside the soft limits
            return np.minimum(np.maximum(t, self.soft_lower), self.soft_upper), fatal
        ql, qdl = q.tolist(), qd.tolist()
        measured = math.isfinite(sum(ql) + sum(qdl))
        if self._nothing_to_clamp(tl, last_safe.tolist(), ql, qdl, kpl, kd.tolist(), measured):
            return t, fatal
        if measured:
            tau = kp * (t - q) - kd * qd
            if (np.abs(tau) > self.effort).any():
                active = kp > 0
                safe_kp = np.where(active, kp, 1.0)
                tlo = np.where(active, q + (kd * qd - self.effort) / safe_kp, -np.inf)
                thi = np.where(active, q + (kd * qd + self.effort) / safe_kp, np.inf)
                i = int(np.argmax(np.abs(tau) / self.effort))
                self.record("torque_clamped", f"joint '{self.names[i]}' estimated torque "
                            f"{tau[i]:.1f} N m > {self.effort[i]:.1f}", False)
                t = np.minimum(np.maximum(t, tlo), thi)
        rlo, rhi = last_safe - self.max_step, last_safe + self.max_step
        if (t < rlo).any() or (t > rhi).any():
            i = int(np.argmax(np.abs(t - last_safe) / self.max_step))
            self.record("rate_limited", f"joint '{self.names[i]}' target step "
                        f"{t[i] - last_safe[i]:+.3f} rad > {self.max_step[i]:.3f} rad/tick", False)
            t = np.minimum(np.maximum(t, rlo), rhi)
        if (t < self.soft_lower).any() or (t > self.soft_upper).any():
            i = int(np.argmax((self.soft_lower - t).clip(0) + (t - self.soft_upper).clip(0)))
            self.record("soft_clamped", f"joint '{self.names[i]}' target {t[i]:.3f} rad outside soft "
                        f"limits [{self.soft_lower[i]:.3f}, {self.soft_upper[i]:.3f}]", False)
            t = np.minimum(np.maximum(t, self.soft_lower), self.soft_upper)
        return t, fatal

    def _nothing_to_clamp(self, t, last, q, qd, kp, kd, measured: bool) -> bool:
        """The common case: every target within a rate step of the last one, inside the soft
        limits and, where the state is measured, within the torque limit."""
        for ti, li, qi, vi, kpi, kdi, (lo, hi, step, effort) in zip(t, last, q, qd, kp, kd,
                                                                   self._target_box):
            if not (lo <= ti <= hi and li - step <= ti <= li + step):
                return False
            if measured and abs(kpi * (ti - qi) - kdi * vi) > effort:
                return False
        return True

    # ---- policy swaps ---------------------------------------------------------------------
    def check_swap(self, bundle, layout_hash: str, obs: np.ndarray | None = None) -> str | None:
        """None when `bundle` may drive this robot, else the reason it is refused (recorded)."""
        try:
            problem = self._swap_problem(bundle, layout_hash, obs)
        except Exception as exc:
            problem = f"the check itself failed: {exc!r}"
        if problem is None:
            return None
        ident = getattr(bundle, "id", "?")
        self.record("swap_refused", f"bundle {ident}: {problem}", False)
        return problem

    def _swap_problem(self, bundle, layout_hash: str, obs: np.ndarray | None) -> str | None:
        spec = self.spec
        if bundle.robot != spec.name:
            return f"bundle is for robot '{bundle.robot}', this controller drives '{spec.name}'"
        if bundle.spec_hash != spec.hash:
            return f"spec hash {bundle.spec_hash[:12]} differs from the running spec {spec.hash[:12]}"
        if bundle.layout_hash != layout_hash:
            return (f"observation layout {bundle.layout_hash[:12]} differs from the running "
                    f"pipeline's {layout_hash[:12]}")
        if bundle.act_dim != spec.num_joints:
            return f"action dim {bundle.act_dim} != {spec.num_joints} joints"
        if abs(bundle.policy_dt - spec.policy_dt) > 1e-9:
            return f"policy dt {bundle.policy_dt:g} s != {spec.policy_dt:g} s"
        if self.config.swap_require_verdict:
            v = bundle.sim2sim
            if not v or v.get("passed") is not True:
                return "no passing sim2sim verdict recorded in the bundle"
            if v.get("onnx_sha256") != getattr(bundle, "onnx_sha256", None) or \
                    v.get("spec_hash") != bundle.spec_hash:
                return "the sim2sim verdict was recorded for other content"
        probe = np.zeros(bundle.obs_dim, dtype=np.float32) if obs is None else obs
        action = np.asarray(bundle.act(probe), dtype=np.float64)
        if action.shape != (spec.num_joints,) or not np.isfinite(action).all():
            return f"returned {action.shape} / non-finite actions on the current observation"
        tol = 1e-4 + 1e-4 * np.abs(self.action_map.high - self.action_map.low)
        if (action < self.action_map.low - tol).any() or (action > self.action_map.high + tol).any():
            return "returned actions outside the joint-limit action bounds"
        return None

    # ---- diagnostics --------------------------------------------------------------------------
    def snapshot(self, last: int = 10) -> dict:
        fatal = self.last_fatal()
        return {"counts": dict(self.counts),
                "last_events": [e.to_dict() for e in list(self.events)[-last:]],
                "last_fatal": fatal.to_dict() if fatal else None}
