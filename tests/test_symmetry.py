"""Left-right mirror augmentation: the maps are derived correctly (checked against MuJoCo physics:
a mirrored robot, driven by mirrored actions, produces the mirrored observations and the same
reward), and robots or layouts it cannot mirror are refused by name."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from g1_policy import without_feedforward

from deploy.action_map import ActionMap
from deploy.observations import ObservationPipeline
from deploy.spec import ROBOTS_DIR, RobotSpec
from training.envs.velocity import TaskConfig, VelocityEnv
from training.replay_buffer import Batch
from training.symmetry import Mirror, SymmetryError, joint_mirror, mirror_name

ROBOTS = ["go2", "anymal_d", "g1"]


def test_names_pair_across_the_conventions_of_each_vendor():
    assert mirror_name("FL_hip_joint") == "FR_hip_joint"        # Unitree: front/rear, then side
    assert mirror_name("RR_calf_joint") == "RL_calf_joint"
    assert mirror_name("LH_KFE") == "RH_KFE"                    # ANYbotics: side, then fore/hind
    assert mirror_name("RF_HAA") == "LF_HAA"
    assert mirror_name("left_ankle_roll_joint") == "right_ankle_roll_joint"
    assert mirror_name("waist_yaw_joint") == "waist_yaw_joint"


def test_signs_come_from_the_joint_axes():
    """Hand-checked: abduction (x axis), roll and yaw joints negate; pitch joints (y axis) keep."""
    for robot, expected in {
        "go2": {("FL_hip_joint", "FR_hip_joint"): -1, ("RL_thigh_joint", "RR_thigh_joint"): 1,
                ("FR_calf_joint", "FL_calf_joint"): 1},
        "anymal_d": {("LF_HAA", "RF_HAA"): -1, ("LH_HFE", "RH_HFE"): 1, ("RH_KFE", "LH_KFE"): 1},
        "g1": {("waist_yaw_joint", "waist_yaw_joint"): -1, ("left_hip_roll_joint", "right_hip_roll_joint"): -1,
               ("left_knee_joint", "right_knee_joint"): 1, ("right_hip_pitch_joint", "left_hip_pitch_joint"): 1},
    }.items():
        spec = RobotSpec.load(robot)
        partner, sign = joint_mirror(spec)
        names = list(spec.joint_names)
        for (a, b), s in expected.items():
            i = names.index(a)
            assert (names[partner[i]], sign[i]) == (b, s), (robot, a)


@pytest.mark.parametrize("robot", ROBOTS)
def test_mirror_twice_is_the_identity(robot):
    spec = RobotSpec.load(robot)
    m = Mirror.build(spec, ObservationPipeline(spec).layout)
    obs = torch.randn(5, ObservationPipeline(spec).dim)
    act = torch.randn(5, spec.num_joints)
    assert torch.equal(m.obs(m.obs(obs)), obs) and not torch.allclose(m.obs(obs), obs)
    assert torch.equal(m.actions(m.actions(act)), act) and not torch.allclose(m.actions(act), act)


def _np(mirror_fn, x: np.ndarray) -> np.ndarray:
    """The Mirror's own map applied to numpy data (in float64: the signs are exact +-1)."""
    return mirror_fn(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()


@pytest.mark.parametrize("robot", ["go2", "g1"])
def test_a_mirrored_robot_sees_mirrored_observations_and_earns_the_same_reward(robot):
    """Robot 1 starts as robot 0's mirror image (tilted, turning, joints off default) with the
    mirrored command and gets the mirrored actions; MuJoCo must keep it the mirror image. A wrong
    sign or pair anywhere in the maps makes the two diverge at once. The G1 runs without its swing
    feed-forward: the feet it lifts land a tick apart on the two robots at random (contact timing),
    which says nothing about the maps; the last test mirrors the feed-forward itself."""
    spec = without_feedforward(RobotSpec.load(robot))
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 2, seed=0, threads=1,
                      randomize=False, obs_noise=False)
    m = Mirror.build(spec, env.critic_layout)      # the G1's critic sees base_lin_vel besides
    rng = np.random.default_rng(1)
    q0 = np.clip(spec.default_pos + rng.uniform(-0.15, 0.15, spec.num_joints), spec.soft_lower, spec.soft_upper)
    quat0 = np.array([0.98, 0.06, -0.05, 0.18])
    quat0 /= np.linalg.norm(quat0)
    vel0 = np.array([0.3, -0.2, 0.05, 0.4, -0.3, 0.6])
    flip_quat, flip_vel = np.array([1, -1, 1, -1]), np.array([1, -1, 1, -1, 1, -1])
    env.reset(seed=0, stagger=False)
    if spec.gait is not None:       # the mirrored clock: the other foot's, half a cycle on
        env.episode_step[1] = round(spec.gait.period / 2 / spec.policy_dt)
    env.world.reset(np.arange(2), joint_pos=np.stack([q0, _np(m.actions, q0)]),
                    base_quat=np.stack([quat0, quat0 * flip_quat]), base_vel=np.stack([vel0, vel0 * flip_vel]))
    command = np.array([0.6, 0.3, -0.5])
    env.command[:] = [command, command * [1, -1, -1]]
    obs = env._observe()
    np.testing.assert_allclose(obs[1], _np(m.obs, obs[0]), atol=1e-6)
    wrong = m.obs_sign.clone()
    wrong[env.pipeline.layout.slice("last_action").stop - 1] *= -1   # one joint's sign wrong there
    env.action[:] = [np.full(spec.num_joints, 0.5), _np(m.actions, np.full(spec.num_joints, 0.5))]
    obs = env._observe()
    assert np.abs(obs[1] - _np(dataclasses.replace(m, obs_sign=wrong).obs, obs[0])).max() > 0.5
    lo, hi = env.action_low, env.action_high
    for _ in range(20):
        a0 = np.clip(rng.uniform(-0.5, 0.5, spec.num_joints), lo, hi)
        result = env.step(np.stack([a0, _np(m.actions, a0)]))
        assert not (result.terminated | result.truncated).any()
        np.testing.assert_allclose(result.obs[1], _np(m.obs, result.obs[0]),
                                   atol=2e-2)  # MuJoCo's contacts are symmetric to ~1e-2 rad/s
        assert result.reward[1] == pytest.approx(result.reward[0], abs=1e-3)  # contact timing
    env.close()


def test_augment_mirrors_about_half_the_batch_and_keeps_returns():
    spec = RobotSpec.load("go2")
    m = Mirror.build(spec, ObservationPipeline(spec).layout)
    n, d, j = 512, ObservationPipeline(spec).dim, spec.num_joints
    batch = Batch(obs=torch.randn(n, d), actions=torch.randn(n, j), returns=torch.randn(n),
                  bootstrap=torch.rand(n), next_obs=torch.randn(n, d))
    out = m.augment(batch, torch.Generator().manual_seed(0))
    flipped = ~(out.obs == batch.obs).all(dim=1)
    assert 0.4 < flipped.float().mean() < 0.6
    assert torch.equal(out.obs[flipped], m.obs(batch.obs[flipped]))
    assert torch.equal(out.actions[flipped], m.actions(batch.actions[flipped]))
    assert torch.equal(out.next_obs[flipped], m.obs(batch.next_obs[flipped]))
    assert torch.equal(out.actions[~flipped], batch.actions[~flipped])
    assert out.returns is batch.returns and out.bootstrap is batch.bootstrap


def test_a_term_without_a_mirror_rule_is_refused_by_name():
    spec = RobotSpec.load("go2")
    with pytest.raises(SymmetryError, match="no rule for observation term 'height_scan'"):
        Mirror.build(spec, ObservationPipeline(spec, height_scan=True).layout)


def test_an_asymmetric_default_pose_is_refused_naming_the_joint(tmp_path):
    data = yaml.safe_load((ROBOTS_DIR / "go2.yaml").read_text())
    data["mjcf"] = str((ROBOTS_DIR / data["mjcf"]).resolve())
    data["joints"][1]["default"] = -0.2            # FR_hip_joint; FL_hip_joint keeps 0.1
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SymmetryError, match=r"joints\.FL_hip_joint: default is not the mirror of that of 'FR_hip_joint'"):
        joint_mirror(RobotSpec.load(path))


def test_the_swing_feed_forward_of_the_mirrored_clock_is_the_mirrored_feed_forward():
    """The mirror maps a G1's clock half a cycle on (the other foot's): the feed-forward the action
    map adds there must be the mirror image of this clock's, or mirrored batches would teach the
    policy to fight its own steps."""
    spec = RobotSpec.load("g1")
    m = Mirror.build(spec, ObservationPipeline(spec).layout)
    amap = ActionMap(spec)
    clock = np.linspace(0.0, 2 * spec.gait.period, 41)
    action = np.random.default_rng(2).uniform(-0.5, 0.5, (41, spec.num_joints))
    here = amap.joint_targets(action, clock)
    there = amap.joint_targets(_np(m.actions, action), clock + spec.gait.period / 2)
    default = np.tile(spec.default_pos, (41, 1))
    mirrored = default + _np(m.actions, (here - default) / spec.action_scale) * spec.action_scale
    np.testing.assert_allclose(there, mirrored, atol=1e-12)
    moved = np.abs(spec.gait.joint_offsets(clock, spec.num_joints)).max(0)
    assert set(np.flatnonzero(moved > 0.4)) == set(spec.gait.swing.joints)
