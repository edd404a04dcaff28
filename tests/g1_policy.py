"""The G1 policy the gantry tests run: the committed work-in-progress checkpoint
(models/checkpoints/g1_wip), which balances but does not track commands yet, exported to a
temporary registry (never into models/policies)."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy.spec import REPO_ROOT

G1_WIP = REPO_ROOT / "models" / "checkpoints" / "g1_wip" / "model.pt"


def export_g1_wip(root: Path) -> Path:
    """Export the checkpoint as root/g1/<id>/ and return that folder (torch needed)."""
    pytest.importorskip("torch")
    from training.export import export_checkpoint

    return export_checkpoint(G1_WIP, root, parity_samples=200, log=lambda *a: None)
