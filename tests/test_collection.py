"""What the runner stores while collecting (rsl_rl_sac.md Sec. 3.4, Eq. 9-10): every transition's
next observation is the state the action led to (the pre-reset one where an episode timed out, never
the next episode's first), timeouts are stored as bootstrappable, and the stored actions are samples
of the stochastic policy, not its mean."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deploy.spec import RobotSpec
from training.envs.gym_adapter import GymVecEnv
from training.envs.velocity import TaskConfig, VelocityEnv
from training.runner import Trainer
from training.sac import SACConfig
from training.smoke import smoke_config


def _pendulum_next(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Gymnasium's Pendulum-v1 dynamics (g 10, m 1, l 1, dt 0.05, |u| <= 2, |w| <= 8)."""
    th, w = np.arctan2(obs[:, 1], obs[:, 0]), obs[:, 2]
    u = np.clip(action[:, 0], -2.0, 2.0)
    w = np.clip(w + (3 * 10.0 / 2 * np.sin(th) + 3.0 * u) * 0.05, -8.0, 8.0)
    th = th + w * 0.05
    return np.stack([np.cos(th), np.sin(th), w], 1)


def _pendulum_trainer(tmp_path, init_std: float) -> Trainer:
    env = GymVecEnv("Pendulum-v1", 3, seed=0)
    cfg = smoke_config(num_envs=3, steps_per_env=210, buffer_size=3 * 210, learning_starts=10**6,
                       sac=SACConfig(actor_hidden=(16,), critic_hidden=(16,), init_std=init_std))
    return Trainer(cfg, RobotSpec.load("go2", check_mjcf=False), env, None, tmp_path, "pendulum", seed=0)


def test_every_stored_next_obs_follows_from_obs_and_action_across_timeouts(tmp_path):
    trainer = _pendulum_trainer(tmp_path, 0.5)
    trainer._collect()
    buf = trainer.buffer
    obs, act = buf.obs[:buf.size].reshape(-1, 3).numpy(), buf.actions[:buf.size].reshape(-1, 1).numpy()
    want = _pendulum_next(obs, act)
    assert np.allclose(buf.next_obs[:buf.size].reshape(-1, 3).numpy(), want, atol=1e-4)
    timeouts = buf.timeouts[:buf.size]
    assert timeouts[199].all() and int(timeouts.sum()) == 3         # Pendulum's 200-step limit
    assert bool(buf.dones[199].all()) and not bool(buf.dones[:199].any())
    after = buf.obs[200].numpy()                                      # the next episodes' first states
    assert not np.allclose(after, buf.next_obs[199].numpy(), atol=1e-2)
    batch = buf.gather(torch.full((3,), 198), torch.arange(3), 3, 0.9)
    assert torch.allclose(batch.bootstrap, torch.full((3,), 0.81))   # cut at the timeout, bootstrapped
    assert torch.equal(batch.next_obs, buf.next_obs[199])


def test_collection_stores_samples_of_the_stochastic_policy(tmp_path):
    trainer = _pendulum_trainer(tmp_path, 0.5)
    trainer._collect()
    buf, actor, agent = trainer.buffer, trainer.agent.actor, trainer.agent
    obs = buf.obs[:buf.size].reshape(-1, 3)
    act = buf.actions[:buf.size].reshape(-1, 1)
    with torch.no_grad():
        mean, log_std = actor.distribution_params(agent.actor_norm(obs))
    # a = b + c tanh(mu + sigma eps + x0): recover eps. The normalizer moved during collection,
    # so eps is only approximately standard normal for the early steps; the later ones are exact.
    late = slice(len(obs) // 2, None)
    x = torch.atanh(((act - actor.center) / actor.half_range).clamp(-0.999999, 0.999999)) - actor.anchor
    eps = ((x - mean) / log_std.exp())[late].flatten()
    assert abs(eps.mean().item()) < 0.2
    assert 0.8 < eps.std().item() < 1.2
    assert abs(torch.corrcoef(torch.stack([eps[:-3], eps[3:]]))[0, 1].item()) < 0.2   # white, by env


def test_the_go2_runner_stores_the_pre_reset_observation_at_a_timeout(tmp_path):
    """MuJoCo: episodes 6 steps long; the observation's last-action slot says which state was
    stored (the pre-reset one holds the action just taken, the next episode's first holds zeros)."""
    spec = RobotSpec.load("go2")
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 4, seed=3, threads=1,
                      randomize=False, obs_noise=False)
    env.max_steps = 6
    cfg = smoke_config(num_envs=4, steps_per_env=14, buffer_size=4 * 14, learning_starts=10**6,
                       sac=SACConfig(actor_hidden=(16,), critic_hidden=(16,)))
    trainer = Trainer(cfg, spec, env, None, tmp_path, "velocity_flat", seed=3)
    trainer._collect()
    buf = trainer.buffer
    entry = next(e for e in env.pipeline.layout.entries if e.name == "last_action")
    slot = slice(entry.offset, entry.offset + entry.dim)
    joints = next(e for e in env.pipeline.layout.entries if e.name == "joint_pos_rel")
    pose = slice(joints.offset, joints.offset + joints.dim)
    timeouts = buf.timeouts[:buf.size]
    failed = buf.dones[:buf.size] & ~timeouts
    assert int(timeouts.sum()) >= 4
    for row, env_i in timeouts.nonzero().tolist():
        taken = buf.actions[row, env_i] * entry.scale
        assert torch.allclose(buf.next_obs[row, env_i, slot], taken, atol=1e-5)
        if row + 1 < buf.size:    # the next episode starts from the reset pose, not the last one
            assert torch.equal(buf.obs[row + 1, env_i, slot], torch.zeros(entry.dim))
            assert not torch.allclose(buf.obs[row + 1, env_i, pose], buf.next_obs[row, env_i, pose], atol=1e-3)
    alive = ~buf.dones[:buf.size]
    rows, envs = alive[:-1].nonzero().T
    assert torch.equal(buf.next_obs[rows, envs], buf.obs[rows + 1, envs])   # no reset: s' is s_{t+1}
    assert not bool(failed.any()) or math.isfinite(float(buf.rewards.sum()))


@pytest.mark.parametrize("steps", [1, 3])
def test_the_observation_after_a_step_holds_the_command_it_will_be_scored_on(steps):
    """The observation a step returns is computed after commands are resampled and pushes applied:
    the command slot equals the command the next reward uses."""
    spec = RobotSpec.load("go2")
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 8, seed=1, threads=1,
                      obs_noise=False)
    env.reset(seed=1)
    env.command_timer[:] = np.linspace(0.0, 0.1, 8)       # some envs resample at this very step
    entry = next(e for e in env.pipeline.layout.entries if e.name == "velocity_commands")
    for _ in range(steps):
        result = env.step(np.zeros((8, spec.num_joints)))
        seen = result.obs[:, entry.offset:entry.offset + entry.dim] / entry.scale
        assert np.allclose(seen, env.command, atol=1e-6)
