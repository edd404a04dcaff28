"""Each term of one SAC update against an independent computation on a tiny hand-made batch
(rsl_rl_sac.md Eq. 2-4, 11): the critic target (min of the twin targets, entropy bonus of a' drawn
at s'), the critic loss of every member, the actor loss on min Q, the temperature loss, Polyak on the
targets only, and the normalizer fed by `observe` alone.

The reference below re-implements the networks from their raw weights (plain matrix products), the
squashed Gaussian from its formula and the normalizer from the observed data, so a slip in the
learner's code cannot cancel out in the comparison. Both draw the same standard normals: seeded alike,
the update samples eps' (for s') first and eps (for s) second."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.networks import EnsembleLinear
from training.replay_buffer import Batch
from training.sac import SAC, NonFiniteError, SACConfig

LOW, HIGH = np.array([-1.0, -0.5]), np.array([1.0, 2.0])   # asymmetric: the anchor is not zero
OBSERVED = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -2.0], [2.5, 3.0, 0.0], [-0.5, 1.0, 4.0]])
SEED = 7


def _agent(privileged: int = 0, obs_noise: np.ndarray | None = None, **over) -> SAC:
    """`privileged`: that many of the observation's last columns are the critic's alone."""
    torch.manual_seed(0)
    cfg = dict(actor_hidden=(8,), critic_hidden=(8, 8), init_alpha=0.3, init_std=0.5,
               max_grad_norm=1e4, target_entropy_scale=0.5, tau=0.2)
    agent = SAC(3 - privileged, LOW, HIGH, SACConfig(**{**cfg, **over}), privileged, obs_noise)
    agent.observe(OBSERVED)
    with torch.no_grad():   # targets that differ from the online critics, members that differ
        for p in agent.critic.q_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
        for p in agent.actor.head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return agent


def _batch() -> Batch:
    """Five transitions: two uncut 2-step windows, a failure (no bootstrap), a timeout after one
    step (gamma^1) and one with a large reward."""
    return Batch(obs=torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [-2.0, 0.3, 1.0],
                                   [0.0, 0.0, 0.0], [3.0, 1.0, -1.0]]),
                 actions=torch.tensor([[0.5, 1.5], [-0.9, -0.4], [0.0, 0.0], [0.2, 1.9], [-0.3, 0.7]]),
                 returns=torch.tensor([1.0, -0.5, 2.0, 0.3, 10.0]),
                 bootstrap=torch.tensor([0.9801, 0.9801, 0.0, 0.99, 0.9801]),
                 next_obs=torch.tensor([[0.4, -0.2, 1.3], [2.0, 1.0, -0.5], [-1.0, -1.0, 2.0],
                                        [1.0, 2.0, -3.0], [0.5, 0.5, 0.5]]))


# ---- the reference -------------------------------------------------------------------------------
def _normalize(x: torch.Tensor) -> torch.Tensor:
    """Each column by the statistics of its own column of OBSERVED (a prefix of them: the actor's)."""
    cols = x.shape[-1]
    mean, var = OBSERVED.mean(0)[:cols], OBSERVED.var(0, unbiased=False)[:cols]
    return (x - mean) / torch.sqrt(var + 1e-2)


def _ref_policy(actor, obs: torch.Tensor, eps: torch.Tensor):
    """a = b + c tanh(mu + sigma eps + x0) and log pi(a), from the weights and the formula."""
    h = _normalize(obs)
    for layer in actor.trunk:
        h = F.silu(h) if isinstance(layer, torch.nn.SiLU) else h @ layer.weight.T + layer.bias
    out = h @ actor.head.weight.T + actor.head.bias
    mean, log_std = out[:, :2], out[:, 2:].clamp(-10.0, 2.0)
    std = log_std.exp()
    low, high = torch.tensor(LOW, dtype=torch.float32), torch.tensor(HIGH, dtype=torch.float32)
    b, c = (high + low) / 2, (high - low) / 2
    u = mean + std * eps + torch.atanh(-b / c)
    gauss = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    logp = (gauss - torch.log(c * (1 - torch.tanh(u).pow(2)))).sum(-1)
    return b + c * torch.tanh(u), logp


def _ref_q(ensemble, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """(members, B): each member's MLP evaluated on its own weights."""
    layers = [m for m in ensemble.net if isinstance(m, EnsembleLinear)]
    x = torch.cat([_normalize(obs), act], -1)
    values = []
    for e in range(len(layers[0].weight)):
        h = x
        for i, layer in enumerate(layers):
            h = h @ layer.weight[e] + layer.bias[e, 0]
            h = F.silu(h) if i < len(layers) - 1 else h
        values.append(h[:, 0])
    return torch.stack(values)


def _eps(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(SEED)
    return torch.randn(n, 2), torch.randn(n, 2)


def _update(agent: SAC, batch: Batch) -> dict:
    torch.manual_seed(SEED)
    return agent.update(batch)


def _ref_critic_loss(before: SAC, batch: Batch, policy_cols: int = 3) -> torch.Tensor:
    """The critic reads every column; the policy that draws a' only the first `policy_cols`."""
    eps_next, _ = _eps()
    alpha = math.exp(before.temperature.log_alpha.item())
    with torch.no_grad():
        a_next, logp_next = _ref_policy(before.actor, batch.next_obs[:, :policy_cols], eps_next)
        q_next = _ref_q(before.critic.q_target, batch.next_obs, a_next)
        y = batch.returns + batch.bootstrap * (torch.minimum(q_next[0], q_next[1]) - alpha * logp_next)
    q = _ref_q(before.critic.q, batch.obs, batch.actions)
    return ((q[0] - y).pow(2).mean() + (q[1] - y).pow(2).mean()) / 2


def _grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() for p in params]


def _close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6), (g, w)


# ---- the tests -----------------------------------------------------------------------------------
def test_critic_loss_and_gradient_of_both_members_match_the_reference_target():
    agent, batch = _agent(), _batch()
    before = copy.deepcopy(agent)
    logs = _update(agent, batch)
    loss = _ref_critic_loss(before, batch)
    params = list(before.critic.q.parameters())
    want = torch.autograd.grad(loss, params)
    assert float(logs["loss/critic"]) == pytest.approx(loss.item(), rel=1e-5)
    _close(_grads(agent.critic.q.parameters()), list(want))
    for w in want:                      # both members get a gradient
        assert all(float(m.abs().sum()) > 0 for m in w)


def test_an_asymmetric_critic_reads_the_privileged_column_and_the_actor_never_does():
    """The spec's critic_observations: the last column is the critic's alone. The critic loss and
    gradient match the reference with the critic on all three normalized columns and a' drawn from
    the first two; changing the privileged column moves the critic's input, never an action."""
    agent, batch = _agent(privileged=1), _batch()
    before = copy.deepcopy(agent)
    logs = _update(agent, batch)
    loss = _ref_critic_loss(before, batch, policy_cols=2)
    assert float(logs["loss/critic"]) == pytest.approx(loss.item(), rel=1e-5)
    _close(_grads(agent.critic.q.parameters()),
           list(torch.autograd.grad(loss, list(before.critic.q.parameters()))))
    moved = batch.obs.clone()
    moved[:, 2] += 5.0
    for deterministic in (True, False):
        torch.manual_seed(1)
        a = agent.act(batch.obs, deterministic=deterministic)
        torch.manual_seed(1)
        assert torch.equal(a, agent.act(moved, deterministic=deterministic))
    assert not torch.allclose(agent.critic_input(batch.obs), agent.critic_input(moved))
    assert torch.allclose(agent.critic_input(batch.obs), _normalize(batch.obs))


def test_actor_loss_climbs_the_minimum_of_the_updated_critics():
    agent, batch = _agent(), _batch()
    before = copy.deepcopy(agent)
    logs = _update(agent, batch)
    _, eps = _eps()
    alpha = math.exp(before.temperature.log_alpha.item())
    a, logp = _ref_policy(before.actor, batch.obs, eps)
    q = _ref_q(agent.critic.q, batch.obs, a)           # the critic after this update's critic step
    loss = (alpha * logp - torch.minimum(q[0], q[1])).mean()
    want = torch.autograd.grad(loss, list(before.actor.parameters()))
    assert float(logs["loss/actor"]) == pytest.approx(loss.item(), rel=1e-5)
    assert float(logs["policy/entropy"]) == pytest.approx(-logp.mean().item(), rel=1e-5)
    _close(_grads(agent.actor.parameters()), list(want))
    for p in agent.critic.q.parameters():     # the actor's loss leaves the critic's gradient alone
        assert p.requires_grad


@pytest.mark.parametrize("privileged", [0, 1])
def test_smoothness_adds_the_distance_between_mean_actions_under_a_fresh_noise_draw(privileged):
    """CAPS's spatial term: weight x mean ||mu(s) - mu(s + d)||, d uniform within each policy
    column's noise half-width (the second column has none), drawn after the actor's eps; the
    privileged column is never perturbed nor read."""
    noise = np.array([0.5, 0.0, 2.0])[:3 - privileged]
    agent, batch = _agent(privileged, noise, smoothness=0.7), _batch()
    before = copy.deepcopy(agent)
    logs = _update(agent, batch)
    torch.manual_seed(SEED)
    torch.randn(5, 2), torch.randn(5, 2)
    draw = torch.rand(5, 3 - privileged)
    _, eps = _eps()
    cols = 3 - privileged
    obs = batch.obs[:, :cols]
    alpha = math.exp(before.temperature.log_alpha.item())
    a, logp = _ref_policy(before.actor, obs, eps)
    q = _ref_q(agent.critic.q, batch.obs, a)
    zero = torch.zeros(5, 2)
    noisy = obs + (2 * draw - 1) * torch.tensor(noise, dtype=torch.float32)
    smooth = torch.linalg.vector_norm(_ref_policy(before.actor, obs, zero)[0]
                                      - _ref_policy(before.actor, noisy, zero)[0], dim=-1).mean()
    loss = (alpha * logp - torch.minimum(q[0], q[1])).mean() + 0.7 * smooth
    assert smooth.detach().item() > 1e-3
    assert float(logs["loss/smoothness"]) == pytest.approx(smooth.item(), rel=1e-5)
    assert float(logs["loss/actor"]) == pytest.approx(loss.item(), rel=1e-5)
    _close(_grads(agent.actor.parameters()), list(torch.autograd.grad(loss, list(before.actor.parameters()))))


def test_smoothness_without_the_observation_noise_is_refused():
    with pytest.raises(ValueError, match=r"SACConfig.smoothness 0.5 needs the observation's noise"):
        _agent(smoothness=0.5)
    with pytest.raises(ValueError, match=r"one per policy column \(3\); got \(2,\)"):
        _agent(obs_noise=np.zeros(2), smoothness=0.5)
    assert "loss/smoothness" not in _update(_agent(), _batch())


def test_temperature_gradient_is_minus_the_entropy_gap():
    agent, batch = _agent(), _batch()
    before = copy.deepcopy(agent)
    logs = _update(agent, batch)
    _, eps = _eps()
    _, logp = _ref_policy(before.actor, batch.obs, eps)
    target = -0.5 * 2                                          # -scale * action_dim
    gap = (logp + target).mean().item()
    log_alpha = before.temperature.log_alpha.item()
    assert agent.temperature.log_alpha.grad.item() == pytest.approx(-gap, rel=1e-5)
    assert float(logs["loss/alpha"]) == pytest.approx(-log_alpha * gap, rel=1e-5)
    moved = agent.temperature.log_alpha.item() - log_alpha
    assert moved != 0 and math.copysign(1, moved) == math.copysign(1, gap)
    assert float(logs["policy/alpha"]) == pytest.approx(math.exp(log_alpha), rel=1e-6)


def test_polyak_moves_only_the_targets_towards_the_updated_critics():
    agent, batch = _agent(tau=0.2), _batch()
    before = copy.deepcopy(agent)
    _update(agent, batch)
    for old, online, new in zip(before.critic.q_target.parameters(), agent.critic.q.parameters(),
                                agent.critic.q_target.parameters()):
        assert torch.allclose(new, 0.8 * old + 0.2 * online, atol=1e-6)
    for old, new in zip(before.critic.q.parameters(), agent.critic.q.parameters()):
        assert not torch.equal(old, new)
        step = (new - old).abs().max().item()        # Adam's first step is lr per element
        assert step == pytest.approx(agent.cfg.critic_lr, rel=0.05)


def test_the_normalizer_learns_from_observe_only():
    agent, batch = _agent(), _batch()
    stats = {k: v.clone() for k, v in agent.state_dict().items() if "norm" in k}
    assert stats
    for key, value in stats.items():
        if key.endswith("mean"):
            assert torch.allclose(value, OBSERVED.mean(0))
        elif key.endswith("var"):
            assert torch.allclose(value, OBSERVED.var(0, unbiased=False))
    _update(agent, batch)
    after = agent.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in stats.items())
    agent.observe(batch.obs)
    assert not all(torch.equal(v, agent.state_dict()[k]) for k, v in stats.items())


def test_policy_frequency_skips_actor_and_temperature_but_never_the_critic():
    agent, batch = _agent(policy_frequency=2), _batch()
    _update(agent, batch)
    mid = copy.deepcopy(agent)
    logs = _update(agent, batch)
    assert "loss/actor" not in logs and "loss/alpha" not in logs
    assert all(torch.equal(a, b) for a, b in zip(mid.actor.parameters(), agent.actor.parameters()))
    assert torch.equal(mid.temperature.log_alpha, agent.temperature.log_alpha)
    assert not any(torch.equal(a, b) for a, b in zip(mid.critic.q.parameters(), agent.critic.q.parameters()))
    logs = _update(agent, batch)
    assert "loss/actor" in logs
    assert int(agent.num_updates) == 3


def test_the_second_update_trains_the_critic_again():
    agent, batch = _agent(), _batch()
    _update(agent, batch)
    before = copy.deepcopy(agent)
    _update(agent, batch)
    want = torch.autograd.grad(_ref_critic_loss(before, batch), list(before.critic.q.parameters()))
    _close(_grads(agent.critic.q.parameters()), list(want))


def test_a_fixed_temperature_stays_and_is_used_in_the_target():
    agent, batch = _agent(auto_alpha=False, init_alpha=0.05), _batch()
    before = copy.deepcopy(agent)
    logs = _update(agent, batch)
    assert "loss/alpha" not in logs
    assert agent.temperature.log_alpha.item() == pytest.approx(math.log(0.05))
    assert float(logs["loss/critic"]) == pytest.approx(_ref_critic_loss(before, batch).item(), rel=1e-5)


def test_gradients_are_clipped_to_max_grad_norm():
    agent, batch = _agent(max_grad_norm=1e-3), _batch()
    _update(agent, batch)
    for params in (agent.critic.q.parameters(), agent.actor.parameters()):
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        assert norm.item() == pytest.approx(1e-3, rel=1e-3)


def test_a_non_finite_reward_stops_the_update_naming_it():
    agent, batch = _agent(), _batch()
    batch.returns[2] = float("nan")
    with pytest.raises(NonFiniteError, match="critic_loss at update 0"):
        _update(agent, batch)
