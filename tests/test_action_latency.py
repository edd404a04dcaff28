"""Action latency in the training env (domain_randomization.action_latency_s): each robot's new
targets reach its actuators a drawn number of physics steps late, as a robot's bus delays them."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deploy.backends.mujoco_backend import Randomization, SimConditions
from deploy.config import ConfigError, Section
from deploy.spec import RobotSpec
from training.envs.velocity import TaskConfig, VelocityEnv


def _env(latency: tuple[float, float], n: int = 5, seed: int = 4) -> VelocityEnv:
    spec = RobotSpec.load("go2")
    task = TaskConfig.load("velocity_flat", spec)
    task = dataclasses.replace(task, randomization=dataclasses.replace(
        task.randomization, action_latency_s=latency))
    env = VelocityEnv(spec, task, n, seed=seed)
    env.reset(seed=seed)
    return env


def test_each_robot_holds_its_previous_targets_for_its_latency():
    """Stepped by hand instead: the old targets for L physics steps, the new ones for the rest.
    Robot i gets latency i (0 = none, 4 = a whole policy step, the new targets arrive next step)."""
    env = _env((0.0, 0.02))
    rng = np.random.default_rng(1)
    for _ in range(3):
        env.step(rng.uniform(-1, 1, (5, 12)))
    env.latency_substeps[:] = np.arange(5)
    before = env.state_dict()
    actions = rng.uniform(-1, 1, (5, 12))
    held = env.targets.copy()
    new = env.action_map.joint_targets(actions, env.clock + env.spec.policy_dt)
    env.step(actions)
    stepped = env.world.read_state().joint_pos

    ref = _env((0.0, 0.02))
    for late in range(5):
        ref.load_state_dict(before)
        ref.world.set_targets(held)
        ref.world.step(late)
        ref.world.set_targets(new)
        ref.world.step(4 - late)
        np.testing.assert_array_equal(stepped[late], ref.world.read_state().joint_pos[late])
    assert not np.allclose(stepped[0], stepped[2])   # the delay changed what the robot did
    np.testing.assert_array_equal(env.targets, new)  # what the next step holds until it is due


def test_latency_is_drawn_per_episode_in_physics_steps_within_its_range():
    env = _env((0.004, 0.016), n=64)             # sim_dt 5 ms: 0.8 ... 3.2 physics steps
    assert set(env.latency_substeps.tolist()) == {1, 2, 3}
    none = _env((0.0, 0.0), n=64)
    assert not none.latency_substeps.any()
    plain = VelocityEnv(none.spec, TaskConfig.load("velocity_flat", none.spec), 64, seed=4)
    plain.reset(seed=4)                            # no range: the env's random stream is unchanged
    np.testing.assert_array_equal(plain.command, none.command)


def test_a_checkpoint_from_before_latency_resumes_with_the_targets_the_actuators_hold():
    env = _env((0.01, 0.02))
    env.step(np.random.default_rng(2).uniform(-1, 1, (5, 12)))
    state = env.state_dict()
    del state["targets"], state["latency_substeps"]
    restored = _env((0.01, 0.02), seed=9)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.targets, env.world.targets)
    assert not restored.latency_substeps.any()


@pytest.mark.parametrize("bad", [[0.02, 0.01], [-0.01, 0.0], [0.0, 0.5], [0.0, float("nan")],
                                 [0.0, float("inf")], [0.01], "0.01"])
def test_a_bad_latency_range_names_the_field(bad):
    section = Section({"friction": [1, 1], "added_base_mass": [0, 0], "motor_strength": [1, 1],
                       "push_interval_s": [10, 15], "push_velocity": 0.5, "action_latency_s": bad},
                      "configs/tasks/velocity_flat.yaml", "domain_randomization")
    with pytest.raises(ConfigError, match="action_latency_s"):
        Randomization.from_section(section)


def test_the_simulated_robot_draws_its_latency_from_the_same_range():
    ranges = Randomization(action_latency_s=(0.005, 0.015))
    rng = np.random.default_rng(0)
    drawn = [SimConditions.randomized(rng, ranges).action_latency_s for _ in range(50)]
    assert 0.005 <= min(drawn) < max(drawn) <= 0.015
    assert SimConditions.randomized(rng, ranges, action_latency_s=0.0).action_latency_s == 0.0
    a, b = np.random.default_rng(3), np.random.default_rng(3)   # no range: nothing more drawn
    SimConditions.randomized(a, Randomization())
    assert a.random() == (b.uniform(1, 1), b.uniform(0, 0), b.uniform(1, 1), b.random())[-1]
