"""Per-episode metrics of a sim2sim run, computed from ground truth (not from the noisy sensors the
Controller reads) over the ticks the policy was in charge, and the thresholds they are held to.

Every metric is a number per episode; a threshold is either an upper bound ("max") or a lower
bound ("min"). An episode that never reached POLICY fails outright."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# name -> (bound, unit, meaning)
THRESHOLDS: dict[str, tuple[str, str, str]] = {
    "falls": ("max", "", ("base contact, tilt beyond the spec's max_tilt or base below "
                          "min_base_height while the policy was in charge (0 or 1)")),
    "safety_faults": ("max", "", "fatal safety events (the Controller went to DAMPING)"),
    "lin_vel_error": ("max", "m/s", "mean |v_xy command - v_xy| (body frame), settled ticks"),
    "ang_vel_error": ("max", "rad/s", "mean |wz command - wz|, settled ticks"),
    "ang_vel_xy": ("max", "rad/s", "RMS base roll and pitch rate (the body should not rock)"),
    "torque_saturation": ("max", "", "fraction of joint-ticks at >= 98 % of the effort limit"),
    "peak_torque_ratio": ("max", "", "largest |torque| / effort limit"),
    "joint_limit_margin": ("min", "rad", "smallest distance of a joint to its hard limits"),
    "action_rate": ("max", "rad", "RMS per-tick change of the joint targets (after blend-in)"),
    "action_accel": ("max", "rad", "RMS per-tick second difference of the joint targets"),
    "pd_error": ("max", "rad", "RMS of joint target - joint position"),
    "base_height": ("min", "m", "mean base height under the policy"),
    "overrun_fraction": ("max", "", "fraction of ticks whose computation exceeded policy_dt"),
    "clamp_fraction": ("max", "", ("fraction of policy ticks the safety filter had to clamp "
                                   "(rate or estimated torque)")),
    "stand_error": ("max", "rad", "largest |q - default| when the policy took over"),
}


@dataclass
class Trace:
    """What one episode recorded, tick by tick (lists until finish())."""

    t: list = field(default_factory=list)
    policy: list = field(default_factory=list)       # bool: the policy was in charge
    settled: list = field(default_factory=list)      # bool: counts for tracking errors
    command: list = field(default_factory=list)      # (3,)
    lin_vel: list = field(default_factory=list)      # (3,) body frame, true
    ang_vel: list = field(default_factory=list)      # (3,) body frame, true
    height: list = field(default_factory=list)
    torque: list = field(default_factory=list)       # (J,)
    joint_pos: list = field(default_factory=list)    # (J,)
    target: list = field(default_factory=list)      # (J,) commanded (after the safety filter)
    blended: list = field(default_factory=list)      # bool: blend-in finished
    clamped: list = field(default_factory=list)      # bool: a clamp event this tick
    feet: list = field(default_factory=list)         # (F,) bool: foot in contact
    arrays: dict = field(default_factory=dict)

    def finish(self) -> dict:
        keys = ("t", "policy", "settled", "command", "lin_vel", "ang_vel", "height", "torque",
                "joint_pos", "target", "blended", "clamped", "feet")
        self.arrays = {k: np.asarray(getattr(self, k)) for k in keys}
        return self.arrays


def episode_metrics(a: dict, spec, effort: np.ndarray, fell: bool, faults: int,
                    overruns: int, ticks: int, stand_error: float | None) -> dict:
    """Metrics of one finished episode from Trace.finish()'s arrays."""
    pol = a["policy"].astype(bool) if len(a["t"]) else np.zeros(0, bool)
    m: dict = {"falls": float(fell), "safety_faults": float(faults),
               "overrun_fraction": overruns / max(1, ticks),
               "stand_error": float(stand_error) if stand_error is not None else float("nan"),
               "policy_s": float(pol.sum() * spec.policy_dt)}
    if pol.sum() < 2:
        for k in THRESHOLDS:
            m.setdefault(k, float("nan"))
        return m
    settled = pol & a["settled"].astype(bool)
    cmd, v, w = a["command"], a["lin_vel"], a["ang_vel"]
    if settled.any():
        m["lin_vel_error"] = float(np.linalg.norm(cmd[settled, :2] - v[settled, :2], axis=1).mean())
        m["ang_vel_error"] = float(np.abs(cmd[settled, 2] - w[settled, 2]).mean())
    else:
        m["lin_vel_error"] = m["ang_vel_error"] = float("nan")
    m["ang_vel_xy"] = float(np.sqrt((w[pol, :2] ** 2).sum(axis=1).mean()))
    tau = np.abs(a["torque"][pol]) / effort
    m["torque_saturation"] = float((tau >= 0.98).mean())
    m["peak_torque_ratio"] = float(tau.max())
    q = a["joint_pos"][pol]
    margin = np.minimum(q - spec.hard_lower, spec.hard_upper - q)
    m["joint_limit_margin"] = float(margin.min())
    full = pol & a["blended"].astype(bool)
    tgt = a["target"][full]
    if len(tgt) >= 3:
        d1 = np.diff(tgt, axis=0)
        d2 = np.diff(tgt, n=2, axis=0)
        m["action_rate"] = float(np.sqrt((d1 ** 2).mean()))
        m["action_accel"] = float(np.sqrt((d2 ** 2).mean()))
    else:
        m["action_rate"] = m["action_accel"] = float("nan")
    m["pd_error"] = float(np.sqrt(((a["target"][pol] - q) ** 2).mean()))
    m["base_height"] = float(a["height"][pol].mean())
    m["clamp_fraction"] = float(a["clamped"][pol].mean())
    return m


def check(metrics: dict, thresholds: dict, reached_policy: bool) -> list[str]:
    """The failed checks of one episode, as readable strings (empty: it passes)."""
    failures = []
    if not reached_policy:
        failures.append("never reached POLICY (stand or policy request failed)")
    for name, limit in thresholds.items():
        bound = THRESHOLDS[name][0]
        value = metrics.get(name, float("nan"))
        if math.isnan(value):      # not measurable (e.g. fell at once)
            ended_badly = metrics.get("falls", 0) > 0 or metrics.get("safety_faults", 0) > 0
            if reached_policy and not ended_badly and name != "stand_error":
                failures.append(f"{name} not measurable")
            continue
        if bound == "max" and value > limit:
            failures.append(f"{name} {value:.4g} > {limit:g}")
        elif bound == "min" and value < limit:
            failures.append(f"{name} {value:.4g} < {limit:g}")
    return failures
