"""The one update loop (training/learner.py) that pretraining and fine-tuning share: batch shares
from weighted sources, schedules, the update-to-data ratio, and that the Trainer's updates are the
Learner's (same batches, same result as calling the agent directly)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from training.learner import Learner, Source, concat_batches, split_batch
from training.replay_buffer import ReplayBuffer
from training.sac import SAC, SACConfig

OBS, ACT = 5, 2


def _agent(seed: int = 0) -> SAC:
    torch.manual_seed(seed)
    cfg = SACConfig(actor_hidden=(16,), critic_hidden=(16,), n_step=3)
    return SAC(OBS, -np.ones(ACT), np.ones(ACT), cfg)


def _filled(marker: float, rows: int = 64, num_envs: int = 2) -> ReplayBuffer:
    """A buffer whose observations all start with `marker`, so a batch shows where it came from."""
    buf = ReplayBuffer(rows * num_envs, num_envs, OBS, ACT)
    g = torch.Generator().manual_seed(int(marker * 10) + 1)
    for _ in range(rows):
        obs = torch.randn(num_envs, OBS, generator=g)
        obs[:, 0] = marker
        nxt = torch.randn(num_envs, OBS, generator=g)
        nxt[:, 0] = marker
        buf.add(obs, torch.rand(num_envs, ACT, generator=g) * 2 - 1,
                torch.randn(num_envs, generator=g), nxt, torch.zeros(num_envs, dtype=torch.bool),
                torch.zeros(num_envs, dtype=torch.bool))
    return buf


def _source(name: str, buf: ReplayBuffer, weight=1.0) -> Source:
    return Source(name, lambda size, gen: buf.sample(size, 3, 0.9, gen), weight)


@pytest.mark.parametrize("size, weights, expected", [
    (10, [1, 1], [5, 5]), (10, [1, 0], [10, 0]), (7, [1, 1, 1], [3, 2, 2]), (256, [0.3, 0.7], [77, 179]),
    (5, [0, 2], [0, 5])])
def test_split_batch_gives_proportional_integer_shares_that_sum_to_the_batch(size, weights, expected):
    shares = split_batch(size, weights)
    assert sum(shares) == size and sorted(shares) == sorted(expected)
    exact = [size * w / sum(weights) for w in weights]
    assert all(abs(s - x) < 1 for s, x in zip(shares, exact))


def test_split_batch_refuses_all_zero_weights():
    with pytest.raises(ValueError, match="every source has weight 0"):
        split_batch(8, [0, 0])


def test_batches_mix_sources_by_weight_and_follow_a_schedule():
    sim, robot = _filled(1.0), _filled(2.0)
    robot_steps = {"n": 0}
    prior = lambda: max(0.0, 0.5 * (1 - robot_steps["n"] / 100))     # 50 % falling to 0 over 100 steps
    learner = Learner(_agent(), [_source("prior", sim, prior), _source("robot", robot,
                                                                        lambda: 1 - prior())],
                      batch_size=40, generator=torch.Generator().manual_seed(0))
    batch = learner.sample()
    assert int((batch.obs[:, 0] == 1.0).sum()) == 20 and int((batch.obs[:, 0] == 2.0).sum()) == 20
    robot_steps["n"] = 50
    batch = learner.sample()
    assert int((batch.obs[:, 0] == 1.0).sum()) == 10 and int((batch.obs[:, 0] == 2.0).sum()) == 30
    robot_steps["n"] = 150
    assert bool((learner.sample().obs[:, 0] == 2.0).all())
    assert learner.drawn == {"prior": 30, "robot": 90}


def test_a_negative_or_nan_weight_is_refused_naming_the_source():
    learner = Learner(_agent(), [_source("robot", _filled(1.0), lambda: float("nan"))], 8,
                      torch.Generator())
    with pytest.raises(ValueError, match="source 'robot'"):
        learner.sample()


def test_concat_keeps_every_field_in_order():
    a, b = _filled(1.0).sample(3, 3, 0.9), _filled(2.0).sample(4, 3, 0.9)
    both = concat_batches([a, b])
    assert both.obs.shape[0] == 7 and torch.equal(both.returns, torch.cat([a.returns, b.returns]))
    assert torch.equal(both.bootstrap[3:], b.bootstrap) and torch.equal(both.next_obs[:3], a.next_obs)


def test_learner_update_is_the_agents_update_on_the_same_batches():
    """No second copy of the update: n Learner updates equal n agent.update calls on the batches the
    same generator draws, parameter for parameter."""
    buf = _filled(1.0)
    direct, via = _agent(), _agent()
    via.load_state_dict(copy.deepcopy(direct.state_dict()))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    torch.manual_seed(3)                 # the actor draws its reparameterised samples globally
    for _ in range(4):
        direct.update(buf.sample(16, 3, 0.9, g1))
    learner = Learner(via, [_source("sim", buf)], 16, g2)
    torch.manual_seed(3)
    logs = learner.update(4)
    assert learner.updates == 4 and "loss/critic" in logs
    for (name, p), q in zip(direct.state_dict().items(), via.state_dict().values()):
        assert torch.equal(p, q), name


def test_augmentation_sees_every_batch():
    seen = []
    learner = Learner(_agent(), [_source("sim", _filled(1.0))], 8, torch.Generator(),
                      augment=lambda b, g: seen.append(b.obs.shape[0]) or b)
    learner.update(3)
    assert seen == [8, 8, 8]


def test_update_to_data_ratio_limits_updates_to_what_the_data_buys():
    learner = Learner(_agent(), [_source("robot", _filled(1.0))], 8, torch.Generator(), utd=0.5)
    assert learner.due(0) == 0 and learner.due(7) == 3
    learner.update(learner.due(7))
    assert learner.due(7) == 0 and learner.due(8) == 1
    restored = Learner(_agent(), [_source("robot", _filled(1.0))], 8, torch.Generator(), utd=0.5)
    restored.load_state_dict(learner.state_dict())
    assert restored.due(8) == 1 and restored.drawn == {"robot": 24}
    with pytest.raises(ValueError, match="update-to-data ratio"):
        Learner(_agent(), [_source("robot", _filled(1.0))], 8, torch.Generator(), utd=float("inf"))
