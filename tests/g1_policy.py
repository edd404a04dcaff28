"""The G1 policy the gantry and /cmd_vel tests run: the committed work-in-progress checkpoint
(models/checkpoints/g1_wip), which walks where it is told but loosely (not yet to the issue's
tracking bar), exported to a temporary registry (never into models/policies)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deploy.spec import REPO_ROOT, RobotSpec

G1_WIP = REPO_ROOT / "models" / "checkpoints" / "g1_wip" / "model.pt"


def export_g1_wip(root: Path) -> Path:
    """Export the checkpoint as root/g1/<id>/ and return that folder (torch needed)."""
    pytest.importorskip("torch")
    from training.export import export_checkpoint

    return export_checkpoint(G1_WIP, root, parity_samples=200, log=lambda *a: None)


def without_feedforward(spec: RobotSpec) -> RobotSpec:
    """The spec with its swing pattern kept for the reward but not added to the targets: for tests
    of what a standing robot does, or of a backend that cannot add it."""
    if not spec.swing_feedforward:
        return spec
    return dataclasses.replace(spec, gait=dataclasses.replace(
        spec.gait, swing=dataclasses.replace(spec.gait.swing, feedforward=False)))
