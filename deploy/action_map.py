"""The action map: policy env action `a` -> joint position targets, and the per-joint bounds on `a`
that the squashed-Gaussian actor is scaled to (rsl_rl_sac.md Sec. 3.2).

    target = default + g(t) + scale * a, clamped to the soft joint limits

g(t) is the spec's swing pattern at the gait clock t (GaitSpec.joint_offsets) where the spec makes it
a feed-forward (`gait.swing.feedforward`), else 0.
    a_min_j = -|q_soft_min_j - q0_j| / scale,   a_max_j = |q_soft_max_j - q0_j| / scale
    b = (a_max + a_min) / 2,  c = (a_max - a_min) / 2,   a = b + c * tanh(x)
"""
from __future__ import annotations

import numpy as np

from deploy.spec import RobotSpec


class ActionMap:
    def __init__(self, spec: RobotSpec):
        self.spec = spec
        self.scale = spec.action_scale
        self.default = spec.default_pos
        self.soft_lower = spec.soft_lower
        self.soft_upper = spec.soft_upper
        self.low = -np.abs(self.soft_lower - self.default) / self.scale
        self.high = np.abs(self.soft_upper - self.default) / self.scale
        self.feedforward = spec.swing_feedforward

    @property
    def center(self) -> np.ndarray:
        """b in Eq. 5."""
        return 0.5 * (self.high + self.low)

    @property
    def half_range(self) -> np.ndarray:
        """c in Eq. 5."""
        return 0.5 * (self.high - self.low)

    def joint_targets(self, action: np.ndarray, clock: np.ndarray | None = None) -> np.ndarray:
        """Joint position targets (policy order) for env actions of shape (N, J); `clock` (N,) is the
        gait clock the targets are for (the end of the action's tick), needed by a feed-forward
        spec. Clamped with maximum/minimum, not np.clip: the same result, and on the control tick
        np.clip's extra Python layer costs tens of microseconds when the loop wakes with cold caches."""
        target = self.default + self.scale * np.asarray(action, dtype=np.float64)
        if self.feedforward:
            if clock is None:
                raise ValueError(f"{self.spec.name}'s spec adds its swing pattern to the targets "
                                 "(gait.swing.feedforward): joint_targets needs the gait clock")
            target = target + self.spec.gait.joint_offsets(clock, self.spec.num_joints)
        return np.minimum(np.maximum(target, self.soft_lower), self.soft_upper)
