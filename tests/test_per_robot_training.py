"""Per-robot training settings: `base:` starts a profile from another one, so the G1's states only
what differs from the CPU profile that walked the Go2; a task's `robot_overrides` change one robot's
reset and randomization key by key (real files, real loaders)."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from deploy.config import ConfigError
from deploy.spec import RobotSpec
from training.config import TRAIN_DIR, load_train_config, read_profile
import deploy.rewards
from deploy.rewards import TASKS_DIR
from training.envs.velocity import TaskConfig


def test_the_g1_profile_is_the_cpu_profile_with_its_own_keys_replaced():
    own = yaml.safe_load((TRAIN_DIR / "sac_cpu_g1.yaml").read_text())
    base = load_train_config(TRAIN_DIR / own.pop("base"))
    g1 = load_train_config(TRAIN_DIR / "sac_cpu_g1.yaml")
    sac_own = own.pop("sac", {})
    for key, value in own.items():
        assert getattr(g1, key) == value, key
    for key, value in sac_own.items():
        assert getattr(g1.sac, key) == value, f"sac.{key}"
    changed = {f.name for f in dataclasses.fields(g1) if getattr(g1, f.name) != getattr(base, f.name)}
    assert changed == set(own) | ({"sac"} if sac_own else set()) | {"source"}
    sac_changed = {f.name for f in dataclasses.fields(g1.sac)
                   if getattr(g1.sac, f.name) != getattr(base.sac, f.name)}
    assert sac_changed == set(sac_own)


def test_a_base_chain_merges_in_order_and_a_cycle_or_unknown_base_is_refused(tmp_path, monkeypatch):
    """Bases are profiles of configs/train by name (here a stand-in folder), whatever folder the
    profile itself is in."""
    import training.config
    monkeypatch.setattr(training.config, "TRAIN_DIR", tmp_path)
    (tmp_path / "a.yaml").write_text((TRAIN_DIR / "sac_cpu.yaml").read_text())
    (tmp_path / "b.yaml").write_text("base: a.yaml\nnum_envs: 32\nsac: {tau: 0.01}\n")
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    (elsewhere / "c.yaml").write_text("base: b.yaml\nsac: {gamma: 0.99}\n")
    c = load_train_config(elsewhere / "c.yaml")
    assert (c.num_envs, c.sac.tau, c.sac.gamma) == (32, 0.01, 0.99)
    assert c.sac.actor_lr == load_train_config(tmp_path / "a.yaml").sac.actor_lr
    assert "base" not in read_profile(elsewhere / "c.yaml")

    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="cycle") as info:
        load_train_config(elsewhere / "c.yaml")
    assert "base" in str(info.value)
    for bad in ("nowhere.yaml", "3", "../a.yaml"):
        (elsewhere / "d.yaml").write_text(f"base: {bad}\n")
        with pytest.raises(ConfigError, match="is not a profile") as info:
            load_train_config(elsewhere / "d.yaml")
        assert str(elsewhere / "d.yaml") in str(info.value) and "a.yaml, b.yaml" in str(info.value)


def test_a_task_override_replaces_only_that_robots_keys_and_names_them_in_errors(tmp_path, monkeypatch):
    text = (TASKS_DIR / "velocity_flat.yaml").read_text()
    shared = yaml.safe_load(text)
    g1_reset = shared["robot_overrides"]["g1"]["reset"]
    g1, go2 = (TaskConfig.load("velocity_flat", RobotSpec.load(r)) for r in ("g1", "go2"))
    assert g1.reset_joint_scale == tuple(g1_reset["joint_pos_scale"])
    assert g1.reset_base_velocity == g1_reset["base_velocity"]
    assert g1.reset_yaw == shared["reset"]["yaw"]                 # not overridden: shared
    assert go2.reset_joint_scale == tuple(shared["reset"]["joint_pos_scale"])
    assert go2.reset_base_velocity == shared["reset"]["base_velocity"]

    monkeypatch.setattr(deploy.rewards, "TASKS_DIR", tmp_path)   # where task_section reads
    bad = yaml.safe_load(text)
    bad["robot_overrides"]["g1"]["reset"]["base_velocity"] = -1.0
    (tmp_path / "velocity_flat.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as info:
        TaskConfig.load("velocity_flat", RobotSpec.load("g1"))
    assert info.value.key == "robot_overrides.g1.reset.base_velocity", info.value
    bad["robot_overrides"]["g1"]["reset"] = {"bas_velocity": 0.0}
    (tmp_path / "velocity_flat.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="did you mean 'base_velocity'") as info:
        TaskConfig.load("velocity_flat", RobotSpec.load("g1"))
    assert info.value.key == "robot_overrides.g1.reset.bas_velocity", info.value
    bad["robot_overrides"] = {"g2": {}}
    (tmp_path / "velocity_flat.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="unknown key") as info:
        TaskConfig.load("velocity_flat", RobotSpec.load("go2"))
    assert info.value.key == "robot_overrides.g2", info.value


def test_a_robots_tracking_sigma_and_latency_override_reach_training_and_the_robot_path(
        tmp_path, monkeypatch):
    """The G1's `tracking_sigma` and `action_latency_s` are its own; the Go2 keeps the shared ones.
    The robot path's rewards (TaskRewards, fine-tuning's relabeling) read the same sigma."""
    text = (TASKS_DIR / "velocity_flat.yaml").read_text()
    shared = yaml.safe_load(text)
    mine = shared["robot_overrides"]["g1"]
    g1, go2 = (RobotSpec.load(r) for r in ("g1", "go2"))
    assert mine["tracking_sigma"] != shared["tracking_sigma"]
    assert TaskConfig.load("velocity_flat", g1).tracking_sigma == mine["tracking_sigma"]
    assert deploy.rewards.TaskRewards.load("velocity_flat", g1).sigma == mine["tracking_sigma"]
    assert TaskConfig.load("velocity_flat", go2).tracking_sigma == shared["tracking_sigma"]
    assert deploy.rewards.TaskRewards.load("velocity_flat", go2).sigma == shared["tracking_sigma"]
    latency = tuple(mine["domain_randomization"]["action_latency_s"])
    assert TaskConfig.load("velocity_flat", g1).randomization.action_latency_s == latency
    assert TaskConfig.load("velocity_flat", go2).randomization.action_latency_s == (0.0, 0.0)

    monkeypatch.setattr(deploy.rewards, "TASKS_DIR", tmp_path)
    for value in (0.0, -0.3, float("nan"), "tight"):
        bad = yaml.safe_load(text)
        bad["robot_overrides"]["g1"]["tracking_sigma"] = value
        (tmp_path / "velocity_flat.yaml").write_text(yaml.safe_dump(bad))
        for load in (TaskConfig.load, deploy.rewards.TaskRewards.load):
            with pytest.raises(ConfigError) as info:
                load("velocity_flat", g1)
            assert info.value.key == "robot_overrides.g1.tracking_sigma", (value, info.value)
