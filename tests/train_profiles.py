"""A copy of the CPU training profile with some keys changed, written where a test can load it:
the config tests each plant one bad value in an otherwise valid file."""
from __future__ import annotations

from pathlib import Path

import yaml

CPU_PROFILE = Path(__file__).resolve().parent.parent / "configs" / "train" / "sac_cpu.yaml"


def cpu_profile_with(path: Path, sac: dict | None = None, **top_level) -> Path:
    """Write the profile to `path` with `top_level` keys replaced and `sac` keys merged into its
    `sac:` section."""
    data = yaml.safe_load(CPU_PROFILE.read_text())
    data.update(top_level)
    data["sac"].update(sac or {})
    path.write_text(yaml.safe_dump(data))
    return path
