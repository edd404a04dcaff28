"""The fine-tuner's promotion loop (training/promote.py): a checkpoint is exported into the robot's
registry and gated; a pass moves the robot's `current`, a refusal keeps the bundle with its
report and reasons and leaves the robot on what it runs."""
import json

import pytest

from deploy.registry import PolicyRegistry
from training.demo import DEFAULT_CHECKPOINT
from training.promote import Promoter

SCENARIOS = """
thresholds: {falls: 0, safety_faults: 0, lin_vel_error: 0.3}
episode: {duration_s: 3.0}
scenarios:
  - name: walk
    commands: [[0.0, 0.5, 0.0, 0.0]]
"""


@pytest.fixture
def scenario_file(tmp_path):
    path = tmp_path / "scenarios.yaml"
    path.write_text(SCENARIOS)
    return path


def test_a_walking_candidate_is_promoted_and_a_falling_one_refused(smoke_checkpoint, scenario_file,
                                                                   tmp_path):
    registry = PolicyRegistry(tmp_path / "registry")
    promote = Promoter("go2", tmp_path / "ft", registry, seeds=(0, 1, 2), scenarios=scenario_file,
                       parity_samples=100, log=lambda _l: None)
    good = promote(DEFAULT_CHECKPOINT, updates=100)
    assert good["passed"] and good["promoted"] and good["against"] is None
    assert registry.current("go2").name == good["bundle"]

    bad = promote(smoke_checkpoint, updates=200)     # a few seconds of training: it does not walk
    assert not bad["passed"] and not bad["promoted"] and bad["against"] == good["bundle"]
    assert any("falls" in r or "lin_vel_error" in r for r in bad["reasons"]), bad["reasons"]
    assert registry.current("go2").name == good["bundle"]            # the robot keeps its policy
    kept = registry.root / "go2" / bad["bundle"]
    assert kept.is_dir() and (kept / "sim2sim").is_dir()              # refused, kept with its report
    lines = [json.loads(x) for x in (tmp_path / "ft" / "promotions.jsonl").read_text().splitlines()]
    assert [x["bundle"] for x in lines] == [good["bundle"], bad["bundle"]]
    assert [x["updates"] for x in lines] == [100, 200]


def test_a_checkpoint_that_cannot_be_exported_is_refused_without_stopping(tmp_path):
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a checkpoint")
    promote = Promoter("go2", tmp_path / "ft", PolicyRegistry(tmp_path / "registry"),
                       log=lambda _l: None)
    event = promote(broken, updates=7)
    assert not event["promoted"] and event["reasons"][0].startswith("export refused")
    assert PolicyRegistry(tmp_path / "registry").current("go2") is None
