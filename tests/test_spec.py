"""RobotSpec loading, validation and the index maps derived from it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from deploy.config import ConfigError
from deploy.spec import ROBOTS_DIR, RobotSpec, available_robots

# unitree_rl_lab's 29-DoF G1 velocity policy: policy (IsaacLab PhysX) joint i -> SDK hg motor.
G1_POLICY_TO_SDK = [0, 6, 12, 1, 7, 13, 2, 8, 14, 3, 9, 15, 22, 4, 10, 16, 23, 5, 11, 17, 24, 18, 25,
                    19, 26, 20, 27, 21, 28]
# unitree_sdk2 hg motor order (G1 29 DoF).
G1_SDK_ORDER = [
    "left_hip_pitch", "left_hip_roll", "left_hip_yaw", "left_knee", "left_ankle_pitch", "left_ankle_roll",
    "right_hip_pitch", "right_hip_roll", "right_hip_yaw", "right_knee", "right_ankle_pitch",
    "right_ankle_roll", "waist_yaw", "waist_roll", "waist_pitch",
    "left_shoulder_pitch", "left_shoulder_roll", "left_shoulder_yaw", "left_elbow", "left_wrist_roll",
    "left_wrist_pitch", "left_wrist_yaw",
    "right_shoulder_pitch", "right_shoulder_roll", "right_shoulder_yaw", "right_elbow",
    "right_wrist_roll", "right_wrist_pitch", "right_wrist_yaw"]
# IsaacLab Go2 (PhysX order) -> unitree_sdk2 go motor order (FR, FL, RR, RL x hip, thigh, calf).
GO2_POLICY_TO_SDK = [3, 0, 9, 6, 4, 1, 10, 7, 5, 2, 11, 8]
GO2_SDK_ORDER = [f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL")
                 for part in ("hip", "thigh", "calf")]


@pytest.mark.parametrize("robot", available_robots())
def test_every_robot_config_loads_with_its_mjcf(robot):
    spec = RobotSpec.load(robot)
    assert spec.name == robot
    assert len(spec.hash) == 64
    assert spec.num_joints == len(set(spec.joint_names))


def test_published_robot_set_is_present():
    assert {"g1", "go2", "anymal_d"} <= set(available_robots())
    assert RobotSpec.load("g1").num_joints == 29
    assert RobotSpec.load("go2").num_joints == 12
    assert RobotSpec.load("anymal_d").num_joints == 12


@pytest.mark.parametrize("robot", available_robots())
def test_hardware_map_round_trips(robot):
    spec = RobotSpec.load(robot, check_mjcf=False)
    p2h, h2p = spec.policy_to_hardware, spec.hardware_to_policy
    assert np.array_equal(h2p[p2h], np.arange(spec.num_joints))
    used = h2p >= 0
    assert np.array_equal(p2h[h2p[used]], np.flatnonzero(used))


def test_go2_hardware_order_is_unitree_go_order():
    spec = RobotSpec.load("go2", check_mjcf=False)
    assert spec.policy_to_hardware.tolist() == GO2_POLICY_TO_SDK
    h2p = spec.hardware_to_policy
    assert [spec.joint_names[h2p[m]] for m in range(12)] == GO2_SDK_ORDER


def test_g1_hardware_order_is_unitree_hg_order():
    spec = RobotSpec.load("g1", check_mjcf=False)
    assert spec.policy_to_hardware.tolist() == G1_POLICY_TO_SDK
    h2p = spec.hardware_to_policy
    assert [spec.joint_names[h2p[m]] for m in range(29)] == [f"{n}_joint" for n in G1_SDK_ORDER]
    assert (h2p[29:] == -1).all()   # hg messages carry 35 slots; 29..34 are unused on the G1


def test_spec_hash_is_stable_and_sensitive(tmp_path):
    a = RobotSpec.load("go2", check_mjcf=False)
    assert RobotSpec.load("go2", check_mjcf=False).hash == a.hash
    data = _go2(tmp_path)
    data["joints"][0]["kp"] = 26.0
    assert _load(tmp_path, data, check_mjcf=False).hash != a.hash


# ---- refusals -------------------------------------------------------------------------------
def _go2(tmp_path: Path) -> dict:
    data = yaml.safe_load((ROBOTS_DIR / "go2.yaml").read_text())
    data["mjcf"] = str((ROBOTS_DIR / data["mjcf"]).resolve())
    return data


def _load(tmp_path: Path, data: dict, check_mjcf: bool = True) -> RobotSpec:
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return RobotSpec.load(path, check_mjcf=check_mjcf)


def test_misspelled_key_is_refused_with_a_hint(tmp_path):
    data = _go2(tmp_path)
    data["joints"][3]["dfault"] = data["joints"][3].pop("default")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data)
    msg = str(err.value)
    assert "robot.yaml" in msg and "joints[3].dfault" in msg and "did you mean 'default'" in msg


def test_misspelled_top_level_key_is_refused(tmp_path):
    data = _go2(tmp_path)
    data["comands"] = data.pop("commands")
    with pytest.raises(ConfigError, match=r"comands: unknown key; did you mean 'commands'"):
        _load(tmp_path, data)


def test_duplicated_joint_is_refused(tmp_path):
    data = _go2(tmp_path)
    data["joints"][5]["name"] = data["joints"][2]["name"]
    with pytest.raises(ConfigError, match=r"joints\[5\]\.name: duplicated joint 'RL_hip_joint'"):
        _load(tmp_path, data)


def test_joint_missing_from_the_mjcf_is_refused(tmp_path):
    data = _go2(tmp_path)
    data["joints"][0]["name"] = "FL_hip_jiont"
    with pytest.raises(ConfigError, match=r"'FL_hip_jiont' is not in the MJCF"):
        _load(tmp_path, data)


def test_default_outside_limits_is_refused(tmp_path):
    data = _go2(tmp_path)
    data["joints"][8]["default"] = -3.0
    with pytest.raises(ConfigError, match=r"joints\[8\]\.default: default position -3.0 of joint "
                                          r"'FL_calf_joint' is outside its limits"):
        _load(tmp_path, data)


def test_default_outside_soft_limits_is_refused(tmp_path):
    data = _go2(tmp_path)
    data["joints"][8]["default"] = -2.7   # inside [-2.7227, -0.8378], outside the 0.9 soft range
    with pytest.raises(ConfigError, match="outside its soft limits"):
        _load(tmp_path, data)


def test_limits_that_disagree_with_the_mjcf_are_refused(tmp_path):
    data = _go2(tmp_path)
    data["joints"][0]["limits"] = [-1.2, 1.2]
    with pytest.raises(ConfigError, match=r"joints\[0\]\.limits: 'FL_hip_joint' limits .* differ"):
        _load(tmp_path, data)


def test_duplicated_motor_index_is_refused(tmp_path):
    data = _go2(tmp_path)
    data["joints"][1]["motor"] = data["joints"][0]["motor"]
    with pytest.raises(ConfigError, match=r"joints\[1\]\.motor: motor index 3 .* already used"):
        _load(tmp_path, data, check_mjcf=False)


def test_inconsistent_timing_is_refused(tmp_path):
    data = _go2(tmp_path)
    data["timing"]["decimation"] = 5
    with pytest.raises(ConfigError, match=r"timing\.decimation"):
        _load(tmp_path, data, check_mjcf=False)


def test_unknown_observation_term_is_refused_with_the_known_names(tmp_path):
    data = _go2(tmp_path)
    data["observations"][0]["term"] = "base_linvel"
    with pytest.raises(ConfigError, match=r"observations\[0\]\.term: 'base_linvel' is not one of: .*base_lin_vel"):
        _load(tmp_path, data, check_mjcf=False)


def test_unknown_robot_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown robot 'go3' \(known: .*go2"):
        RobotSpec.load("go3")


def test_a_gait_clock_changes_the_hash_and_its_absence_keeps_the_old_one(tmp_path):
    """Specs written before the gait clock existed hash as before (committed bundles stay valid)."""
    a = RobotSpec.load("go2", check_mjcf=False)
    data = _go2(tmp_path)
    assert _load(tmp_path, data, check_mjcf=False).hash == a.hash
    data["gait"] = {"period": 0.5, "offsets": [0.0, 0.5, 0.5, 0.0], "stance": 0.5}
    assert _load(tmp_path, data, check_mjcf=False).hash != a.hash


@pytest.mark.parametrize("gait, where, why", [
    ({"period": 0.5, "offsets": [0.0, 0.5], "stance": 0.5}, "gait.offsets", "4 feet"),
    ({"period": 0.5, "offsets": [0.0, 0.5, 1.0, 0.0], "stance": 0.5}, "gait.offsets", "in [0, 1)"),
    ({"period": 0.5, "offsets": [0.0, 0.5, float("nan"), 0.0], "stance": 0.5}, "gait.offsets", ""),
    ({"period": 0.0, "offsets": [0.0, 0.5, 0.5, 0.0], "stance": 0.5}, "gait.period", "0.1"),
    ({"period": 0.5, "offsets": [0.0, 0.5, 0.5, 0.0], "stance": 0.0}, "gait.stance", ""),
    ({"period": 0.5, "offsets": [0.0, 0.5, 0.5, 0.0]}, "gait.stance", ""),
    ({"period": 0.5, "offsets": [0.0, 0.5, 0.5, 0.0], "stance": 0.5, "phase": 1}, "gait.phase",
     "unknown key"),
], ids=["offsets_per_foot", "offset_of_a_whole_cycle", "offset_nan", "period_zero", "stance_zero",
        "stance_missing", "unknown_key"])
def test_a_bad_gait_clock_is_refused_naming_the_field(tmp_path, gait, where, why):
    data = _go2(tmp_path)
    data["gait"] = gait
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data, check_mjcf=False)
    assert "robot.yaml" in str(err.value) and where in str(err.value) and why in str(err.value)


def test_the_gait_phase_term_without_a_gait_clock_is_refused(tmp_path):
    data = _go2(tmp_path)
    data["observations"].append({"term": "gait_phase"})
    with pytest.raises(ConfigError, match=r"observations: term gait_phase needs a 'gait' section"):
        _load(tmp_path, data, check_mjcf=False)


def _go2_swing(tmp_path: Path, swing: dict) -> dict:
    data = _go2(tmp_path)
    data["gait"] = {"period": 0.5, "offsets": [0.0, 0.5, 0.5, 0.0], "stance": 0.5, "swing": swing}
    return data


GO2_FLEX = {".*_thigh_joint": 0.5, ".*_calf_joint": -1.0}


def test_a_swing_pattern_is_read_per_foot_and_changes_the_hash(tmp_path):
    """Each flex regex is split over the feet by name (FL_calf_joint belongs to FL_foot); the pattern
    is part of the policy contract, so it changes the hash, and a clock without one keeps its own."""
    data = _go2(tmp_path)
    data["gait"] = {"period": 0.5, "offsets": [0.0, 0.5, 0.5, 0.0], "stance": 0.5}
    clock_only = _load(tmp_path, data, check_mjcf=False)
    assert clock_only.gait.swing is None and not clock_only.swing_feedforward
    spec = _load(tmp_path, _go2_swing(tmp_path, {"apex": 0.4, "flex": GO2_FLEX}), check_mjcf=False)
    swing = spec.gait.swing
    assert spec.hash != clock_only.hash and not spec.swing_feedforward
    for j, f, share in zip(swing.joints, swing.feet, swing.shares):
        name = spec.joint_names[j]
        assert spec.foot_bodies[f].split("_")[0] == name.split("_")[0]
        assert share == (0.5 if "thigh" in name else -1.0)
    assert sorted(swing.joints) == sorted(spec.joints_matching(".*_(thigh|calf)_joint"))
    ff = _load(tmp_path, _go2_swing(tmp_path, {"apex": 0.4, "flex": GO2_FLEX, "feedforward": True}),
               check_mjcf=False)
    assert ff.swing_feedforward and ff.hash != spec.hash


@pytest.mark.parametrize("swing, where, why", [
    ({"flex": GO2_FLEX}, "gait.swing.apex", "required"),
    ({"apex": 0.0, "flex": GO2_FLEX}, "gait.swing.apex", "outside the allowed range"),
    ({"apex": float("inf"), "flex": GO2_FLEX}, "gait.swing.apex", ""),
    ({"apex": 0.4, "flex": {}}, "gait.swing.flex", "needs at least one"),
    ({"apex": 0.4, "flex": {"FL_calf_joint": 1.0}}, "gait.swing.flex.FL_calf_joint",
     "must match one joint per foot"),
    ({"apex": 0.4, "flex": {"(": 1.0}}, "gait.swing.flex.(", "not a regular expression"),
    ({"apex": 0.4, "flex": {".*_calf_joint": float("nan")}}, "gait.swing.flex..*_calf_joint", ""),
    ({"apex": 0.4, "flex": {".*_calf_joint": 1.0, ".*_c.*_joint": 1.0}}, "gait.swing.flex",
     "more than one regex"),
    ({"apex": 0.4, "flex": GO2_FLEX, "feedforward": "yes"}, "gait.swing.feedforward", ""),
    ({"apex": 0.4, "flex": GO2_FLEX, "gain": 1.0}, "gait.swing.gain", "unknown key"),
], ids=["apex_missing", "apex_zero", "apex_inf", "flex_empty", "flex_one_foot", "flex_bad_regex",
        "share_nan", "joint_twice", "feedforward_not_bool", "unknown_key"])
def test_a_bad_swing_pattern_is_refused_naming_the_field(tmp_path, swing, where, why):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, _go2_swing(tmp_path, swing), check_mjcf=False)
    assert "robot.yaml" in str(err.value) and where in str(err.value) and why in str(err.value)


def test_critic_observations_are_read_in_order_and_change_the_hash(tmp_path):
    """The Go2 without them keeps its hash; with them the critic's terms are part of the contract a
    checkpoint is checked against, and exact (no noise)."""
    plain = _load(tmp_path, _go2(tmp_path), check_mjcf=False)
    assert plain.critic_observations == () and plain.hash == RobotSpec.load("go2").hash
    data = _go2(tmp_path)
    data["observations"] = [t for t in data["observations"] if t["term"] != "base_lin_vel"]
    data["critic_observations"] = [{"term": "base_lin_vel", "scale": 0.5}]
    spec = _load(tmp_path, data, check_mjcf=False)
    assert [(t.term, t.scale, t.noise) for t in spec.critic_observations] == [("base_lin_vel", 0.5, 0.0)]
    data.pop("critic_observations")
    assert spec.hash != _load(tmp_path, data, check_mjcf=False).hash


@pytest.mark.parametrize("terms, where, why", [
    ([{"term": "base_ang_vel"}], "critic_observations[0].term", "not one of"),
    ([{"term": "height_scan"}], "critic_observations[0].term", "not one of"),
    ([{"term": "base_velocity"}], "critic_observations[0].term", "not one of"),
    ([{"term": "base_lin_vel"}, {"term": "base_lin_vel"}], "critic_observations[1].term", "twice"),
    ([{"term": "base_lin_vel", "noise": 0.1}], "critic_observations[0].noise", "unknown key"),
    ([{"term": "base_lin_vel", "scale": float("nan")}], "critic_observations[0].scale", ""),
    ([], "critic_observations", "empty list"),
    ({"term": "base_lin_vel"}, "critic_observations", ""),
], ids=["policy_term", "height_scan", "unknown", "twice", "noise", "scale_nan", "empty", "not_a_list"])
def test_bad_critic_observations_are_refused_naming_the_field(tmp_path, terms, where, why):
    data = _go2(tmp_path)
    data["observations"] = [t for t in data["observations"] if t["term"] != "base_lin_vel"]
    data["critic_observations"] = terms
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data, check_mjcf=False)
    assert "robot.yaml" in str(err.value) and where in str(err.value) and why in str(err.value)


def test_robots_show_names_the_critics_own_terms(capsys):
    from deploy.cli import main

    assert main(["robots", "show", "g1"]) == 0
    assert "the critic also reads, exact, after the policy's observation (training only): " \
           "base_lin_vel" in capsys.readouterr().out
    assert main(["robots", "show", "go2"]) == 0
    assert "the critic also reads" not in capsys.readouterr().out
