"""Left-right mirror symmetry as data augmentation for the SAC update.

Legged robots are mirror images of themselves across the sagittal (x-z) plane, and the velocity task
is too: a transition reflected left-to-right (obs, action, next obs) is one the robot could have
made, with the same reward. Training on both halves means what the robot learns stepping left also
teaches it to step right, and the critic sees twice the situations for the same env steps, which
matters where env steps are scarce (a laptop CPU, a robot). RSL-RL offers the same idea for PPO.

Everything is derived, nothing retyped: joint pairs come from the names (left/right, or the side
letter of a leg code such as FL, RR, LF, RH), each pair's sign from the joints' axes in the MJCF,
and the observation map from the pipeline's layout. A robot or layout the mirror cannot be derived
for is refused with the joint or term named."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mujoco
import numpy as np
import torch

from deploy.mjcf import load_model
from deploy.observations import ObservationLayout
from deploy.spec import RobotSpec
from training.replay_buffer import Batch

SYMMETRY_KINDS = ("none", "mirror")
REFLECT = np.array([1.0, -1.0, 1.0])   # the x-z plane's reflection of a polar vector
# Vectors in the base frame: polar ones flip y; axial ones (angular velocity) flip x and z; the
# command is (vx, vy, wz).
VECTOR_TERMS = {"base_lin_vel": (1, -1, 1), "projected_gravity": (1, -1, 1),
                "base_ang_vel": (-1, 1, -1), "velocity_commands": (1, -1, -1)}
JOINT_TERMS = ("joint_pos_rel", "joint_vel_rel", "last_action")


class SymmetryError(ValueError):
    pass


def mirror_name(name: str) -> str:
    """The joint on the other side: 'left'<->'right' words, and the side letter of a two-letter leg
    code (Unitree FL/FR/RL/RR: the second letter; ANYmal LF/RF/LH/RH: the first, since the second is
    F or H). A name with neither is its own mirror (a waist joint)."""
    out = []
    for token in name.split("_"):
        low = token.lower()
        if low in ("left", "right"):
            swapped = "right" if low == "left" else "left"
            token = swapped.capitalize() if token[0].isupper() else swapped
        elif len(token) == 2 and token.isupper():
            side = 0 if token[1] in "FH" else 1
            if token[side] in "LR":
                letters = list(token)
                letters[side] = "R" if token[side] == "L" else "L"
                token = "".join(letters)
        out.append(token)
    return "_".join(out)


def joint_mirror(spec: RobotSpec, model: mujoco.MjModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(partner, sign) in policy order: the mirrored robot's joint partner[i] sits at sign[i] * q[i].

    A hinge about axis a, reflected, turns about -R a; so the sign is -(R a_i . a_partner) with both
    axes taken in the world at the model's reference pose, where the robot is symmetric."""
    model = load_model(spec) if model is None else model
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    names = list(spec.joint_names)
    partner = np.empty(len(names), dtype=np.int64)
    sign = np.empty(len(names))
    for i, name in enumerate(names):
        other = mirror_name(name)
        if other not in names:
            raise SymmetryError(f"{spec.source}: joint '{name}' has no mirror joint '{other}' in the spec")
        partner[i] = names.index(other)
        axes = [data.xaxis[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in (name, other)]
        dot = float(np.dot(REFLECT * axes[0], axes[1]))
        if abs(abs(dot) - 1.0) > 1e-3:
            raise SymmetryError(f"{spec.mjcf}: the axes of joints '{name}' and '{other}' are not mirror "
                                f"images of each other (reflected dot product {dot:.3f}, expected +-1)")
        sign[i] = -np.sign(dot)
    _check_mirrored(spec, "default", spec.default_pos, partner, sign)
    _check_mirrored(spec, "soft limits", np.stack([spec.soft_lower, spec.soft_upper]), partner, sign)
    return partner, sign


def _check_mirrored(spec: RobotSpec, what: str, values: np.ndarray, partner: np.ndarray,
                    sign: np.ndarray) -> None:
    """Mirrored values must be the partner's own: a default pose or limit that breaks symmetry would
    make the mirrored transitions ones this robot cannot make."""
    mirrored = values[..., partner] * sign
    if values.ndim == 2:          # (lower, upper): a negated joint swaps its bounds
        mirrored = np.where(sign < 0, mirrored[::-1], mirrored)
    bad = np.flatnonzero(~np.isclose(mirrored, values, atol=1e-6).all(axis=0))
    if len(bad):
        j = spec.joint_names[bad[0]]
        raise SymmetryError(f"{spec.source}: joints.{j}: {what} is not the mirror of that of "
                            f"'{spec.joint_names[partner[bad[0]]]}'")


def _half_cycle_apart(spec: RobotSpec) -> tuple[float, float]:
    """The gait clock's mirror for two feet half a cycle apart: swapping the sides is a shift by
    half a cycle, which negates sin and cos. Other gaits have no single mirrored clock."""
    offsets = spec.gait.offsets
    if len(offsets) != 2 or abs(abs(offsets[0] - offsets[1]) - 0.5) > 1e-9:
        raise SymmetryError(f"{spec.source}: gait.offsets {list(offsets)}: mirroring the gait clock "
                            f"needs two feet half a cycle apart")
    return (-1.0, -1.0)


@dataclass(frozen=True)
class Mirror:
    """Index-and-sign maps: mirrored x = x[..., index] * sign, for observations and actions."""

    obs_index: torch.Tensor
    obs_sign: torch.Tensor
    act_index: torch.Tensor
    act_sign: torch.Tensor

    @classmethod
    def build(cls, spec: RobotSpec, layout: ObservationLayout) -> "Mirror":
        partner, sign = joint_mirror(spec)
        index, signs = np.arange(layout.dim), np.ones(layout.dim)
        for e in layout.entries:
            at = slice(e.offset, e.offset + e.dim)
            if e.name in VECTOR_TERMS:
                signs[at] = VECTOR_TERMS[e.name]
            elif e.name in JOINT_TERMS:
                index[at], signs[at] = e.offset + partner, sign
            elif e.name == "gait_phase":
                signs[at] = _half_cycle_apart(spec)
            else:
                raise SymmetryError(f"symmetry: mirror has no rule for observation term '{e.name}' "
                                    f"(it mirrors {', '.join([*VECTOR_TERMS, *JOINT_TERMS])}, "
                                    f"gait_phase)")
        f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        return cls(torch.as_tensor(index), f32(signs), torch.as_tensor(partner), f32(sign))

    def to(self, device: torch.device) -> "Mirror":
        return Mirror(*(t.to(device) for t in dataclasses.astuple(self)))

    def obs(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.obs_index] * self.obs_sign

    def actions(self, a: torch.Tensor) -> torch.Tensor:
        return a[..., self.act_index] * self.act_sign

    def augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Mirror a random half of the batch: the same update cost, both sides in every step.
        Returns and bootstrap masks are symmetric and stay."""
        flip = torch.rand(batch.obs.shape[0], generator=generator, device=batch.obs.device) < 0.5
        pick = lambda m, x: torch.where(flip[:, None], m(x), x)  # noqa: E731
        return dataclasses.replace(batch, obs=pick(self.obs, batch.obs),
                                   actions=pick(self.actions, batch.actions),
                                   next_obs=pick(self.obs, batch.next_obs))
