"""The training-only upright assist: its torque against an independent computation, what it does
to a G1 that cannot stand on PD, its schedule, resume and its config's refusals."""
from __future__ import annotations

import mujoco
import numpy as np
import pytest

from deploy.config import ConfigError
from deploy.sim_world import SimWorld
from deploy.spec import RobotSpec
from train_profiles import cpu_profile_with
from training.config import UprightAssist, load_train_config


@pytest.fixture(scope="module")
def g1():
    return RobotSpec.load("g1")


def _hold_default(world: SimWorld, spec: RobotSpec, ticks: int) -> None:
    for _ in range(ticks):
        world.set_targets(np.tile(spec.default_pos, (world.n, 1)))
        world.step(spec.decimation)


def test_a_g1_on_pd_falls_without_the_assist_and_stays_up_with_it(g1):
    """On PD at Unitree's gains alone the G1 falls within 3 s (configs/robots/g1.yaml stand);
    pulled upright at 400 N m/rad it is still standing, level, after 5 s."""
    alone, assisted = SimWorld(g1, 2), SimWorld(g1, 2)
    assisted.set_upright_assist(400.0)
    _hold_default(alone, g1, 150)
    _hold_default(assisted, g1, 250)
    assert (alone.base_pos[:, 2] < g1.termination.min_base_height + 0.1).all()
    assert (assisted.base_pos[:, 2] > 0.7).all()
    up = [np.asarray(sh.data.xmat[sh.idx.base_body]).reshape(-1, 3, 3)[:, 2, 2] for sh in assisted.shards]
    assert (np.concatenate(up) > np.cos(0.1)).all()


def test_the_torque_pulls_roll_and_pitch_upright_and_leaves_yaw_free(g1):
    """At a tilted, spinning pose the base gets K (z_body x z_world) - 2 sqrt(K) w on x and y
    (w the base's world-frame angular velocity) and nothing about z; off, nothing at all."""
    world = SimWorld(g1, 1)
    sh = world.shards[0]
    half = 0.15 / 2                                              # 0.15 rad about an axis in xy
    axis = np.array([0.6, 0.8, 0.0])
    sh.data.qpos[sh.idx.free_qpos[0] + 3:sh.idx.free_qpos[0] + 7] = [np.cos(half), *(np.sin(half) * axis)]
    sh.data.qvel[sh.idx.free_dof[0] + 3:sh.idx.free_dof[0] + 6] = [0.3, -0.2, 1.5]   # body frame
    mujoco.mj_forward(sh.model, sh.data)       # the pose the torque reads, as after any step
    world.set_upright_assist(250.0)
    world.step(1)
    # the torque was computed from the state before the step: redo it by hand from that state
    rot = _rotation(np.cos(half), np.sin(half) * axis)
    z_body = rot[:, 2]
    rate = rot @ np.array([0.3, -0.2, 1.5])
    expected = 250.0 * np.cross(z_body, [0, 0, 1]) - 2 * np.sqrt(250.0) * np.array([rate[0], rate[1], 0.0])
    np.testing.assert_allclose(sh.data.xfrc_applied[sh.idx.base_body[0], 3:], expected, rtol=1e-9, atol=1e-9)
    assert np.dot(np.cross(z_body, [0, 0, 1]), axis) < 0        # back against the tilt
    world.set_upright_assist(0.0)
    assert not sh.data.xfrc_applied[sh.idx.base_body[0], 3:].any()


def _rotation(w: float, v: np.ndarray) -> np.ndarray:
    x, y, z = v
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_the_assist_fades_by_iteration_number():
    assist = UprightAssist(400.0, (100.0, 300.0))
    assert [assist.at(i) for i in (0, 100, 150, 200, 300, 5000)] == [400.0, 400.0, 300.0, 200.0, 0.0, 0.0]


@pytest.mark.parametrize("value, words", [
    ({"stiffness": 400, "fade": [300, 100]}, r"upright_assist.fade: low 300.0 is above high 100.0"),
    ({"stiffness": 400, "fade": [100, 100]}, r"upright_assist.fade: \[from, to\] needs to > from"),
    ({"stiffness": 0, "fade": [0, 100]}, r"upright_assist.stiffness: 0.0 is outside the allowed range"),
    ({"stiffness": float("nan"), "fade": [0, 100]}, r"upright_assist.stiffness: nan is not a finite number"),
    ({"stiffness": 400}, r"upright_assist.fade: required key is missing"),
    ({"stiffness": 400, "fade": [0, 100], "yaw": True}, r"upright_assist.yaw: unknown key \(allowed: stiffness, fade\)"),
])
def test_bad_upright_assist_is_refused_naming_the_field(tmp_path, value, words):
    path = cpu_profile_with(tmp_path / "bad.yaml", upright_assist=value)
    with pytest.raises(ConfigError, match=words):
        load_train_config(path)


def test_training_sets_each_iterations_stiffness_and_evaluation_never_gets_it(tmp_path, g1):
    """The trainer sets the schedule's stiffness before collecting each iteration (iteration 2
    of a fade over [1, 3]: half), in the training env only."""
    from training.envs.velocity import TaskConfig, VelocityEnv
    from training.runner import Trainer
    from training.sac import SACConfig
    from training.smoke import smoke_config

    cfg = smoke_config(num_envs=2, max_iterations=3, updates_per_iteration=1, batch_size=16,
                       sim_threads=1, upright_assist=UprightAssist(300.0, (1.0, 3.0)),
                       sac=SACConfig(actor_hidden=(16,), critic_hidden=(16,)))
    task = TaskConfig.load("velocity_flat", g1)
    env = VelocityEnv(g1, task, 2, seed=0)
    eval_env = VelocityEnv(g1, task, 2, seed=1, randomize=False, obs_noise=False)
    trainer = Trainer(cfg, g1, env, eval_env, tmp_path / "run", "velocity_flat")
    trainer.train(max_iterations=3, show_progress=False)
    assert [sh.assist for sh in env.world.shards] == [150.0]
    assert [sh.assist for sh in eval_env.world.shards] == [0.0]


def test_the_isaaclab_backend_refuses_the_assist(tmp_path):
    import subprocess
    import sys

    path = cpu_profile_with(tmp_path / "assist.yaml", start_at_command=False,
                            upright_assist={"stiffness": 400, "fade": [0, 100]})
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "train", "--robot", "g1", "--backend",
                          "isaaclab", "--config", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "upright_assist: the MuJoCo training env's aid; the IsaacLab backend has none" in out.stderr
