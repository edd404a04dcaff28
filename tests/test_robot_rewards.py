"""The robot-side data contract: the task's reward computed on the replay writer's thread from what a
robot measures (deploy/robot_rewards.py) equals what the training env paid for the same step, and
what the Controller logs is what a fine-tuning learner needs."""
from __future__ import annotations

import numpy as np
import pytest

from robot_logs import walk_and_log

from deploy.action_map import ActionMap
from deploy.replay import ReplayReader
from deploy.rewards import TaskRewards
from deploy.robot_rewards import RobotRewards, simulated_fields
from deploy.spec import RobotSpec

pytest.importorskip("torch")
from training.envs.velocity import TaskConfig, VelocityEnv  # noqa: E402


def _logged(env: VelocityEnv, action: np.ndarray, obs: np.ndarray, next_obs: np.ndarray) -> dict:
    """What a MuJoCo-backed robot logs for env 0's step, with joint_acc as a simulator can hand it."""
    return {**simulated_fields(env.world, env.spec, action, env.command[0], next_obs=next_obs,
                               clock=float(env.clock[0]), obs=obs),
            "joint_acc": env.world.joint_acc[0]}


@pytest.mark.parametrize("robot", ["go2", "g1"])
def test_robot_path_pays_what_the_training_env_paid_for_the_same_step(robot):
    spec = RobotSpec.load(robot)
    task = TaskConfig.load("velocity_flat", spec)
    env = VelocityEnv(spec, task, 1, seed=3, randomize=False, obs_noise=False)
    obs = env.reset(seed=3, stagger=False)[0]
    robot_path = RobotRewards(spec, TaskRewards.load("velocity_flat", spec))
    amap = ActionMap(spec)
    rng = np.random.default_rng(0)
    compared = saturated = 0
    # the G1's torque term reads the step's starting joint state from the obs, float32 as logged
    tol = 1e-7 if robot_path.task.reads_pd_torque else 1e-12
    for _ in range(40):
        action = rng.uniform(amap.low, amap.high) * 0.3       # inside the bounds: no clamp,
        if spec.swing_feedforward:                            # with the swing feed-forward too
            room = amap.joint_targets(np.zeros((1, spec.num_joints)), env.clock + spec.policy_dt)[0]
            action = np.clip(action, (spec.soft_lower - room) / amap.scale * 0.99,
                             (spec.soft_upper - room) / amap.scale * 0.99)
        r = env.step(action[None])
        if r.terminated[0] or r.truncated[0]:
            break                      # the env has reset: its state is the next episode's
        fields = _logged(env, action, obs, r.obs[0])
        obs = r.obs[0]
        robot_path(fields)
        pieces = r.info["relabel"]
        # the one term a robot cannot measure (foot slip speed: the G1's feet_slide) pays 0 there
        slip = r.info["reward_terms"].get("feet_slide", 0.0)
        assert fields["reward"] == pytest.approx(float(r.reward[0]) - slip, rel=1e-9, abs=tol)
        np.testing.assert_allclose(fields["reward_velocity"], pieces["velocity"][0], rtol=1e-12)
        assert fields["reward_air"] == pytest.approx(float(pieces["air"][0]), abs=1e-12)
        assert fields["reward_base"] == pytest.approx(float(pieces["base"][0]) - slip, rel=1e-9,
                                                      abs=tol)
        saturated += r.info["reward_terms"].get("applied_torque_limits", 0.0) < 0
        np.testing.assert_allclose(fields["applied_action"], action, atol=1e-9)
        assert fields["action_filtered"] is False
        compared += 1
    env.close()
    assert compared >= 10
    assert (saturated > 0) == (robot == "g1")     # the G1's wrists asked for more than 5 N m


def test_the_torque_term_pays_what_the_targets_ask_of_the_measured_state_beyond_the_motors():
    """applied_torque_limits in the training env, recomputed by hand: each step's targets against
    the joint state the policy's observation held (noise included, as the deploy safety filter
    measures it), at the spec's gains, beyond each joint's effort limit."""
    spec = RobotSpec.load("g1")
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 3, seed=1, randomize=False,
                      obs_noise=True)
    obs = env.reset(seed=1, stagger=False)
    layout = env.pipeline.layout
    scale = {e.name: e.scale for e in layout.entries}
    weight = next(t.weight for t in env.task_rewards.terms if t.term == "applied_torque_limits")
    rng = np.random.default_rng(2)
    paid, exact_differs = [], False
    for _ in range(5):
        action = rng.uniform(env.action_low, env.action_high, (3, spec.num_joints)) * 0.3
        q = obs[:, layout.slice("joint_pos_rel")] / scale["joint_pos_rel"] + spec.default_pos
        qd = obs[:, layout.slice("joint_vel_rel")] / scale["joint_vel_rel"]
        start = env.world.read_state()
        target = env.action_map.joint_targets(action, env.clock + spec.policy_dt)
        excess = {}
        for name, (pos, vel) in {"measured": (q, qd), "exact": (start.joint_pos, start.joint_vel)}.items():
            asked = spec.kp * (target - pos) - spec.kd * vel
            excess[name] = np.maximum(np.abs(asked) - spec.effort_limit, 0.0).sum(1).mean()
        r = env.step(action)
        obs = r.obs
        term = r.info["reward_terms"]["applied_torque_limits"]
        assert term == pytest.approx(weight * spec.policy_dt * excess["measured"], rel=1e-6)
        exact_differs |= abs(excess["measured"] - excess["exact"]) > 1e-3 * excess["exact"]
        paid.append(term)
    env.close()
    assert min(paid) < 0
    assert exact_differs          # the noise mattered: the exact state would have paid otherwise


def test_joint_vel_l2_sums_the_squared_velocities_of_its_joints_only():
    """A joint_vel_l2 row on the arms, recomputed from the velocities the simulator reports after
    each step: the legs' (moving far more) would change it."""
    import re

    from deploy.config import Section
    from deploy.rewards import parse_rewards

    spec = RobotSpec.load("g1")
    task = TaskConfig.load("velocity_flat", spec)
    arms = ".*_(shoulder|elbow)_.*joint"
    row = parse_rewards(Section({"arm_vel": {"term": "joint_vel_l2", "weight": -0.01, "joints": arms}},
                                "task.yaml", "rewards.g1"), spec)
    env = VelocityEnv(spec, task, 2, seed=4, randomize=False, obs_noise=False)
    env.task_rewards = TaskRewards(tuple(env.task_rewards.terms) + tuple(row), task.tracking_sigma,
                                   spec.policy_dt)
    env.reset(seed=4, stagger=False)
    picked = [i for i, n in enumerate(spec.joint_names) if re.fullmatch(arms, n)]
    assert len(picked) == 8            # shoulder pitch, roll, yaw and elbow, each side
    rng = np.random.default_rng(5)
    for _ in range(5):
        r = env.step(rng.uniform(env.action_low, env.action_high, (2, spec.num_joints)) * 0.3)
        qd = env.world.read_state().joint_vel
        by_hand = -0.01 * spec.policy_dt * (qd[:, picked] ** 2).sum(1).mean()
        assert r.info["reward_terms"]["arm_vel"] == pytest.approx(by_hand, rel=1e-12)
        assert by_hand != pytest.approx(-0.01 * spec.policy_dt * (qd ** 2).sum(1).mean(), rel=1e-3)
    env.close()


@pytest.mark.parametrize("change, why", [
    ({"clip": 5.0}, "'joint_vel_rel' unclipped with a non-zero scale"),
    (None, "needs 'joint_vel_rel'")])
def test_the_torque_term_needs_the_joint_state_in_the_observation(change, why):
    """The robot path reads a step's starting joint state from its obs: a layout that clips it, or
    leaves it out, is refused when the reward path is built, not found wrong on the robot."""
    import dataclasses

    spec = RobotSpec.load("g1")
    rows = tuple(row for row in spec.observations if change is not None or row.term != "joint_vel_rel")
    rows = tuple(dataclasses.replace(row, **change) if change and row.term == "joint_vel_rel" else row
                 for row in rows)
    changed = dataclasses.replace(spec, observations=rows)
    with pytest.raises(ValueError, match=f"applied_torque_limits .*g1's layout .*{why}"):
        RobotRewards(changed, TaskRewards.load("velocity_flat", spec))


def test_without_a_velocity_estimate_or_contacts_the_reward_stays_unknown():
    spec = RobotSpec.load("go2")
    path = RobotRewards(spec, TaskRewards.load("velocity_flat", spec))
    j = spec.num_joints
    base = {"action": np.zeros(j), "joint_target": spec.default_pos.copy(), "command": np.zeros(3),
            "imu_gyro": np.zeros(3), "imu_quat": np.array([1.0, 0, 0, 0]), "joint_pos": spec.default_pos,
            "joint_vel": np.zeros(j), "joint_torque": np.zeros(j), "terminated": False,
            "truncated": False, "dropped": 0}
    fields = dict(base, base_lin_vel=np.full(3, np.nan), foot_force=np.full(4, 50.0))
    path(fields)
    assert "reward" not in fields and fields["foot_contact"].tolist() == [1.0] * 4
    fields = dict(base, base_lin_vel=np.zeros(3))              # no force, no contact: air time unknown
    path(fields)
    assert "reward" not in fields
    fields = dict(base, base_lin_vel=np.zeros(3), foot_force=np.array([50.0, np.nan, 50.0, 3.0]))
    path(fields)                                               # one broken sensor: unknown
    assert "reward" not in fields
    fields = dict(base, base_lin_vel=np.zeros(3), foot_force=np.array([50.0, 0.0, 50.0, 3.0]))
    path(fields)
    assert np.isfinite(fields["reward"]) and fields["foot_contact"].tolist() == [1.0, 0.0, 1.0, 0.0]
    fields = dict(base, base_lin_vel=np.zeros(3), foot_contact=np.array([1.0, np.nan, 1.0, 0.0]),
                  foot_force=np.array([90.0, np.nan, 90.0, 3.0]))     # a backend's, one unknown
    path(fields)
    assert "reward" not in fields


def test_the_controller_logs_what_a_learner_needs(tmp_path):
    """The shipped Go2 policy walks on the MuJoCo backend with the robot's replay writer; the log
    has finite rewards from the task, the applied action of the target sent, measured contacts,
    and the operator's stop as a truncation with its reason."""
    ctrl = walk_and_log(tmp_path)
    spec = ctrl.spec
    data = ReplayReader(tmp_path).load()
    f = data.fields
    assert len(data) > 100 and np.isfinite(data.rewards).all()
    np.testing.assert_allclose(f["applied_action"], (f["joint_target"] - spec.default_pos) / spec.action_scale,
                               rtol=1e-5, atol=1e-5)
    assert set(np.unique(f["foot_contact"])) <= {0.0, 1.0} and f["foot_contact"].mean() > 0.3
    walking = f["command"][:, 0] > 0.4
    assert f["reward_velocity"][walking, 0].mean() > 0.25         # it walks forward, paid for it
    assert f["end_reason"][-1] == 2 and data.truncated[-1] and not data.terminated.any()
    assert (f["end_reason"][:-1] == 0).all() and (f["exploration_scale"] == 0).all()
    assert set(f["policy_id"]) == {ctrl.bundle.id.encode()}
