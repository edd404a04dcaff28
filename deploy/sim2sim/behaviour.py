"""Behaviour statistics of one episode, the numbers the gate compares between the deployment path
and the reference rollout (compare.py): per-joint position mean and spread, tracking error, gait
(step frequency and per-foot duty factor), base rocking, height and joint-target statistics.

Both sides hand over the same arrays (t_policy, command, lin_vel, ang_vel, height, joint_pos,
target, feet; ground truth, not the noisy sensors), and both are measured over the same window:
after the Controller's blend-in plus `settle_s`, and `settle_s` after every command change of
the episode's schedule, so the deployment's stand-up and command ramps are never compared; and
only while the command asks for motion: a policy told to stand keeps whatever stance it landed
in (measured: the Go2 bundle's standing hip angles differ by up to 0.27 rad between a rollout
that started standing and one that stood up through STAND, the same on every seed), so a
standing posture depends on the path there, not on the deployment."""
from __future__ import annotations

import numpy as np

from deploy.spec import RobotSpec

MIN_TICKS = 25          # fewer ticks in the window (a fall): no statistics, the fall decides


def window(t_policy: np.ndarray, ep, blend_in_s: float) -> np.ndarray:
    """Ticks (seconds since the policy took over) that count for the comparison."""
    changes = np.array([row[0] for row in ep.commands])
    moving = np.array([any(v != 0 for v in row[1:]) for row in ep.commands])
    segment = np.searchsorted(changes, t_policy + 1e-9, side="right") - 1
    since = t_policy - np.maximum(changes[segment], blend_in_s)
    return (since >= ep.settle_s - 1e-9) & moving[segment]


def statistic_names(spec: RobotSpec) -> list[str]:
    """In the order episode_statistics returns them (names carry the joint and foot names)."""
    j, f = spec.joint_names, [str(x) for x in spec.foot_bodies]
    return ([f"q_mean/{n}" for n in j] + [f"q_std/{n}" for n in j] + [f"target_std/{n}" for n in j]
            + [f"duty/{n}" for n in f]
            + ["step_freq", "lin_vel_error", "ang_vel_error", "ang_vel_xy", "height",
               "target_rate", "target_accel"])


def episode_statistics(a: dict, ep, spec: RobotSpec, blend_in_s: float) -> np.ndarray:
    """One value per statistic_names() entry; all NaN when the window holds too few ticks."""
    names = statistic_names(spec)
    if len(a.get("t_policy", ())) == 0:
        return np.full(len(names), np.nan)
    w = window(a["t_policy"], ep, blend_in_s)
    if w.sum() < MIN_TICKS:
        return np.full(len(names), np.nan)
    q, tgt, feet = a["joint_pos"][w], a["target"][w], a["feet"][w].astype(float)
    cmd, v, om = a["command"][w], a["lin_vel"][w], a["ang_vel"][w]
    seconds = w.sum() * spec.policy_dt
    touchdowns = (np.diff(feet, axis=0) > 0).sum(axis=0)
    d1, d2 = np.diff(tgt, axis=0), np.diff(tgt, n=2, axis=0)
    return np.concatenate([
        q.mean(axis=0), q.std(axis=0), tgt.std(axis=0), feet.mean(axis=0),
        [touchdowns.mean() / seconds,
         np.linalg.norm(cmd[:, :2] - v[:, :2], axis=1).mean(),
         np.abs(cmd[:, 2] - om[:, 2]).mean(),
         np.sqrt((om[:, :2] ** 2).sum(axis=1).mean()),
         a["height"][w].mean(),
         np.sqrt((d1 ** 2).mean()), np.sqrt((d2 ** 2).mean())]])
