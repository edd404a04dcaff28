"""The observation pipeline: named terms, batched numpy, one layout shared by training, sim2sim and
the robot. Terms are keyed by the training term's name so that an unknown name fails at start-up,
and the layout (names, dims, offsets, scales, clips) is hashed into every exported bundle."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from deploy.spec import ObsTermSpec, RobotSpec


@dataclass
class RobotState:
    """Robot state as every producer (MuJoCo env, sim2sim, hardware backend) hands it over.

    Leading axis is the environment (batch 1 on the robot). Joint arrays are in policy order, the
    quaternion is w,x,y,z (world from body), velocities are in the base (body) frame."""

    base_quat: np.ndarray          # (N, 4) w, x, y, z
    base_ang_vel: np.ndarray       # (N, 3) body frame, rad/s (IMU gyroscope)
    joint_pos: np.ndarray          # (N, J)
    joint_vel: np.ndarray          # (N, J)
    base_lin_vel: np.ndarray | None = None   # (N, 3) body frame; None where no estimator exists
    height_scan: np.ndarray | None = None    # (N, rays) sensor_z - hit_z - offset

    @property
    def num_envs(self) -> int:
        return self.base_quat.shape[0]


@dataclass
class ObsInputs:
    """What a term may read: the state plus the controller's own context."""

    state: RobotState
    command: np.ndarray       # (N, 3) vx, vy, wz
    last_action: np.ndarray   # (N, J) the policy's previous env action
    spec: RobotSpec
    clock: np.ndarray | None = None   # (N,) seconds since the policy started (the gait clock)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (N,3) arrays; np.cross costs ~3x more on the batch-1 control path."""
    ax, ay, az = a[:, 0], a[:, 1], a[:, 2]
    bx, by, bz = b[:, 0], b[:, 1], b[:, 2]
    return np.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], axis=1)


def quat_rotate_inverse(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate world-frame vectors v (N,3) into the body frame of w,x,y,z quaternions q (N,4)."""
    w, xyz = q[:, :1], q[:, 1:]
    t = 2.0 * _cross(xyz, v)
    return v - w * t + _cross(xyz, t)


# projected gravity R(q)^T (0, 0, -1) = (2(wy - xz), -2(yz + wx), 2(x^2 + y^2) - 1): every component
# is a quadratic form in q = (w, x, y, z), so a batch costs one outer product and one matmul
_GRAVITY_FORM = np.zeros((4, 4, 3))
_GRAVITY_FORM[0, 2, 0], _GRAVITY_FORM[1, 3, 0] = 2.0, -2.0
_GRAVITY_FORM[2, 3, 1], _GRAVITY_FORM[0, 1, 1] = -2.0, -2.0
_GRAVITY_FORM[1, 1, 2], _GRAVITY_FORM[2, 2, 2] = 2.0, 2.0
_GRAVITY_FORM = _GRAVITY_FORM.reshape(16, 3)
_GRAVITY_OFFSET = np.array([0.0, 0.0, -1.0])


def projected_gravity(q: np.ndarray) -> np.ndarray:
    """Unit gravity in the body frame of w,x,y,z quaternions q (N,4); few numpy calls because it
    runs every control tick."""
    n = q.shape[0]
    return (q[:, :, None] * q[:, None, :]).reshape(n, 16) @ _GRAVITY_FORM + _GRAVITY_OFFSET


def _lin_vel(x: ObsInputs) -> np.ndarray:
    if x.state.base_lin_vel is None:
        raise ValueError("observation term base_lin_vel needs RobotState.base_lin_vel (a state "
                         "estimator); this backend provides none")
    return x.state.base_lin_vel


def _height_scan(x: ObsInputs) -> np.ndarray:
    if x.state.height_scan is None:
        raise ValueError("observation term height_scan needs RobotState.height_scan")
    return x.state.height_scan


def _gait_phase(x: ObsInputs) -> np.ndarray:
    """sin and cos of the gait cycle's angle (the first foot's phase): a periodic signal a policy
    can time its steps by, continuous over the cycle's wrap."""
    if x.clock is None:
        raise ValueError("observation term gait_phase needs the policy clock (seconds since the "
                         "policy started); this caller passes none")
    angle = 2.0 * np.pi * x.spec.gait.foot_phases(x.clock)[:, 0]
    return np.stack([np.sin(angle), np.cos(angle)], axis=1)


@dataclass(frozen=True)
class TermDef:
    dim: Callable[[RobotSpec], int]
    compute: Callable[[ObsInputs], np.ndarray]
    doc: str


TERMS: dict[str, TermDef] = {
    "base_lin_vel": TermDef(lambda s: 3, _lin_vel, "base linear velocity, body frame (m/s)"),
    "base_ang_vel": TermDef(lambda s: 3, lambda x: x.state.base_ang_vel,
                            "base angular velocity, body frame (rad/s)"),
    "projected_gravity": TermDef(lambda s: 3, lambda x: projected_gravity(x.state.base_quat),
                                 "unit gravity in the body frame"),
    "velocity_commands": TermDef(lambda s: 3, lambda x: x.command, "commanded vx, vy, wz"),
    "joint_pos_rel": TermDef(lambda s: s.num_joints, lambda x: x.state.joint_pos - x.spec.default_pos,
                             "joint positions minus the default pose"),
    "joint_vel_rel": TermDef(lambda s: s.num_joints, lambda x: x.state.joint_vel,
                             "joint velocities (the default velocity is zero)"),
    "last_action": TermDef(lambda s: s.num_joints, lambda x: x.last_action,
                           "the previous env action, unscaled"),
    "gait_phase": TermDef(lambda s: 2, _gait_phase,
                          "sin, cos of the gait clock's angle (spec gait: period, offsets)"),
    "height_scan": TermDef(lambda s: s.height_scan.num_rays, _height_scan,
                           "terrain heights below the base: sensor_z - hit_z - offset"),
}


@dataclass(frozen=True)
class LayoutEntry:
    name: str
    dim: int
    offset: int
    scale: float
    clip: float | None


@dataclass(frozen=True)
class ObservationLayout:
    entries: tuple[LayoutEntry, ...]

    @property
    def dim(self) -> int:
        return sum(e.dim for e in self.entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def slice(self, name: str) -> slice:
        for e in self.entries:
            if e.name == name:
                return slice(e.offset, e.offset + e.dim)
        raise KeyError(f"observation layout has no term '{name}' (terms: {', '.join(self.names)})")

    def to_list(self) -> list[dict]:
        return [dict(name=e.name, dim=e.dim, offset=e.offset, scale=e.scale, clip=e.clip)
                for e in self.entries]

    @property
    def hash(self) -> str:
        """Stable over processes and machines: what the numbers mean, not how they were noised."""
        return hashlib.sha256(json.dumps(self.to_list(), sort_keys=True).encode()).hexdigest()


def appended(first: ObservationLayout, second: ObservationLayout) -> ObservationLayout:
    """`second`'s entries after `first`'s: the critic's layout, the policy's and then its own."""
    moved = tuple(LayoutEntry(e.name, e.dim, e.offset + first.dim, e.scale, e.clip)
                  for e in second.entries)
    return ObservationLayout(first.entries + moved)


def critic_pipeline(spec: RobotSpec) -> "ObservationPipeline | None":
    """The critic's own terms (the spec's critic_observations) as a pipeline; None without any."""
    return ObservationPipeline(spec, terms=spec.critic_observations) if spec.critic_observations \
        else None


class ObservationPipeline:
    """Builds the policy observation from a RobotState, identically everywhere."""

    def __init__(self, spec: RobotSpec, height_scan: bool = False,
                 terms: tuple[ObsTermSpec, ...] | None = None):
        """`terms`: another list than the spec's policy observations (the critic's extra terms)."""
        self.spec = spec
        terms = list(spec.observations if terms is None else terms)
        if height_scan:
            hs = spec.height_scan
            terms.append(ObsTermSpec("height_scan", scale=1.0, clip=hs.clip, noise=hs.noise))
        self.terms = tuple(terms)
        entries, offset = [], 0
        for t in self.terms:
            dim = TERMS[t.term].dim(spec)
            entries.append(LayoutEntry(t.term, dim, offset, t.scale, t.clip))
            offset += dim
        self.layout = ObservationLayout(tuple(entries))
        self._noise = np.concatenate([np.full(e.dim, t.noise) for e, t in zip(entries, self.terms)])
        self._scale = np.concatenate([np.full(e.dim, e.scale) for e in entries])
        clip = [np.full(e.dim, np.inf if e.clip is None else e.clip) for e in entries]
        self._clip = np.concatenate(clip)
        # what compute does per term and whether clip / scale do anything: it runs every tick
        self._plan = tuple((TERMS[t.term].compute, t.term, e.dim)
                           for t, e in zip(self.terms, entries))
        self._clipped = bool(np.isfinite(self._clip).any())
        self._dim = self.layout.dim
        self._scaled = bool((self._scale != 1.0).any())

    @property
    def dim(self) -> int:
        return self.layout.dim

    def _refuse_shapes(self, parts: list[np.ndarray], n: int) -> None:
        for (_, name, dim), part in zip(self._plan, parts):
            if np.shape(part) != (n, dim):
                raise ValueError(f"observation term {name} has shape {np.shape(part)}, "
                                 f"expected ({n}, {dim})")
        raise ValueError(f"observation terms do not stack into ({n}, {self._dim})")

    @property
    def observed_noise(self) -> np.ndarray:
        """The noise's half-width in each column of what `compute` returns (after scaling)."""
        return self._noise * np.abs(self._scale)

    def compute(self, state: RobotState, command: np.ndarray, last_action: np.ndarray,
                rng: np.random.Generator | None = None,
                clock: np.ndarray | None = None) -> np.ndarray:
        """(N, dim) float32. With `rng`, add the training-time uniform noise (IsaacLab's order:
        compute, noise, clip, scale). `clock`: (N,) seconds since the policy started, for a layout
        with a gait clock."""
        x = ObsInputs(state, np.asarray(command), np.asarray(last_action), self.spec, clock)
        return self._stack([compute(x) for compute, _, _ in self._plan], state.num_envs, rng)

    def from_values(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N, dim) float32 from each term's raw values, by term name (a robot record's fields),
        clipped and scaled as `compute` does, without noise."""
        parts = [np.asarray(values[name], np.float64).reshape(-1, dim) for _, name, dim in self._plan]
        return self._stack(parts, len(parts[0]), None)

    def _stack(self, parts: list[np.ndarray], n: int, rng: np.random.Generator | None) -> np.ndarray:
        """The terms' raw values side by side, then noise (with `rng`), clip and scale."""
        try:
            obs = np.concatenate(parts, axis=1, dtype=np.float64)
        except ValueError:
            obs = None
        if obs is None or obs.shape != (n, self._dim):
            self._refuse_shapes(parts, n)
        if rng is not None:
            obs += rng.uniform(-1.0, 1.0, size=obs.shape) * self._noise
        if self._clipped:
            np.clip(obs, -self._clip, self._clip, out=obs)
        if self._scaled:
            obs *= self._scale
        return obs.astype(np.float32)
