"""The G1 policy the gantry, contact and /cmd_vel tests run: the registry's current G1 bundle
(models/policies/g1, gated and promoted), copied into a registry of the test's own."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from deploy.spec import RobotSpec


def copy_g1_bundle(root: Path) -> Path:
    """The current G1 bundle as root/g1/<id>/ (that folder is returned)."""
    from deploy.registry import PolicyRegistry

    current = PolicyRegistry().current("g1")
    if current is None:
        pytest.fail("models/policies/g1 has no current bundle")
    return Path(shutil.copytree(current, root / "g1" / current.name))


def without_feedforward(spec: RobotSpec) -> RobotSpec:
    """The spec with its swing pattern kept for the reward but not added to the targets: for tests
    of what a standing robot does, or of a backend that cannot add it."""
    if not spec.swing_feedforward:
        return spec
    return dataclasses.replace(spec, gait=dataclasses.replace(
        spec.gait, swing=dataclasses.replace(spec.gait.swing, feedforward=False)))
