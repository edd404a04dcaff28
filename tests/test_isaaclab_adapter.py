"""The IsaacLab adapter against a stand-in that follows ManagerBasedRLEnv's API and step order
(tests/isaaclab_standin.py; IsaacLab cannot run here: no GPU, no Isaac Sim)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from g1_policy import without_feedforward

from deploy.config import ConfigError
from deploy.spec import RobotSpec
from tests.isaaclab_standin import ActionTerm, JointPositionActionCfg, ManagerBasedRLEnv
from training.envs.base import corrected_next_obs
from training.envs.isaaclab import TASK_IDS, IsaacLabVecEnv, task_id, with_pre_reset_obs
from training.isaaclab_parity import parity_report


def test_pre_reset_observation_is_returned_for_timed_out_envs():
    spec = RobotSpec.load("go2", check_mjcf=False)
    env = IsaacLabVecEnv(with_pre_reset_obs(ManagerBasedRLEnv)(spec), spec)
    env.reset()
    results = [env.step(torch.zeros(3, 12)) for _ in range(4)]
    r = results[1]                          # envs 1, 2 reach state 2 -> failure at step 2
    assert r.terminated.tolist() == [False, True, True]
    last = results[3]                       # env 0 times out at step 4 with state -6
    assert last.truncated.tolist() == [True, False, False]
    assert float(last.final_obs[0, 0]) == -6.0     # the state it reached, not the reset one
    assert float(last.obs[0, 0]) == -10.0
    assert float(corrected_next_obs(last)[0, 0]) == -6.0


def test_joint_order_mismatch_is_refused_by_name():
    spec = RobotSpec.load("go2", check_mjcf=False)
    raw = with_pre_reset_obs(ManagerBasedRLEnv)(spec)
    names = raw.scene["robot"].data.joint_names
    names[0], names[1] = names[1], names[0]
    with pytest.raises(ConfigError, match=r"joint order differs at index 0: IsaacLab \['FR_hip_joint'\]"):
        IsaacLabVecEnv(raw, spec)


def test_observation_layout_mismatch_is_refused():
    spec = RobotSpec.load("go2", check_mjcf=False)
    raw = with_pre_reset_obs(ManagerBasedRLEnv)(spec)
    om = raw.observation_manager
    om.active_terms["policy"], om.group_obs_term_dim["policy"] = om.active_terms["policy"][1:], \
        om.group_obs_term_dim["policy"][1:]
    with pytest.raises(ConfigError, match="IsaacLab policy observations"):
        IsaacLabVecEnv(raw, spec)


def test_action_scale_mismatch_is_refused():
    spec = RobotSpec.load("go2", check_mjcf=False)
    raw = with_pre_reset_obs(ManagerBasedRLEnv)(spec)
    raw.action_manager._terms["joint_pos"] = ActionTerm(JointPositionActionCfg(0.5))
    with pytest.raises(ConfigError, match="IsaacLab scales actions by 0.5"):
        IsaacLabVecEnv(raw, spec)
    raw.action_manager._terms["joint_pos"] = ActionTerm(JointPositionActionCfg({".*_hip_joint": 0.25}))
    with pytest.raises(ConfigError, match="IsaacLab scales actions per joint"):
        IsaacLabVecEnv(raw, spec)


def test_checkpoint_records_the_articulations_joint_order_and_resume_refuses_another():
    spec = RobotSpec.load("go2", check_mjcf=False)
    env = IsaacLabVecEnv(with_pre_reset_obs(ManagerBasedRLEnv)(spec), spec)
    state = env.state_dict()
    assert state == {"backend": "isaaclab", "joint_names": spec.joint_names}
    env.load_state_dict(state)
    swapped = list(state["joint_names"])
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(ConfigError, match="does not match this IsaacLab articulation's joints"):
        env.load_state_dict({**state, "joint_names": swapped})
    with pytest.raises(ConfigError, match="checkpoint env state 'mujoco'"):
        env.load_state_dict({"backend": "mujoco"})


def test_task_ids_per_robot_and_major_version():
    for robot in ("go2", "anymal_d", "g1"):
        spec = RobotSpec.load(robot, check_mjcf=False)
        two, three = task_id(spec, "velocity_flat", "2"), task_id(spec, "velocity_flat", "3")
        assert two.endswith("-v0") and not three.endswith("-v0") and "Flat" in three
        assert three == TASK_IDS[(robot, "velocity_flat")]["3"]
    spec = RobotSpec.load("go2", check_mjcf=False)
    with pytest.raises(ConfigError, match="IsaacLab 4.x is not supported"):
        task_id(spec, "velocity_flat", "4")
    with pytest.raises(ConfigError, match="no IsaacLab task for go2/stairs"):
        task_id(spec, "stairs", "3")


def test_a_spec_whose_swing_pattern_is_a_feed_forward_is_refused_naming_the_field():
    """The G1's spec adds its swing pattern to the targets (gait.swing.feedforward); IsaacLab's joint
    position action would not, so the policy would be trained for another robot."""
    spec = RobotSpec.load("g1", check_mjcf=False)
    with pytest.raises(ConfigError, match=r"g1.yaml: gait.swing.feedforward: IsaacLab task for g1: "
                                          r"IsaacLab's joint position action adds no swing pattern"):
        IsaacLabVecEnv(with_pre_reset_obs(ManagerBasedRLEnv)(spec), spec)


def test_a_spec_with_critic_observations_is_refused_naming_the_field():
    """The G1's critic reads base_lin_vel besides the policy's observation (critic_observations);
    this adapter hands the critic IsaacLab's policy group only."""
    spec = without_feedforward(RobotSpec.load("g1", check_mjcf=False))
    with pytest.raises(ConfigError, match=r"g1.yaml: critic_observations: IsaacLab task for g1: "
                                          r"this adapter hands the critic IsaacLab's policy group"):
        IsaacLabVecEnv(with_pre_reset_obs(ManagerBasedRLEnv)(spec), spec)


def test_parity_report_reads_the_articulation_and_the_policy_group():
    spec = dataclasses.replace(without_feedforward(RobotSpec.load("g1", check_mjcf=False)),
                               critic_observations=())
    env = IsaacLabVecEnv(with_pre_reset_obs(ManagerBasedRLEnv)(spec), spec)
    report = parity_report(env, "Isaac-Velocity-Flat-G1", "3.0.0")
    assert report["joint_names"] == spec.joint_names and len(report["joint_names"]) == 29
    assert report["action_scale"] == spec.action_scale and report["parity"] is True
    layout = env.pipeline.layout
    assert [n for n, _ in report["observations"]][-4:] == ["joint_pos", "joint_vel", "actions",
                                                          "gait_phase"]
    assert [d for _, d in report["observations"]] == [[e.dim] for e in layout.entries]
    assert report["layout_hash"] == layout.hash


def test_parity_command_without_isaaclab_says_so_and_exits_2():
    run = subprocess.run([sys.executable, "-m", "training.isaaclab_parity", "--robot", "g1"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert run.returncode == 2
    assert "g1.yaml: backend: IsaacLab is not installed here" in run.stderr
