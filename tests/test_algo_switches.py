"""The FastDSAC switches of the SAC core (issue 20): `actor: dem` (fastdsac.txt Sec. 3.1) and
`critic: gaussian` (Sec. 3.2), the presets, and the refusal of switch settings that make no sense."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.config import ConfigError
from deploy.spec import RobotSpec
from training.actor import SquashedGaussianActor
from training.config import ALGOS, load_train_config, resolve_config
from training.critic import GaussianTwinCritic, gaussian_critic_loss
from training.envs.gym_adapter import GymVecEnv
from training.export import DeterministicPolicy
from training.networks import EmpiricalNormalizer
from training.replay_buffer import Batch
from training.runner import Trainer
from training.sac import SAC, SACConfig
from training.smoke import smoke_config

LOW, HIGH = np.array([-1.0, -0.5, -2.0, -0.3]), np.array([1.0, 2.0, 0.5, 0.3])
FASTDSAC = dict(actor="dem", dem_temperature=1.0, critic="gaussian", critic_stabilizer=0.1,
                critic_stat_rate=0.005)
DSAC_E = dict(critic="gaussian", critic_stabilizer=0.1, critic_stat_rate=0.005, temperature="trajectory",
              entropy_budget_scale=1.0)       # configs/train/dsac_e_cpu.yaml's switches


def _dem_actor(temperature: float = 0.7) -> SquashedGaussianActor:
    torch.manual_seed(0)
    actor = SquashedGaussianActor(5, LOW, HIGH, [16], init_std=0.3, dem_temperature=temperature)
    with torch.no_grad():                        # a trained-looking logit head
        actor.head.weight[8:].normal_(0.0, 0.3)
        actor.head.bias[8:].normal_(0.0, 0.5)
    return actor


# ---- DEM actor ------------------------------------------------------------------------------------
def test_dem_weights_are_positive_with_mean_one_for_any_logit_scale():
    actor = _dem_actor()
    obs = torch.randn(64, 5) * 3
    for scale in (None, torch.full((64,), 0.1), torch.linspace(0.2, 5.0, 64)):
        w = actor.dem_weights(obs, scale)
        assert bool((w > 0).all())
        assert torch.allclose(w.mean(-1), torch.ones(64), atol=1e-5)
    flat = actor.dem_weights(obs, torch.full((64,), 1e-3))
    sharp = actor.dem_weights(obs, torch.full((64,), 5.0))
    assert torch.allclose(flat, torch.ones_like(flat), atol=0.05)            # k -> 0: uniform
    assert (sharp.max(-1).values > actor.dem_weights(obs).max(-1).values).all()   # k > 1: concentrated


def test_dem_weights_are_the_softmax_of_the_logit_head():
    actor = _dem_actor(temperature=0.7)
    obs = torch.randn(8, 5)
    h = actor.trunk(obs)
    logits = h @ actor.head.weight[8:].T + actor.head.bias[8:]
    want = 4 * torch.exp(logits / 0.7) / torch.exp(logits / 0.7).sum(-1, keepdim=True)
    assert torch.allclose(actor.dem_weights(obs), want, rtol=1e-5)


def test_dem_log_prob_is_exact_for_the_modulated_std():
    """log pi = log N(x; mu, w exp(l)) - log |da/dx|, the Jacobian by finite differences, the std
    from the raw head outputs: the modulation is part of the density, not only of the sampling."""
    actor = _dem_actor().double()
    obs = torch.randn(32, 5, dtype=torch.float64)
    scale = torch.linspace(0.5, 2.0, 32, dtype=torch.float64)
    out = actor.head(actor.trunk(obs))
    mu, raw_log_std = out[:, :4], out[:, 4:8].clamp(-10, 2)
    w = actor.dem_weights(obs, scale)
    std = raw_log_std.exp() * w
    torch.manual_seed(1)
    a, logp = actor(obs, logit_scale=scale)
    torch.manual_seed(1)
    x = mu + std * torch.randn(32, 4, dtype=torch.float64)
    assert torch.allclose(a, actor.squash(x), atol=1e-12)
    eps = 1e-6
    jac = (actor.squash(x + eps) - actor.squash(x - eps)) / (2 * eps)
    numeric = torch.distributions.Normal(mu, std).log_prob(x).sum(-1) - torch.log(jac).sum(-1)
    assert torch.allclose(logp, numeric, atol=1e-5)


def test_a_fresh_dem_actor_starts_at_sigma0_on_every_dimension():
    actor = SquashedGaussianActor(5, LOW, HIGH, [16], init_std=0.15, dem_temperature=0.5)
    _, log_std = actor.distribution_params(torch.randn(32, 5) * 4)
    assert torch.allclose(log_std.exp(), torch.full_like(log_std, 0.15), atol=1e-6)


def test_dem_leaves_the_deterministic_policy_and_its_export_unchanged_in_form():
    dem = _dem_actor()
    plain = SquashedGaussianActor(5, LOW, HIGH, [16])
    with torch.no_grad():
        plain.trunk.load_state_dict(dem.trunk.state_dict())
        plain.head.weight.copy_(dem.head.weight[:8])
        plain.head.bias.copy_(dem.head.bias[:8])
    obs = torch.randn(16, 5)
    assert torch.allclose(dem.deterministic(obs), plain.deterministic(obs))
    norm = EmpiricalNormalizer(5)
    assert torch.allclose(DeterministicPolicy(norm, dem)(obs), DeterministicPolicy(norm, plain)(obs))


# ---- Gaussian critic ------------------------------------------------------------------------------
def test_gaussian_critic_gradients_match_the_formulas():
    torch.manual_seed(0)
    q = torch.randn(2, 6, requires_grad=True)
    std = (torch.rand(2, 6) + 0.2).requires_grad_(True)
    y_q, y_z = torch.randn(1, 6), torch.randn(1, 6)
    omega, eps = torch.tensor(0.7), torch.tensor(0.05)
    gaussian_critic_loss(q, std, y_q, y_z, omega, eps).backward()
    n = q.numel()
    s = std.detach()
    want_q = -(omega + eps) * (y_q - q.detach()) / (s ** 2 + eps) / n
    want_s = -(omega + eps) * ((y_z - q.detach()) ** 2 - s ** 2) / (s ** 3 + eps ** 1.5) / n
    assert torch.allclose(q.grad, want_q, rtol=1e-5)
    assert torch.allclose(std.grad, want_s, rtol=1e-5)


def _gaussian_critic() -> GaussianTwinCritic:
    torch.manual_seed(0)
    critic = GaussianTwinCritic(3, 2, [8], stabilizer=0.1, stat_rate=0.5)
    with torch.no_grad():
        for p in critic.q_target.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return critic


def test_gaussian_target_uses_the_minimum_mean_member_and_its_spread_through_n_steps():
    critic = _gaussian_critic()
    n = 4
    next_obs, next_act = torch.randn(n, 3), torch.rand(n, 2)
    returns = torch.tensor([1.0, -2.0, 0.5, 3.0])
    bootstrap = torch.tensor([0.9 ** 3, 0.0, 0.9, 0.9 ** 5])
    bonus = torch.tensor([0.1, 0.2, -0.3, 0.0])
    with torch.no_grad():     # the target members' raw outputs: mean and softplus(raw) + 1e-4
        out = critic.q_target(torch.cat([next_obs, next_act], -1))
    mean, std = out[..., 0], torch.nn.functional.softplus(out[..., 1]) + 1e-4
    pick = mean.argmin(0)
    m, s = mean[pick, torch.arange(n)], std[pick, torch.arange(n)]
    torch.manual_seed(3)
    y_q, y_z = critic.targets(returns, bootstrap, next_obs, next_act, bonus)
    torch.manual_seed(3)
    noise = torch.randn(n).clamp(-3, 3)
    assert torch.allclose(y_q, returns + bootstrap * (m + bonus), atol=1e-6)
    assert torch.allclose(y_z, returns + bootstrap * (m + noise * s + bonus), atol=1e-6)
    many = critic.targets(returns.repeat(4000), bootstrap.repeat(4000), next_obs.repeat(4000, 1),
                          next_act.repeat(4000, 1), bonus.repeat(4000))[1].reshape(4000, n)
    assert torch.allclose(many.std(0), bootstrap * s, rtol=0.08, atol=1e-6)   # gamma^k sigma'


def test_gaussian_critic_statistics_follow_sigma_and_the_returns():
    critic = _gaussian_critic()
    obs, act, nxt = torch.randn(16, 3), torch.rand(16, 2), torch.randn(16, 3)
    returns = torch.full((16,), -4.0)
    critic.loss(obs, act, returns, torch.full((16,), 0.9), nxt, torch.rand(16, 2), torch.zeros(16))
    _, std = critic.distribution(obs, act)
    assert critic.omega.item() == pytest.approx(std.pow(2).mean().item(), rel=1e-5)   # first batch sets it
    assert critic.return_scale.item() == pytest.approx(4.0)
    critic.loss(obs, act, returns * 3, torch.full((16,), 0.9), nxt, torch.rand(16, 2), torch.zeros(16))
    assert critic.return_scale.item() == pytest.approx(4.0 + 0.5 * (12.0 - 4.0))


def _batch(n: int = 32) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(obs=torch.randn(n, 5, generator=g), actions=torch.rand(n, 4, generator=g) - 0.5,
                 returns=torch.randn(n, generator=g), bootstrap=torch.full((n,), 0.9),
                 next_obs=torch.randn(n, 5, generator=g))


@pytest.mark.parametrize("switches", [dict(actor="dem", dem_temperature=0.5),
                                      dict(critic="gaussian", critic_stabilizer=0.1, critic_stat_rate=0.01),
                                      FASTDSAC])
def test_every_switch_trains_and_resumes_with_its_own_state(switches):
    small = dict(actor_hidden=(16,), critic_hidden=(16,), **switches)
    torch.manual_seed(0)
    agent = SAC(5, LOW, HIGH, SACConfig(**small))
    agent.observe(torch.randn(64, 5))
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    for _ in range(3):
        logs = agent.update(_batch())
    assert all(math.isfinite(float(v)) for v in logs.values())
    for key in ("actor.head.weight", "critic.q.net.0.weight", "critic.q_target.net.0.weight"):
        assert not torch.equal(before[key], agent.state_dict()[key]), key
    twin = SAC(5, LOW, HIGH, SACConfig(**small))
    twin.load_full_state(copy.deepcopy(agent.full_state()))   # as from disk: no shared moments
    if switches.get("critic") == "gaussian":
        assert twin.critic.omega.item() == agent.critic.omega.item() > 0
    torch.manual_seed(5)
    a = agent.update(_batch())
    torch.manual_seed(5)
    b = twin.update(_batch())
    assert float(a["loss/critic"]) == float(b["loss/critic"])
    for key, value in agent.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key


# ---- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings,message", [
    (dict(actor="dem"), r"actor: dem needs dem_temperature \(\(0, 100\]\)"),
    (dict(critic="gaussian", critic_stat_rate=0.01), r"critic: gaussian needs critic_stabilizer"),
    (dict(dem_temperature=1.0), r"dem_temperature: applies to actor: dem only \(actor is gaussian\)"),
    (dict(critic_stat_rate=0.1), r"applies to critic: gaussian only"),
    (dict(actor="beta"), r"'beta' is not one of: gaussian, dem"),
    (dict(critic="c51"), r"'c51' is not one of: mse, gaussian"),
    (dict(actor="dem", dem_temperature=0.0), r"dem_temperature: 0.0 is outside the allowed range \(0, 100\]"),
    (dict(smoothness=-0.1), r"smoothness: -0.1 is outside the allowed range \[0, 100\]"),
    (dict(smoothness=float("nan")), r"smoothness: nan is outside the allowed range \[0, 100\]"),
])
def test_switch_settings_that_make_no_sense_are_refused_with_the_allowed_values(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        SACConfig(**settings)
    path = tmp_path / "bad.yaml"
    lines = "".join(f"  {k}: {v}\n" for k, v in settings.items())
    path.write_text(f"base: sac_cpu.yaml\nsac:\n{lines}")
    with pytest.raises(ConfigError, match=r"bad\.yaml: sac\.\w+: " + message.split(": ", 1)[-1]
                       if message.startswith("dem_temperature:") else r"bad\.yaml: sac\."):
        load_train_config(path)


def test_presets_are_switches_of_the_same_profile():
    sac, fast = (load_train_config(resolve_config(None, algo, False)) for algo in ("sac", "fastdsac"))
    assert fast.algo == "fastdsac" and (fast.sac.actor, fast.sac.critic) == ("dem", "gaussian")
    assert (sac.sac.actor, sac.sac.critic, sac.sac.temperature) == ("gaussian", "mse", "local")
    same = {k: v for k, v in vars(fast.sac).items() if k not in FASTDSAC}
    assert same == {k: v for k, v in vars(sac.sac).items() if k not in FASTDSAC}
    assert dataclass_without(fast, "sac", "algo", "source") == dataclass_without(sac, "sac", "algo", "source")
    gpu = load_train_config(resolve_config(None, "fastdsac", True))
    assert gpu.num_envs == 8192 and gpu.sac.critic == "gaussian"
    with pytest.raises(ConfigError, match="unknown algorithm 'ppo' \\(known: sac, fastdsac, dsac_e\\)"):
        resolve_config(None, "ppo", False)
    assert ALGOS == ("sac", "fastdsac", "dsac_e")


def dataclass_without(cfg, *names) -> dict:
    return {k: v for k, v in vars(cfg).items() if k not in names}


# ---- learning -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("switches", [FASTDSAC, DSAC_E], ids=["fastdsac", "dsac_e"])
def test_the_presets_learn_pendulum(tmp_path, switches):
    """The same budget and bar as test_training_loop.py::test_the_whole_loop_learns_pendulum (a
    random policy scores about -1200; pass -500 within 8k steps), with a preset's switches on."""
    torch.manual_seed(0)
    env = GymVecEnv("Pendulum-v1", 4, seed=0)
    cfg = smoke_config(num_envs=4, steps_per_env=1, max_iterations=2000, learning_starts=50,
                       buffer_size=100_000, updates_per_iteration=2, batch_size=256, sim_threads=2,
                       sac=SACConfig(actor_hidden=(64, 64), critic_hidden=(64, 64), gamma=0.99, tau=0.01,
                                     init_alpha=0.1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
                                     target_entropy_scale=1.0, n_step=3, init_std=0.5, **switches))
    trainer = Trainer(cfg, RobotSpec.load("go2", check_mjcf=False), env, None, tmp_path / "run",
                      "pendulum", seed=0)
    trainer.train(show_progress=False)
    learned = float(np.mean(trainer.progress.recent_returns[-8:]))
    assert learned > -500, learned
    assert Path(tmp_path / "run" / "checkpoints").is_dir()


def test_dem_collection_scales_each_envs_logits_not_its_noise(tmp_path):
    """exploration_scale with actor: dem: each env's factor multiplies its modulation logits
    (Eq. 7) and the noise stays standard normal."""
    from training.envs.velocity import TaskConfig, VelocityEnv

    spec = RobotSpec.load("go2")
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 4, seed=0, threads=1)
    cfg = smoke_config(num_envs=4, steps_per_env=1, learning_starts=10**6, exploration_scale=(0.2, 5.0),
                       sac=SACConfig(actor_hidden=(16,), critic_hidden=(16,), init_std=0.5, actor="dem",
                                     dem_temperature=0.5))
    trainer = Trainer(cfg, spec, env, None, tmp_path, "velocity_flat", seed=0)
    with torch.no_grad():
        trainer.agent.actor.head.bias[24:].copy_(torch.linspace(-2.0, 2.0, 12))
    obs, scale = trainer.obs.clone(), trainer.noise_scale.scale.clone()
    assert scale.max() / scale.min() > 1.5
    probe = copy.deepcopy(trainer.agent)
    probe.observe(obs)
    torch.manual_seed(9)
    trainer._collect()
    torch.manual_seed(9)
    want = probe.act(obs, logit_scale=scale)
    assert torch.allclose(trainer.buffer.actions[0], want, atol=1e-6)
    torch.manual_seed(9)
    assert not torch.allclose(probe.act(obs), want, atol=1e-3)
