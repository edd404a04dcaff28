"""Checkpoints: written atomically (temp file, fsync, rename) so Ctrl-C or a power cut leaves the
previous one intact, and complete enough to resume exactly and to fine-tune later."""
from __future__ import annotations

from pathlib import Path

import torch

from deploy.durable import atomic_write
from deploy.spec import RobotSpec

FORMAT = 1


def atomic_save(obj: object, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def resolve_checkpoint(path: str | Path) -> Path:
    """A model file, or a run's `latest.pt` pointer to its newest model file."""
    path = Path(path)
    if path.name == "latest.pt" and path.is_file():
        path = path.parent / torch.load(path, weights_only=False)["checkpoint"]
    return path


class CheckpointError(ValueError):
    pass


def load_checkpoint(path: str | Path, spec: RobotSpec | None = None) -> dict:
    """Load and check a checkpoint; with `spec`, refuse one trained for another robot spec."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sac2real checkpoint of format {FORMAT}")
    if spec is not None:
        check_robot(ckpt, spec, path)
    return ckpt


def check_robot(ckpt: dict, spec: RobotSpec, path: str | Path) -> None:
    """Refuse a checkpoint trained for another robot spec (joints, gains, limits, observations)."""
    if ckpt["robot"]["hash"] != spec.hash:
        raise CheckpointError(
            f"{path}: trained for robot '{ckpt['robot']['name']}' spec {ckpt['robot']['hash'][:12]}, "
            f"but this run uses '{spec.name}' spec {spec.hash[:12]} ({spec.source}); joints, gains, "
            f"limits or observations differ")
