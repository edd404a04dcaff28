"""The SAC core against hand-computed expectations (rsl_rl_sac.md Sec. 3.2-3.5)."""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from training.actor import SquashedGaussianActor
from training.critic import TwinQCritic
from training.networks import EmpiricalNormalizer
from training.replay_buffer import ReplayBuffer
from training.sac import SAC, SACConfig
from training.temperature import EntropyTemperature

GAMMA = 0.9


def _buffer(rewards, dones, timeouts, capacity=None, num_envs=1):
    """One env; obs_t = [t], next_obs_t = [100 + t] so a test can read which state was bootstrapped."""
    T = len(rewards)
    buf = ReplayBuffer(capacity or T, num_envs, 1, 1)
    for t in range(T):
        buf.add(torch.full((num_envs, 1), float(t)), torch.zeros(num_envs, 1),
                torch.full((num_envs,), float(rewards[t])), torch.full((num_envs, 1), 100.0 + t),
                torch.tensor([bool(dones[t])] * num_envs), torch.tensor([bool(timeouts[t])] * num_envs))
    return buf


def _sample_at(buf, row, n):
    return buf.gather(torch.tensor([row]), torch.tensor([0]), n, GAMMA)


def test_n_step_return_without_episode_end():
    buf = _buffer([1, 2, 3, 4, 5, 6], [0] * 6, [0] * 6)
    b = _sample_at(buf, 0, 3)
    assert b.returns.item() == pytest.approx(1 + 0.9 * 2 + 0.81 * 3)
    assert b.bootstrap.item() == pytest.approx(0.9 ** 3)
    assert b.next_obs.item() == 102.0      # s~ after the third step


def test_n_step_return_stops_at_a_failure_and_does_not_bootstrap():
    buf = _buffer([1, 2, 3, 4, 5, 6], [0, 1, 0, 0, 0, 0], [0] * 6)
    b = _sample_at(buf, 0, 4)
    assert b.returns.item() == pytest.approx(1 + 0.9 * 2)   # rewards after the failure excluded
    assert b.bootstrap.item() == 0.0
    assert b.bootstrap.item() == 0.0


def test_n_step_return_at_a_timeout_bootstraps_from_the_pre_reset_state():
    buf = _buffer([1, 2, 3, 4, 5, 6], [0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0])
    b = _sample_at(buf, 1, 4)
    assert b.returns.item() == pytest.approx(2 + 0.9 * 3)   # next episode's rewards excluded
    assert b.bootstrap.item() == pytest.approx(0.9 ** 2)    # gamma^(k+1) S_k b_{t+k}, k = 1
    assert b.next_obs.item() == 102.0                        # the stored pre-reset observation


def test_n_step_window_never_reads_past_the_write_position():
    buf = _buffer([1, 2, 3, 4], [0] * 4, [0] * 4, capacity=8)
    b = _sample_at(buf, 2, 5)                               # rows 2, 3 exist; 4.. are not written
    assert b.returns.item() == pytest.approx(3 + 0.9 * 4)
    assert b.bootstrap.item() == pytest.approx(0.9 ** 2)
    assert b.next_obs.item() == 103.0


def test_n_step_window_respects_the_write_head_after_wrapping():
    buf = _buffer([1, 2, 3, 4, 5, 6], [0] * 6, [0] * 6, capacity=4)  # rows hold t = 4, 5, 2, 3
    b = _sample_at(buf, 3, 5)   # t = 3, then rows 0 (t=4), 1 (t=5); row 2 is the oldest: stop
    assert b.returns.item() == pytest.approx(4 + 0.9 * 5 + 0.81 * 6)
    assert b.next_obs.item() == 105.0
    assert b.bootstrap.item() == pytest.approx(0.9 ** 3)


def test_sampled_returns_never_mix_episodes_or_cross_the_head():
    """Randomized check of every sample against a direct loop over the stored rows."""
    rng = np.random.default_rng(0)
    T = 50
    dones = rng.random(T) < 0.2
    timeouts = dones & (rng.random(T) < 0.5)
    rewards = rng.normal(size=T)
    buf = _buffer(rewards, dones, timeouts, capacity=32)
    order = [(buf.ptr + i) % buf.rows for i in range(buf.size)]       # oldest first
    stored_t = {row: T - buf.size + i for i, row in enumerate(order)}
    batch = buf.sample(500, 5, GAMMA)
    for i in range(500):
        t0 = int(batch.obs[i].item())
        ret, k = 0.0, 0
        while True:
            t = t0 + k
            ret += GAMMA ** k * rewards[t]
            if dones[t] or k == 4 or t == T - 1:
                break
            k += 1
        assert t0 in stored_t.values()
        assert batch.returns[i].item() == pytest.approx(ret, abs=1e-5)
        expect_boot = 0.0 if (dones[t] and not timeouts[t]) else GAMMA ** (k + 1)
        assert batch.bootstrap[i].item() == pytest.approx(expect_boot, abs=1e-6)


def test_add_refuses_a_timeout_that_is_not_done():
    buf = ReplayBuffer(4, 1, 1, 1)
    with pytest.raises(ValueError, match="timed-out"):
        buf.add(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 1),
                torch.tensor([False]), torch.tensor([True]))


def _actor(low=(-1.0, -0.5, -2.0), high=(1.0, 2.0, 0.5), sigma0=0.15):
    torch.manual_seed(0)
    return SquashedGaussianActor(4, np.array(low), np.array(high), [32, 32], init_std=sigma0)


def test_log_prob_matches_numerical_change_of_variables():
    """log pi(a) = log N(x) - log |det da/dx|, the Jacobian taken by finite differences."""
    actor = _actor()
    obs = torch.randn(64, 4, dtype=torch.float64)
    actor = actor.double()
    mean, log_std = actor.distribution_params(obs)
    x = mean + log_std.exp() * torch.randn_like(mean)
    analytic = actor.log_prob(x, mean, log_std)
    eps = 1e-6
    jac = (actor.squash(x + eps) - actor.squash(x - eps)) / (2 * eps)   # diagonal map
    gauss = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(-1)
    numeric = gauss - torch.log(jac.abs()).sum(-1)
    assert torch.allclose(analytic, numeric, atol=1e-5)


def test_log_prob_is_finite_deep_in_the_tanh_tails():
    actor = _actor().double()
    x = torch.tensor([[30.0, -30.0, 15.0]], dtype=torch.float64)
    lp = actor.log_prob(x, torch.zeros_like(x), torch.zeros_like(x))
    assert torch.isfinite(lp).all()


def test_actions_stay_inside_the_per_joint_bounds():
    actor = _actor()
    a, _ = actor(torch.randn(4096, 4) * 50)
    low, high = torch.tensor([-1.0, -0.5, -2.0]), torch.tensor([1.0, 2.0, 0.5])
    assert bool(((a >= low) & (a <= high)).all())


def test_initial_std_is_sigma0_on_every_dimension_for_any_observation():
    actor = _actor(sigma0=0.15)
    _, log_std = actor.distribution_params(torch.randn(256, 4) * 10)
    assert torch.allclose(log_std.exp(), torch.full_like(log_std, 0.15), atol=1e-7)


def test_initial_actions_are_the_default_pose_even_with_asymmetric_bounds():
    actor = _actor(low=(-1.0, -0.5, -4.5), high=(1.0, 2.0, 2.3))
    a = actor.deterministic(torch.randn(256, 4))
    assert a.abs().max() < 0.25                       # near env action 0, the default joint pose
    assert actor.center.abs().max() > 1.0             # where a zero-mean squash would start
    assert not torch.allclose(actor.center, torch.zeros(3))


def test_initial_mean_head_has_zero_bias_and_small_weights():
    actor = _actor()
    d = actor.act_dim
    assert torch.all(actor.head.bias[:d] == 0)
    assert 0 < actor.head.weight[:d].abs().max() < 0.1
    assert torch.all(actor.head.weight[d:] == 0)


def test_temperature_rises_when_entropy_is_below_target_and_falls_above():
    temp = EntropyTemperature(action_dim=4, init_alpha=0.1, target_entropy_scale=1.0)  # H_target = -4
    low_entropy_logp = torch.full((8,), 10.0)      # entropy -10 < -4
    temp.loss(low_entropy_logp).backward()
    assert temp.log_alpha.grad.item() < 0          # gradient descent increases log alpha
    temp.log_alpha.grad = None
    temp.loss(torch.full((8,), -10.0)).backward()  # entropy 10 > -4
    assert temp.log_alpha.grad.item() > 0


def test_polyak_update_moves_targets_by_tau():
    torch.manual_seed(0)
    critic = TwinQCritic(3, 2, [8])
    before = [p.clone() for p in critic.q_target.parameters()]
    with torch.no_grad():
        for p in critic.q.parameters():
            p.add_(1.0)
    critic.update_target(0.1)
    for old, online, new in zip(before, critic.q.parameters(), critic.q_target.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * online, atol=1e-6)


def test_twin_critics_are_independent_members():
    critic = TwinQCritic(3, 2, [8])
    q = critic.q_values(torch.randn(5, 3), torch.randn(5, 2))
    assert q.shape == (2, 5)
    assert not torch.allclose(q[0], q[1])


def test_normalizer_matches_the_batch_statistics():
    norm = EmpiricalNormalizer(3, eps=0.0)
    data = torch.randn(1000, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([2.0, -1.0, 0.0])
    for chunk in data.split(77):
        norm.update(chunk)
    assert torch.allclose(norm.mean, data.mean(0), atol=1e-5)
    assert torch.allclose(norm.var, data.var(0, unbiased=False), rtol=1e-4)


def _random_buffer() -> ReplayBuffer:
    """64 random transitions of 4 envs (obs 4, actions 2), none ending: enough to sample updates."""
    buf = ReplayBuffer(64, 4, 4, 2)
    for _ in range(16):
        buf.add(torch.randn(4, 4), torch.rand(4, 2), torch.randn(4), torch.randn(4, 4),
                torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
    return buf


def test_update_changes_every_part_and_stays_finite():
    torch.manual_seed(0)
    agent = SAC(4, -np.ones(2), np.ones(2), SACConfig(actor_hidden=(16,), critic_hidden=(16,)))
    buf = _random_buffer()
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    logs = agent.update(buf.sample(32, 3, 0.97))
    after = agent.state_dict()
    for key in ("actor.head.weight", "critic.q.net.0.weight", "temperature.log_alpha",
                "critic.q_target.net.0.weight"):
        assert not torch.equal(before[key], after[key]), key
    assert all(math.isfinite(float(v)) for v in logs.values())


def test_a_loaded_state_keeps_the_loading_agents_learning_rates():
    """Resuming or fine-tuning with other rates must use them; Adam's moments come from the state."""
    torch.manual_seed(0)
    small = dict(actor_hidden=(16,), critic_hidden=(16,))
    source = SAC(4, -np.ones(2), np.ones(2), SACConfig(**small))
    buf = _random_buffer()
    source.update(buf.sample(32, 3, 0.97))
    target = SAC(4, -np.ones(2), np.ones(2), SACConfig(actor_lr=1e-5, critic_lr=2e-5, alpha_lr=3e-6, **small))
    target.load_full_state(source.full_state())
    assert [g["lr"] for o in (target.actor_opt, target.critic_opt, target.alpha_opt)
            for g in o.param_groups] == [1e-5, 2e-5, 3e-6]
    for name in ("actor_opt", "critic_opt"):
        a, b = getattr(source, name).state_dict()["state"], getattr(target, name).state_dict()["state"]
        assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)


def test_bf16_update_follows_the_fp32_update():
    """Mixed precision is a speed switch, not another algorithm: one update from the same state
    moves the parameters in nearly the same direction as the fp32 update."""
    deltas = {}
    for amp in ("none", "bf16"):
        torch.manual_seed(0)
        agent = SAC(8, -np.ones(3), np.ones(3), SACConfig(actor_hidden=(64, 64), critic_hidden=(64, 64),
                                                         amp=amp, actor_lr=1e-2, critic_lr=1e-2))
        buf = ReplayBuffer(256, 4, 8, 3)
        gen = torch.Generator().manual_seed(1)
        for _ in range(32):
            buf.add(torch.randn(4, 8, generator=gen), torch.rand(4, 3, generator=gen) * 2 - 1,
                    torch.randn(4, generator=gen), torch.randn(4, 8, generator=gen),
                    torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
        before = torch.nn.utils.parameters_to_vector(agent.parameters()).clone()
        torch.manual_seed(2)
        agent.update(buf.sample(64, 3, 0.97, torch.Generator().manual_seed(3)))
        deltas[amp] = torch.nn.utils.parameters_to_vector(agent.parameters()) - before
    cos = torch.nn.functional.cosine_similarity(deltas["none"], deltas["bf16"], dim=0)
    assert cos > 0.95, float(cos)


# ---- config and checkpoints ------------------------------------------------------------------
@pytest.mark.parametrize("field,value,allowed", [
    ("init_std", 0.0, "(0, 10]"), ("init_alpha", 0.0, "(0, 100]"), ("n_step", 0, "[1, 1000]"),
    ("policy_frequency", 0, "[1, 1000]"), ("num_q", 0, "[1, 100]"), ("gamma", float("nan"), "(0, 1]"),
    ("amp", "fp16", "none, bf16")])
def test_a_config_that_would_fail_later_is_refused_naming_the_field(field, value, allowed):
    with pytest.raises(ValueError, match=f"SACConfig.{field}.*{re.escape(allowed)}"):
        SACConfig(**{field: value})


def test_the_committed_checkpoint_with_two_normalizers_loads_into_one():
    """Checkpoints written before the merge (the committed Go2 one, a run in progress) hold
    actor_norm.* and critic_norm.*; they load, and the agent acts as the old one did."""
    from training.checkpoint import load_checkpoint
    from training.config import sac_config

    path = Path(__file__).resolve().parent.parent / "models" / "checkpoints" / "go2_cpu" / "model.pt"
    ckpt = load_checkpoint(path)
    model = ckpt["agent"]["model"]
    assert "actor_norm.mean" in model and "critic_norm.mean" in model
    bounds = ckpt["action_bounds"]
    agent = SAC(model["actor.trunk.0.weight"].shape[1], np.array(bounds["low"]), np.array(bounds["high"]),
                sac_config(ckpt["config"]["sac"], path, "config.sac"))
    agent.load_full_state(ckpt["agent"])
    assert torch.equal(agent.obs_norm.mean, model["actor_norm.mean"])
    assert torch.equal(agent.obs_norm.var, model["critic_norm.var"])
    mean, var = model["actor_norm.mean"], model["actor_norm.var"]
    obs = mean + torch.randn(16, len(mean)) * var.sqrt()
    x = (obs - mean) / torch.sqrt(var + agent.obs_norm.eps)
    assert torch.allclose(agent.act(obs, deterministic=True), agent.actor.deterministic(x))
    assert set(agent.full_state()["model"]) >= {"obs_norm.mean", "obs_norm.var", "obs_norm.count"}


def test_the_checkpoint_parser_is_the_profile_parser(tmp_path):
    from deploy.config import ConfigError
    from training.config import sac_config

    cfg = sac_config({"actor_hidden": (64, 32), "n_step": 3}, tmp_path / "c.pt", "config.sac")
    assert cfg.actor_hidden == (64, 32) and cfg.n_step == 3
    for recorded in (SACConfig(), SACConfig(actor="dem", dem_temperature=0.5, critic="gaussian",
                                            critic_stabilizer=0.1, critic_stat_rate=0.01)):
        assert sac_config(dataclasses.asdict(recorded), tmp_path / "c.pt", "config.sac") == recorded
    with pytest.raises(ConfigError, match=r"c\.pt: config\.sac\.n_step"):
        sac_config({"n_step": 0}, tmp_path / "c.pt", "config.sac")
    with pytest.raises(ConfigError, match="init_std"):
        sac_config({"init_std": 0.0}, tmp_path / "c.pt", "config.sac")


def test_the_inference_benchmarks_numpy_reference_is_the_exported_policy():
    """bench/inference.py times a numpy re-implementation against onnxruntime; it must compute the
    same actions (the anchor x0 of asymmetric bounds included) or the comparison is meaningless."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "bench" / "inference.py"
    spec = importlib.util.spec_from_file_location("bench_inference", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    policy = bench.build_policy(20, [32, 32], 6, seed=0)
    assert policy.actor.anchor.abs().max() > 0.1
    x = np.random.default_rng(0).normal(size=(64, 20)).astype(np.float32)
    with torch.no_grad():
        want = policy(torch.from_numpy(x)).numpy()
    assert np.abs(bench.NumpyActor(policy)(x) - want).max() < 1e-4
