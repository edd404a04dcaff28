"""DSAC-E as the `temperature: trajectory` switch of the SAC core (issue 20; dsac_e_tecrl.txt
Sec. 3.2): the reward critic's target (Eq. 11), the entropy critic's (Eq. 13), the actor's loss on
both critics (Eq. 14) and the temperature against the trajectory budget (Eq. 15), each checked
against the formula written out here; the config's refusals, the checkpoint round trip and a short
`sac2real train --algo dsac_e` run on the MuJoCo Go2 that checkpoints and exports."""
from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from deploy.config import ConfigError
from training.checkpoint import load_checkpoint, resolve_checkpoint
from training.config import load_train_config, resolve_config
from training.critic import TwinQCritic
from training.export import load_agent
from training.replay_buffer import Batch
from training.sac import SAC, SACConfig
from training.temperature import TrajectoryEntropyTemperature

LOW, HIGH = np.array([-1.0, -0.5, -2.0, -0.3]), np.array([1.0, 2.0, 0.5, 0.3])
GAMMA, N_STEP = 0.9, 3
DSAC_E = dict(temperature="trajectory", entropy_budget_scale=2.0)


def _agent(**over) -> SAC:
    torch.manual_seed(0)
    cfg = SACConfig(actor_hidden=(16,), critic_hidden=(16,), gamma=GAMMA, n_step=N_STEP,
                    init_alpha=0.3, init_std=0.5, **{**DSAC_E, **over})
    agent = SAC(5, LOW, HIGH, cfg)
    agent.observe(torch.randn(64, 5) * 2 + 1)
    with torch.no_grad():          # targets apart from the online nets, so a mix-up shows
        for critic in (agent.critic, agent.temperature.entropy_critic):
            for p in critic.q_target.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return agent


def _batch(n: int = 8) -> Batch:
    """Windows of every kind: whole (gamma^n), cut by a timeout (gamma^k, k < n) and ended by a
    fall (0), with rewards far from zero so a target that takes them in shows it."""
    g = torch.Generator().manual_seed(1)
    bootstrap = torch.tensor([GAMMA ** 3, 0.0, GAMMA, GAMMA ** 2, GAMMA ** 3, 0.0, GAMMA ** 3, GAMMA])
    return Batch(obs=torch.randn(n, 5, generator=g), actions=torch.rand(n, 4, generator=g) - 0.5,
                 returns=torch.randn(n, generator=g) * 3 + 2, bootstrap=bootstrap[:n],
                 next_obs=torch.randn(n, 5, generator=g))


def _ensemble(net: torch.nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """(members, batch) outputs of one critic network."""
    return net(torch.cat([obs, act], -1))[..., 0]


def _update_with_twin(agent: SAC, batch: Batch, seed: int = 7):
    """(logs, the agent before the update, its next action and log-prob, its fresh action and
    log-prob): the update's two actor draws replayed on an untouched copy with the same seed."""
    before = copy.deepcopy(agent)
    torch.manual_seed(seed)
    logs = agent.update(batch)
    torch.manual_seed(seed)
    with torch.no_grad():
        next_act, next_logp = before.actor(before.actor_norm(batch.next_obs))
        act, logp = before.actor(before.actor_norm(batch.obs))
    return logs, before, (next_act, next_logp), (act, logp)


# ---- the targets and losses ---------------------------------------------------------------------
def test_reward_critic_target_is_rewards_and_bootstrap_without_entropy():
    """Eq. 11 through the n-step window: y_r = R + gamma^k m min_i Q_r,i'(s', a'). Adding the
    entropy bonus of the `local` path (- alpha log pi') would change the loss."""
    agent, batch = _agent(), _batch()
    logs, before, (next_act, next_logp), _ = _update_with_twin(agent, batch)
    norm = before.critic_norm
    with torch.no_grad():
        q_next = _ensemble(before.critic.q_target, norm(batch.next_obs), next_act).min(0).values
        y = batch.returns + batch.bootstrap * q_next
        q = _ensemble(before.critic.q, norm(batch.obs), batch.actions)
        want = ((q - y) ** 2).mean()
        soft_y = y - batch.bootstrap * before.temperature.alpha * next_logp
        soft = ((q - soft_y) ** 2).mean()
    assert float(logs["loss/critic"]) == pytest.approx(float(want), rel=1e-5)
    assert abs(float(soft) - float(want)) > 1e-3 * float(want)     # the check can tell them apart


def test_entropy_critic_target_is_discounted_next_entropy_and_no_reward():
    """Eq. 13 through the same window: y_e = gamma^k m (min_i Q_e,i'(s', a') - log pi(a'|s')),
    zero after a fall, gamma^k after a timeout cut the window at k < n; no reward, no alpha."""
    agent, batch = _agent(), _batch()
    logs, before, (next_act, next_logp), _ = _update_with_twin(agent, batch)
    norm = before.critic_norm
    with torch.no_grad():
        qe_next = _ensemble(before.temperature.entropy_critic.q_target, norm(batch.next_obs), next_act).min(0).values
        y_e = batch.bootstrap * (qe_next - next_logp)
        q_e = _ensemble(before.temperature.entropy_critic.q, norm(batch.obs), batch.actions)
        want = ((q_e - y_e) ** 2).mean()
    assert y_e[1] == 0 and y_e[5] == 0
    assert float(logs["loss/entropy_critic"]) == pytest.approx(float(want), rel=1e-5)
    online, target = agent.temperature.entropy_critic.q.state_dict(), agent.temperature.entropy_critic.q_target.state_dict()
    assert any(not torch.equal(v, online[k]) for k, v in before.temperature.entropy_critic.q.state_dict().items())
    for key, old in before.temperature.entropy_critic.q_target.state_dict().items():     # Polyak with tau
        assert torch.allclose(target[key], old + agent.cfg.tau * (online[key] - old), atol=1e-7), key


def test_actor_loss_climbs_the_reward_critic_plus_alpha_times_the_cumulative_entropy():
    """Eq. 14: L = E[alpha log pi(a|s) - min Q_r(s, a) - alpha min Q_e(s, a)], alpha from before
    the update, both critics after their steps (which precede the actor's)."""
    agent, batch = _agent(), _batch()
    logs, before, _, (act, logp) = _update_with_twin(agent, batch)
    alpha = before.temperature.alpha
    obs = before.critic_norm(batch.obs)
    with torch.no_grad():
        q_r = _ensemble(agent.critic.q, obs, act).min(0).values
        q_e = _ensemble(agent.temperature.entropy_critic.q, obs, act).min(0).values
        want = (alpha * logp - q_r - alpha * q_e).mean()
    assert float(logs["loss/actor"]) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
    assert float(logs["policy/trajectory_entropy"]) == pytest.approx(float((q_e - logp).mean()), rel=1e-5)
    assert all(p.requires_grad for p in agent.temperature.entropy_critic.q.parameters())


def test_temperature_loss_measures_the_cumulative_entropy_against_the_budget():
    """Eq. 15 with the budget rho H_0 / (1 - gamma^n), H_0 = -scale * action dims, in log alpha:
    J = E[log alpha (-log pi + Q_e - H_budget)], from the update's own draws."""
    agent, batch = _agent(), _batch()
    logs, before, _, (act, logp) = _update_with_twin(agent, batch)
    budget = 2.0 * (-0.167 * 4) / (1 - GAMMA ** N_STEP)
    assert agent.temperature.budget == pytest.approx(budget)
    with torch.no_grad():
        q_e = _ensemble(agent.temperature.entropy_critic.q, before.critic_norm(batch.obs), act).min(0).values
        want = math.log(0.3) * float((-logp + q_e - budget).mean())
    assert float(logs["loss/alpha"]) == pytest.approx(want, rel=1e-5)


def test_the_cumulative_entropy_estimate_settles_on_the_budgets_horizon():
    """With whole n-step windows and a steady policy, Q_e settles at gamma^n H / (1 - gamma^n), so
    -log pi + Q_e settles at H / (1 - gamma^n): the horizon the budget is divided by."""
    agent = _agent()
    critic, norm = agent.temperature.entropy_critic, agent.critic_norm
    g = torch.Generator().manual_seed(2)
    states = norm(torch.randn(512, 5, generator=g) * 2 + 1)
    actions = torch.rand(512, 4, generator=g) - 0.5
    opt = torch.optim.Adam(critic.q.parameters(), lr=3e-3)
    whole = torch.full((256,), GAMMA ** N_STEP)
    for _ in range(1500):
        pick, nxt = torch.randint(0, 512, (256,), generator=g), torch.randint(0, 512, (256,), generator=g)
        with torch.no_grad():
            next_act, next_logp = agent.actor(states[nxt])
        loss, _ = critic.loss(states[pick], actions[pick], torch.zeros(256), whole, states[nxt],
                              next_act, -next_logp)
        opt.zero_grad()
        loss.backward()
        opt.step()
        critic.update_target(0.05)
    with torch.no_grad():
        entropy = float(-agent.actor(states.repeat(20, 1))[1].mean())
        future = float(_ensemble(critic.q, states, actions).min(0).values.mean())
    want = GAMMA ** N_STEP * entropy / (1 - GAMMA ** N_STEP)
    assert future == pytest.approx(want, rel=0.05, abs=0.05), (future, want, entropy)


@pytest.mark.parametrize("cumulative_vs_budget, alpha_moves", [(+1.0, "down"), (-1.0, "up")])
def test_alpha_falls_above_the_budget_and_rises_below_it(cumulative_vs_budget, alpha_moves):
    """The constraint's direction: too much trajectory entropy lowers alpha, too little raises it
    (a flipped budget sign, or Eq. 15's printed sign, does the opposite)."""
    temp = TrajectoryEntropyTemperature(4, 0.2, 0.5, budget_scale=1.0, horizon_discount=0.97 ** 5,
                                        entropy_critic=TwinQCritic(5, 4, [8]), critic_lr=1e-3,
                                        max_grad_norm=1.0)
    assert temp.budget == pytest.approx(-0.5 * 4 / (1 - 0.97 ** 5)) and temp.budget < 0
    log_prob = torch.full((16,), 0.3)
    future = torch.full((16,), temp.budget + 0.3 + cumulative_vs_budget)   # -log pi + Q_e - budget
    opt = torch.optim.SGD([temp.log_alpha], lr=0.1)
    start = float(temp.alpha)
    opt.zero_grad()
    temp.loss(log_prob, future).backward()
    opt.step()
    assert (float(temp.alpha) < start) == (alpha_moves == "down")
    assert float(temp.alpha) != start


def test_a_larger_rho_asks_for_less_entropy_when_the_step_target_is_negative():
    """Sec. 4.1: H_0 < 0, so rho 20 is a smaller budget than rho 1; the local rule's H_0 is kept."""
    small, large = (_agent(entropy_budget_scale=rho).temperature for rho in (1.0, 20.0))
    assert large.budget == pytest.approx(20 * small.budget) and large.budget < small.budget < 0
    assert small.target_entropy == pytest.approx(-SACConfig.target_entropy_scale * len(LOW))
    assert small.budget == pytest.approx(small.target_entropy / (1 - GAMMA ** N_STEP))


def test_the_local_path_has_no_entropy_critic_and_keeps_its_checkpoint_keys():
    local = SAC(5, LOW, HIGH, SACConfig(actor_hidden=(16,), critic_hidden=(16,)))
    assert not any(isinstance(m, TrajectoryEntropyTemperature) for m in local.modules())
    assert set(local.full_state()) == {"model", "actor_opt", "critic_opt", "alpha_opt"}
    assert not any("entropy_critic" in k for k in local.state_dict())


# ---- checkpoints --------------------------------------------------------------------------------
def test_a_dsac_e_agent_resumes_exactly_with_its_entropy_critic_and_moments():
    agent = _agent(critic="gaussian", critic_stabilizer=0.1, critic_stat_rate=0.05)
    for _ in range(3):
        agent.update(_batch())
    state = copy.deepcopy(agent.full_state())            # as from disk: no shared tensors
    assert state["entropy_critic_opt"]["state"], "the entropy critic's Adam moments are saved"
    assert any(k.startswith("temperature.entropy_critic.q_target.") for k in state["model"])
    twin = _agent(critic="gaussian", critic_stabilizer=0.1, critic_stat_rate=0.05)
    twin.load_full_state(state)
    torch.manual_seed(11)
    a = agent.update(_batch())
    torch.manual_seed(11)
    b = twin.update(_batch())
    assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    for key, value in agent.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key
    local = SAC(5, LOW, HIGH, SACConfig(actor_hidden=(16,), critic_hidden=(16,), gamma=GAMMA,
                                        n_step=N_STEP, critic="gaussian", critic_stabilizer=0.1,
                                        critic_stat_rate=0.05))
    with pytest.raises(RuntimeError, match="entropy_critic"):
        local.load_full_state(state)


def test_a_checkpoint_from_before_the_rule_owned_its_entropy_critic_loads():
    """Such checkpoints hold the entropy critic at `entropy_critic.*` (not under `temperature.`)."""
    agent = _agent()
    agent.update(_batch())
    old = {k.replace("temperature.entropy_critic.", "entropy_critic."): v.clone()
           for k, v in agent.state_dict().items()}
    assert any(k.startswith("entropy_critic.") for k in old)
    twin = _agent(entropy_budget_scale=3.0)
    twin.load_state_dict(old)
    for key, value in agent.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key


# ---- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    (dict(temperature="trajectory"),
     r"entropy_budget_scale: temperature: trajectory needs entropy_budget_scale \(\(0, 100\]\)"),
    (dict(entropy_budget_scale=1.0),
     r"entropy_budget_scale: applies to temperature: trajectory only \(temperature is local\)"),
    (dict(temperature="global"), r"temperature: 'global' is not one of: local, trajectory"),
    (dict(temperature="trajectory", entropy_budget_scale=0.0),
     r"entropy_budget_scale: 0.0 is outside the allowed range \(0, 100\]"),
    (dict(temperature="trajectory", entropy_budget_scale=float("nan")),
     r"entropy_budget_scale: nan is (outside the allowed range \(0, 100\]|not a finite number)"),
])
def test_bad_trajectory_settings_are_refused_with_the_allowed_values(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        SACConfig(**settings)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": "sac_cpu.yaml", "sac": settings}))
    with pytest.raises(ConfigError, match=r"bad\.yaml: sac\." + message):
        load_train_config(path)


def test_the_dsac_e_presets_are_switches_of_the_sac_profiles():
    for cuda in (False, True):
        sac, dsac_e = (load_train_config(resolve_config(None, algo, cuda)) for algo in ("sac", "dsac_e"))
        assert dsac_e.algo == "dsac_e"
        switched = {"critic": "gaussian", "critic_stabilizer": 0.1, "critic_stat_rate": 0.005,
                    "temperature": "trajectory", "entropy_budget_scale": 1.0}
        assert {k: getattr(dsac_e.sac, k) for k in switched} == switched
        assert {k: v for k, v in vars(dsac_e.sac).items() if k not in switched} == \
            {k: v for k, v in vars(sac.sac).items() if k not in switched}
        drop = ("sac", "algo", "source")
        assert {k: v for k, v in vars(dsac_e).items() if k not in drop} == \
            {k: v for k, v in vars(sac).items() if k not in drop}


# ---- the whole path: train, checkpoint, warm start, export --------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_sac2real_train_dsac_e_on_the_go2_checkpoints_and_exports(tmp_path):
    """A few thousand MuJoCo Go2 steps with the dsac_e CPU preset cut small; the checkpoint loads
    as the fine-tuner loads it (load_agent, then load_full_state) and exports as a bundle."""
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({
        "base": "dsac_e_cpu.yaml", "num_envs": 8, "steps_per_env": 8, "learning_starts": 2,
        "buffer_size": 20000, "updates_per_iteration": 4, "batch_size": 64, "sim_threads": 1,
        "eval": {"interval": 1000, "episodes": 1}, "checkpoint": {"interval": 1000, "keep": 1},
        "sac": {"actor_hidden": [32, 32], "critic_hidden": [32, 32]}}))
    out = tmp_path / "run"
    trained = _cli("train", "--robot", "go2", "--algo", "dsac_e", "--config", str(tiny), "--steps", "3000",
                   "--out", str(out), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    assert "with dsac_e" in trained.stdout
    latest = out / "checkpoints" / "latest.pt"
    ckpt = load_checkpoint(resolve_checkpoint(latest))
    assert ckpt["config"]["sac"]["temperature"] == "trajectory"
    assert ckpt["agent"]["entropy_critic_opt"]["state"]
    _, _, agent, _ = load_agent(latest)
    agent.load_full_state(ckpt["agent"])                  # the fine-tuner's warm start
    assert int(agent.num_updates) == (47 - 2) * 4
    assert agent.temperature.budget == pytest.approx(-0.167 * 12 / (1 - 0.97 ** 5))
    exported = _cli("export", str(latest), "--out", str(tmp_path / "policies"), "--parity-samples", "1000")
    assert exported.returncode == 0, exported.stderr
    bundles = list((tmp_path / "policies" / "go2").iterdir())
    assert len(bundles) == 1 and (bundles[0] / "policy.onnx").is_file()
