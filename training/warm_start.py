"""Start a new run from the networks of a checkpoint trained on an earlier observation layout of the
same robot, or on a variant of it (`sac2real train --init-from`): a term added to the spec (a gait
clock, a sensor) should not cost the hours it took to learn balance again.

Every input of the checkpoint's networks is matched to the new layout by term name: a kept term's
weights move to its new offset, an added term's inputs get zero weights (the networks compute what
they computed before until the updates find a use for it), a dropped term's weights are left out
(the networks then compute what they did with that term at its running mean).
The observation normalizer is carried over the same way, an added term starting at mean 0 and
variance 1. The critic's own terms (the spec's critic_observations) and their normalizer are
matched by name the same way, all of them new where the checkpoint's critic had none. The
optimizers, the replay buffer and the progress counters start afresh: this is a new run, not a
resumed one."""
from __future__ import annotations

from pathlib import Path

import torch

from deploy.observations import ObservationLayout
from deploy.spec import RobotSpec
from training.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

NORMALIZER = ("obs_norm.mean", "obs_norm.var")
# checkpoints written before the normalizers were merged (training/sac.py _load_from_state_dict)
LEGACY_NORMALIZERS = ("actor_norm.mean", "actor_norm.var", "critic_norm.mean", "critic_norm.var")
PRIVILEGED_NORMALIZER = ("privileged_norm.mean", "privileged_norm.var")


def input_map(old: list[dict], new: ObservationLayout) -> tuple[torch.Tensor, list[str], list[str]]:
    """(index, added, dropped): index[i] is the old input feeding new input i, -1 for none."""
    by_name = {e["name"]: e for e in old}
    index = torch.full((new.dim,), -1, dtype=torch.long)
    for e in new.entries:
        was = by_name.get(e.name)
        if was is None:
            continue
        if was["dim"] != e.dim:
            raise CheckpointError(f"observation term '{e.name}' had {was['dim']} values in the "
                                  f"checkpoint and has {e.dim} now; it cannot be carried over")
        index[e.offset:e.offset + e.dim] = torch.arange(was["offset"], was["offset"] + e.dim)
    added = [e.name for e in new.entries if e.name not in by_name]
    dropped = [name for name in by_name if name not in new.names]
    return index, added, dropped


def _remap(tensor: torch.Tensor, axis: int, index: torch.Tensor, fill: float) -> torch.Tensor:
    """`tensor` with its `axis` rebuilt from `index` (-1: `fill`)."""
    shape = list(tensor.shape)
    shape[axis] = len(index)
    out = torch.full(shape, fill, dtype=tensor.dtype)
    keep = index >= 0
    out.index_copy_(axis, torch.nonzero(keep).squeeze(1), tensor.index_select(axis, index[keep]))
    return out


def widen(model: dict, old: list[dict], new: ObservationLayout, act_dim: int,
          old_privileged: list[dict] = (), privileged: ObservationLayout | None = None) -> dict:
    """The checkpoint's model state with every observation input remapped to `new`: the first
    layer of each network (weights of shape (out, in) or, for a critic ensemble, (Q, in, out))
    reading the observation, or the observation, the critic's extra terms and the action, and the
    normalizers."""
    privileged = privileged or ObservationLayout(())
    index, _, _ = input_map(old, new)
    old_dim, old_extra = sum(e["dim"] for e in old), sum(e["dim"] for e in old_privileged)
    extra, _, _ = input_map(_critic_inputs(old, old_privileged), privileged)
    critic = torch.cat([index, extra, old_dim + old_extra + torch.arange(act_dim)])
    out = {}
    for key, value in model.items():
        if key in NORMALIZER or key in LEGACY_NORMALIZERS:
            value = _remap(value, 0, index, 1.0 if key.endswith("var") else 0.0)
        elif key in PRIVILEGED_NORMALIZER:
            continue
        elif key.endswith(".0.weight") and value.dim() >= 2 and value.shape[1] == old_dim:
            value = _remap(value, 1, index, 0.0)
        elif key.endswith(".0.weight") and value.dim() >= 2 and \
                value.shape[1] == old_dim + old_extra + act_dim:
            value = _remap(value, 1, critic, 0.0)
        out[key] = value
    if privileged.dim or any(key in model for key in PRIVILEGED_NORMALIZER):
        for key, own in zip(PRIVILEGED_NORMALIZER, NORMALIZER):
            fill = 1.0 if key.endswith("var") else 0.0
            legacy = "actor_norm." + own.split(".")[1]      # the same statistics
            stats = torch.cat([model.get(own, model.get(legacy, torch.full((old_dim,), fill))),
                               model.get(key, torch.full((old_extra,), fill))])
            out[key] = _remap(stats, 0, extra, fill)
    return out


def _critic_inputs(old: list[dict], old_privileged: list[dict]) -> list[dict]:
    """The checkpoint critic's observation terms, the policy's then its own, at their offsets in
    the critic's input: a term the policy no longer sees but the critic does (base_lin_vel in a
    layout the hardware can feed) keeps the critic's weights and statistics for it."""
    old_dim = sum(e["dim"] for e in old)
    return list(old) + [{**e, "offset": e["offset"] + old_dim} for e in old_privileged]


def warm_start(agent: torch.nn.Module, spec: RobotSpec, layout: ObservationLayout,
               path: str | Path, privileged: ObservationLayout | None = None) -> str:
    """Load `path`'s networks into `agent` across a layout change (the policy's `layout`, the
    critic's extra terms `privileged`); returns what was carried over, in words. Refused: another
    robot, another joint order, an agent of another shape."""
    path = resolve_checkpoint(path)
    ckpt = load_checkpoint(path)
    privileged = privileged or ObservationLayout(())
    try:
        robot = ckpt["robot"]
        joints = [j["name"] for j in robot["spec"]["joints"]]
        family = robot["spec"].get("variant_of") or robot["name"]
        ckpt["agent"]["model"], ckpt["progress"]["iteration"]
        [(str(e["name"]), int(e["dim"]), int(e["offset"])) for e in ckpt.get("obs_layout") or ()]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint ({type(exc).__name__}: {exc}): "
                              f"robot, agent.model, progress and obs_layout are needed") from exc
    if family != spec.family or joints != spec.joint_names:
        raise CheckpointError(f"{path}: trained for robot '{robot['name']}' with joints {joints}; "
                              f"--init-from needs the same robot (or a variant of it) and joint "
                              f"order as this run's '{spec.name}' ({spec.source})")
    if not ckpt.get("obs_layout"):
        raise CheckpointError(f"{path}: records no observation layout (not a robot task's "
                              f"checkpoint); --init-from matches inputs by term name")
    old_privileged = ckpt.get("privileged_layout") or []
    model = widen(ckpt["agent"]["model"], ckpt["obs_layout"], layout, spec.num_joints,
                  old_privileged, privileged)
    for key, value in agent.state_dict().items():   # a critic normalizer the checkpoint lacks
        if key.startswith("privileged_norm.") and key not in model:      # starts as a new one
            model[key] = torch.ones_like(value) if key.endswith(".var") else torch.zeros_like(value)
    try:
        agent.load_state_dict(model)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its networks do not fit this run's config (network "
                              f"sizes, algorithm switches): {exc}") from exc
    _, added, dropped = input_map(ckpt["obs_layout"], layout)
    _, critic_added, _ = input_map(_critic_inputs(ckpt["obs_layout"], old_privileged), privileged)
    _, _, critic_dropped = input_map(old_privileged, privileged)
    return (f"networks of {path} (iteration {ckpt['progress']['iteration']}); observation terms "
            f"added with zero weights: {', '.join(added) or 'none'}; dropped: "
            f"{', '.join(dropped) or 'none'}; the critic's own terms added: "
            f"{', '.join(critic_added) or 'none'}; dropped: {', '.join(critic_dropped) or 'none'}")
