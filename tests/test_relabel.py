"""Hindsight command relabeling: what a stored step would have earned under another command must
be exactly what the env pays for that command, and a relabeled sample must be an exact target for
its new command (a 1-step one: later actions were drawn for the original command)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from train_profiles import cpu_profile_with

from deploy.spec import RobotSpec
from training.config import load_train_config
from training.envs.gym_adapter import GymVecEnv
from training.envs.velocity import TaskConfig, VelocityEnv
from training.relabel import FIELDS, CommandRelabel, RelabelError
from training.replay_buffer import ReplayBuffer
from training.runner import Trainer
from training.smoke import smoke_config


def _env(robot: str, n: int = 8) -> VelocityEnv:
    spec = RobotSpec.load(robot)
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), n, seed=5)
    env.reset(seed=5)
    return env


@pytest.mark.parametrize("robot", ["go2", "anymal_d", "g1"])
def test_stored_pieces_give_back_the_paid_reward(robot):
    """Under the command that was in force, the pieces reproduce the env's reward, in numpy and
    in torch; the air-time piece is not always zero (the gate is exercised)."""
    env = _env(robot)
    rng = np.random.default_rng(0)
    air_seen = False
    for _ in range(150):
        command = env.command.copy()
        r = env.step(rng.normal(0.0, 0.4, (env.num_envs, env.spec.num_joints)))
        pieces = r.info["relabel"]
        np.testing.assert_allclose(env.command_reward(command, **pieces), r.reward, atol=1e-12)
        as_t = {k: torch.as_tensor(v) for k, v in pieces.items()}
        np.testing.assert_allclose(env.command_reward(torch.as_tensor(command), **as_t).numpy(),
                                   r.reward, atol=1e-12)
        air_seen |= bool(np.any(pieces["air"] != 0))
    assert air_seen


@pytest.mark.parametrize("robot", ["go2", "g1"])
def test_the_reward_under_another_command_is_what_the_env_pays_for_it(robot):
    """Step once, rewind the env (physics, RNG), give it other commands (one below the moving gate,
    one backward, one turning), step with the same actions: the env's reward equals the relabeled one."""
    env = _env(robot, 3)
    rng = np.random.default_rng(1)
    for _ in range(40):
        env.step(rng.normal(0.0, 0.4, (3, env.spec.num_joints)))
    actions = rng.normal(0.0, 0.4, (3, env.spec.num_joints))
    saved = env.state_dict()
    pieces = env.step(actions).info["relabel"]
    other = np.array([[0.05, 0.0, 0.0], [-0.8, 0.2, 0.0], [0.0, 0.0, -0.9]])
    env.load_state_dict(saved)
    env.command[:] = other
    paid = env.step(actions).reward
    np.testing.assert_allclose(env.command_reward(other, **pieces), paid, atol=1e-12)
    env.load_state_dict(saved)
    assert not np.allclose(env.step(actions).reward, paid)   # the command does change the reward


def _buffer_with_known_window():
    """One env, 6 steps: velocities ramp backward, step 3 ends the episode (a failure)."""
    env = _env("go2", 1)
    gen = torch.Generator().manual_seed(0)
    relabel = CommandRelabel.build(env, 1.0, gen, torch.device("cpu"))
    buf = ReplayBuffer(64, 1, env.obs_dim, 12, extras=FIELDS)
    vel = torch.tensor([[-0.2, 0.1, 0.3], [-0.4, 0.1, 0.3], [-0.6, 0.7, 0.3], [-0.8, 0.1, 0.3],
                        [2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    for t in range(6):
        obs = torch.full((1, env.obs_dim), float(t))
        buf.add(obs, torch.zeros(1, 12), torch.tensor([0.5]), obs + 0.5,
                torch.tensor([t == 3]), torch.tensor([False]),
                {"velocity": vel[t:t + 1], "air": torch.tensor([0.01 * t]), "base": torch.tensor([-0.1])})
    return env, relabel, buf, vel


def _paid(command: torch.Tensor, vel: torch.Tensor, t: int) -> float:
    """The Go2 flat task's command-dependent reward of stored step t (air 0.01 t, base -0.1)."""
    return (-0.1 + 0.03 * np.exp(-float(((command[:2] - vel[t, :2]) ** 2).sum()) / 0.25)
            + 0.015 * np.exp(-float((command[2] - vel[t, 2]) ** 2) / 0.25) + 0.01 * t)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_a_relabeled_sample_is_an_exact_one_step_target_for_its_reached_command(n):
    """Whatever n, a relabeled sample evaluates only its stored first action: the first reward
    under the new command, bootstrapped with gamma from that step's s~'; the command is the
    velocity reached over the (uncut) window."""
    env, relabel, buf, vel = _buffer_with_known_window()
    gamma = 0.9
    plain = buf.gather(torch.tensor([1]), torch.tensor([0]), n, gamma)
    new = buf.gather(torch.tensor([1]), torch.tensor([0]), n, gamma, relabel)
    # window rows 1..min(n, 3) survive (row 3 fails): the command averages those steps
    reached = vel[1:1 + min(n, 3)].mean(0)
    command = torch.maximum(torch.minimum(reached, relabel.high), relabel.low)
    assert new.returns.item() == pytest.approx(_paid(command, vel, 1), rel=1e-5)
    assert new.bootstrap.item() == pytest.approx(gamma)
    assert plain.returns.item() == pytest.approx(sum(0.5 * gamma ** k for k in range(min(n, 3))), rel=1e-6)
    slot = relabel.slot
    assert torch.allclose(new.obs[0, slot], command) and torch.allclose(new.next_obs[0, slot], command)
    keep = torch.ones(env.obs_dim, dtype=torch.bool)
    keep[slot] = False
    assert torch.equal(new.obs[0, keep], plain.obs[0, keep])
    assert torch.equal(new.next_obs[0, keep], torch.full((int(keep.sum()),), 1.5))   # s~' of row 1


def test_a_relabeled_failure_is_still_not_bootstrapped():
    env, relabel, buf, vel = _buffer_with_known_window()
    new = buf.gather(torch.tensor([3]), torch.tensor([0]), 3, 0.9, relabel)     # row 3 fails
    assert new.bootstrap.item() == 0.0
    assert new.returns.item() == pytest.approx(_paid(vel[3], vel, 3), rel=1e-5)


def test_reached_commands_are_clipped_to_the_spec_ranges():
    env, relabel, buf, vel = _buffer_with_known_window()
    batch = buf.gather(torch.tensor([4]), torch.tensor([0]), 2, 0.9, relabel)   # reached (2, 2, 2)
    assert batch.obs[0, relabel.slot].tolist() == pytest.approx(env.spec.commands.high.tolist())


def test_the_fraction_decides_how_many_samples_get_a_new_command():
    env, _, buf, _ = _buffer_with_known_window()
    gen = torch.Generator().manual_seed(3)
    half = CommandRelabel.build(env, 0.5, gen, torch.device("cpu"))
    rows = torch.zeros(4000, dtype=torch.long)
    plain = buf.gather(rows, torch.zeros_like(rows), 3, 0.9)
    mixed = buf.gather(rows, torch.zeros_like(rows), 3, 0.9, half)
    changed = (mixed.returns != plain.returns)
    assert 0.45 < changed.float().mean().item() < 0.55
    moved = (mixed.obs[:, half.slot] != plain.obs[:, half.slot]).any(1)
    assert torch.equal(changed, moved)
    none = CommandRelabel.build(env, 0.0, gen, torch.device("cpu"))
    assert torch.equal(buf.gather(rows, torch.zeros_like(rows), 3, 0.9, none).returns, plain.returns)


def test_an_env_without_commands_is_refused_by_name(tmp_path):
    env = GymVecEnv("Pendulum-v1", 2, seed=0)
    with pytest.raises(RelabelError, match="command_relabel: GymVecEnv has no velocity command"):
        Trainer(smoke_config(command_relabel=0.5), None, env, None, tmp_path, "pendulum")


def test_a_replay_saved_without_relabel_fields_is_refused(tmp_path):
    env = _env("go2", 2)
    old = ReplayBuffer(64, 2, env.obs_dim, 12)
    new = ReplayBuffer(64, 2, env.obs_dim, 12, extras=FIELDS)
    with pytest.raises(ValueError, match=r"saved with extra fields \[\], this run needs \['air', 'base', "
                                         r"'velocity'\] \(command_relabel changed\?\)"):
        new.load_state_dict(old.state_dict())


@pytest.mark.parametrize("bad", [1.5, -0.1, "half"])
def test_command_relabel_must_be_a_fraction(tmp_path, bad):
    path = cpu_profile_with(tmp_path / "bad.yaml", command_relabel=bad)
    with pytest.raises(Exception, match=r"bad\.yaml: command_relabel: "):
        load_train_config(path)
