"""Spec variants (`base:` in a robot spec file): the same robot with another observation layout,
such as go2_proprio, the Go2 without the base linear velocity its hardware cannot measure. A
variant is its own robot to bundles and the registry (its own name and hash), and shares the
physical robot's deployment settings, gate scenarios and rewards (real files, real loaders)."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

import deploy.spec
from deploy.config import ConfigError
from deploy.deploy_config import DeployConfig
from deploy.observations import ObservationPipeline
from deploy.rewards import TaskRewards
from deploy.sim2sim.gate import default_scenarios
from deploy.spec import RobotSpec


def test_go2_proprio_is_the_go2_without_base_linear_velocity():
    go2, variant = RobotSpec.load("go2"), RobotSpec.load("go2_proprio")
    assert (variant.name, variant.variant_of, variant.family, go2.family) == ("go2_proprio", "go2", "go2", "go2")
    assert [o.term for o in variant.observations] == [o.term for o in go2.observations
                                                      if o.term != "base_lin_vel"]
    assert [o.term for o in variant.critic_observations] == ["base_lin_vel"]
    same = {f.name for f in dataclasses.fields(RobotSpec)} - {
        "name", "source", "observations", "critic_observations", "variant_of", "hash"}
    for key in same:
        assert getattr(variant, key) == getattr(go2, key), key
    assert variant.hash != go2.hash
    assert ObservationPipeline(variant).dim == ObservationPipeline(go2).dim - 3


def test_a_variant_shares_its_robots_deployment_settings_scenarios_and_rewards():
    go2, variant = RobotSpec.load("go2"), RobotSpec.load("go2_proprio")
    assert repr(DeployConfig.load(variant)) == repr(DeployConfig.load(go2))
    assert repr(DeployConfig.load(go2)) != repr(DeployConfig.defaults(go2))   # the file's, not defaults
    assert default_scenarios(variant) == default_scenarios(go2)
    mine, theirs = TaskRewards.load("velocity_flat", variant), TaskRewards.load("velocity_flat", go2)
    assert [(t.name, t.weight) for t in mine.terms] == [(t.name, t.weight) for t in theirs.terms]


def test_a_variants_own_settings_file_wins(tmp_path):
    variant = RobotSpec.load("go2_proprio")
    (tmp_path / "go2.yaml").write_text("a: 1\n")
    assert variant.settings_file(tmp_path) == tmp_path / "go2.yaml"
    (tmp_path / "go2_proprio.yaml").write_text("a: 2\n")
    assert variant.settings_file(tmp_path) == tmp_path / "go2_proprio.yaml"
    assert variant.settings_key({"go2": 1}) == "go2"
    assert variant.settings_key({"go2": 1, "go2_proprio": 2}) == "go2_proprio"


def test_a_variant_in_another_folder_keeps_its_bases_model(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"base": "go2", "name": "go2_mine"}))
    spec = RobotSpec.load(path)
    assert spec.mjcf == RobotSpec.load("go2").mjcf
    assert spec.source == str(path)


@pytest.mark.parametrize("data, field, message", [
    ({"base": "go3", "name": "x"}, "base", r"'go3' is not a robot in .*known: .*go2"),
    ({"base": ["go2"], "name": "x"}, "base", r"is not a robot"),
    ({"base": "go2_proprio", "name": "x"}, "base", r"'go2_proprio' is itself a variant \(of 'go2'\)"),
    ({"base": "go2"}, "name", r"a variant needs a name of its own, not None"),
    ({"base": "go2", "name": "go2"}, "name", r"a variant needs a name of its own, not 'go2'"),
    ({"base": "go2", "name": "x", "timing": {"policy_dt": 0.02}}, "timing", r"missing|required"),
])
def test_bad_variants_are_refused_naming_file_and_field(tmp_path, data, field, message):
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as err:
        RobotSpec.load(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_specs_that_are_no_variant_keep_their_hash():
    """`variant_of` enters the hash only where it is set: bundles exported before variants existed
    (models/policies) still verify against their spec."""
    from deploy.bundle import read_meta
    from deploy.registry import PolicyRegistry

    go2 = RobotSpec.load("go2")
    assert "variant_of" not in deploy.spec._hashed_content(go2)
    assert deploy.spec._hashed_content(RobotSpec.load("go2_proprio"))["variant_of"] == "go2"
    current = PolicyRegistry(deploy.spec.REPO_ROOT / "models" / "policies").current("go2")
    assert read_meta(current)["robot"]["spec_hash"] == go2.hash


def test_a_variant_trains_exports_and_is_gated_as_its_own_robot(tmp_path):
    """A few seconds of training on go2_proprio, exported: the bundle is filed under the variant,
    its policy reads the variant's layout (the critic's extra velocity left out) and the gate runs
    it on the Go2's scenarios; the Go2's own spec refuses it."""
    from deploy.bundle import BundleError, PolicyBundle
    from deploy.sim2sim.gate import run_gate
    from training.export import export_checkpoint
    from training.smoke import train_smoke_run

    variant = RobotSpec.load("go2_proprio")
    ckpt = train_smoke_run(tmp_path / "run", variant)
    path = export_checkpoint(ckpt, tmp_path / "registry", parity_samples=100, log=lambda _l: None)
    assert path.parent.name == "go2_proprio"
    bundle = PolicyBundle.load(path, variant)
    assert bundle.obs_dim == ObservationPipeline(variant).dim
    assert bundle.spec_hash == variant.hash
    with pytest.raises(BundleError, match="go2_proprio"):
        PolicyBundle.load(path, RobotSpec.load("go2"))
    result = run_gate(path, record=False, plots=False, seeds=(0,), log=lambda _l: None,
                      report_dir=tmp_path / "report")
    assert result.refused is None
    assert result.scenarios == str(default_scenarios(variant)) and len(result.results) > 0
