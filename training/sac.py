"""The SAC learner (RSL-RL-SAC, rsl_rl_sac.md Algorithm 1): one update step shared by simulation
pretraining and fine-tuning on robot data.

The actor, the critic and the temperature rule are parts passed in, so FastDSAC's and DSAC-E's
variants slot into the same step. DSAC-E (`temperature: trajectory`, dsac_e_tecrl.txt Sec. 3.2) is
a temperature rule that owns an entropy critic (training/temperature.py); this one update runs the
paper's four steps: PEV (Eq. 11, the `critic:` part, with the rule's zero entropy bonus in its
target), PIS (Eq. 13, the rule's `learn`), PIM (Eq. 14, the rule's term in the actor's loss) and
TUP (Eq. 15, the rule's loss)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.actor import SquashedGaussianActor
from training.critic import GaussianTwinCritic, TwinQCritic
from training.networks import ACTIVATIONS, EmpiricalNormalizer
from training.optim import NonFiniteError, adam, check_finite, gradient_step
from training.replay_buffer import Batch
from training.temperature import EntropyTemperature, TrajectoryEntropyTemperature

__all__ = ["SAC", "SACConfig", "SACConfigError", "NonFiniteError"]


@dataclass
class SACConfig:
    """Table C9 of rsl_rl_sac.md are the defaults (configs/train/sac.yaml holds them too)."""

    actor_hidden: tuple[int, ...] = (1024, 512, 256)
    critic_hidden: tuple[int, ...] = (1024, 512, 256)
    activation: str = "silu"
    layer_norm: bool = False
    init_std: float = 0.15
    mean_init_std: float = 0.01
    actor_lr: float = 2e-4
    critic_lr: float = 2e-4
    alpha_lr: float = 2e-5
    gamma: float = 0.97
    tau: float = 0.003
    init_alpha: float = 0.001
    auto_alpha: bool = True
    target_entropy_scale: float = 0.167
    max_grad_norm: float = 1.0       # 0: no clipping
    policy_frequency: int = 1
    n_step: int = 5
    normalize_actor_obs: bool = True
    normalize_critic_obs: bool = True
    num_q: int = 2
    amp: str = "none"   # "bf16": matrix products in bfloat16 (losses, log-probs and optimizers stay fp32)
    # the switches (issue 20) and the hyperparameters each one needs (None where it is off)
    actor: str = "gaussian"                 # "dem": FastDSAC's Dimension-wise Entropy Modulation
    dem_temperature: float | None = None    # T of w = D softmax(z / T)
    critic: str = "mse"                     # "gaussian": FastDSAC's distributional critic
    critic_stabilizer: float | None = None  # eps = (this * mean |n-step return|)^2
    critic_stat_rate: float | None = None   # rate of the running sigma^2 and |return| means
    temperature: str = "local"              # per-step entropy target (Eq. 4); "trajectory": DSAC-E
    entropy_budget_scale: float | None = None   # rho of H_budget = rho H_0 / (1 - gamma^n)
    # CAPS's spatial smoothness (Mysore et al. 2021): weight of the mean distance between the
    # policy's mean action and its mean action under a fresh draw of the sensors' training noise
    smoothness: float = 0.0

    def __post_init__(self) -> None:
        """Refuse what would fail later (log of a zero std or alpha, zero-step windows), a switch's
        hyperparameter missing or given to a switch that is off, with the field and its allowed
        values; configs/train files are checked by the same rules, naming the file (training.config)."""
        for name, allowed in SAC_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise SACConfigError(name, f"{getattr(self, name)!r} is not one of: {', '.join(allowed)}")
        for name, (switch, on) in SWITCH_PARAMS.items():
            given, active = getattr(self, name) is not None, getattr(self, switch) == on
            if active and not given:
                raise SACConfigError(name, f"{switch}: {on} needs {name} ({_range_text(name)})")
            if given and not active:
                raise SACConfigError(name, f"applies to {switch}: {on} only ({switch} is "
                                     f"{getattr(self, switch)}); remove it")
        for name, (low, high, open_low) in SAC_RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            above = value > low if open_low else value >= low
            if isinstance(value, bool) or not (math.isfinite(value) and above and value <= high):
                raise SACConfigError(name, f"{value!r} is outside the allowed range {_range_text(name)}")


class SACConfigError(ValueError):
    """A bad SACConfig value; `field` names it for file-level messages (training.config)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"SACConfig.{field}: {problem}")
        self.field, self.problem = field, problem


def _range_text(name: str) -> str:
    low, high, open_low = SAC_RANGES[name]
    return f"{'(' if open_low else '['}{low:g}, {high:g}]"


AMP_MODES = ("none", "bf16")
# (low, high, open_low) of each number of SACConfig; target_entropy_scale < 0 asks for a target
# entropy above zero, i.e. more exploration.
SAC_RANGES = {"init_std": (0.0, 10.0, True), "mean_init_std": (0.0, 10.0, False),
              "actor_lr": (0.0, 1.0, True), "critic_lr": (0.0, 1.0, True),
              "alpha_lr": (0.0, 1.0, True), "gamma": (0.0, 1.0, True), "tau": (0.0, 1.0, True),
              "init_alpha": (0.0, 100.0, True), "target_entropy_scale": (-10.0, 10.0, False),
              "max_grad_norm": (0.0, 1e4, False), "policy_frequency": (1, 1000, False),
              "n_step": (1, 1000, False), "num_q": (1, 100, False),
              "dem_temperature": (0.0, 100.0, True), "critic_stabilizer": (0.0, 10.0, True),
              "critic_stat_rate": (0.0, 1.0, True), "entropy_budget_scale": (0.0, 100.0, True),
              "smoothness": (0.0, 100.0, False)}
SAC_CHOICES = {"activation": tuple(ACTIVATIONS), "amp": AMP_MODES, "actor": ("gaussian", "dem"),
               "critic": ("mse", "gaussian"), "temperature": ("local", "trajectory")}
# each switch's own hyperparameters: (switch, the value that needs them)
SWITCH_PARAMS = {"dem_temperature": ("actor", "dem"), "critic_stabilizer": ("critic", "gaussian"),
                 "critic_stat_rate": ("critic", "gaussian"),
                 "entropy_budget_scale": ("temperature", "trajectory")}


class SAC(nn.Module):
    """`obs_dim` is the policy's observation; with `privileged_dim` > 0 (an asymmetric critic, the
    spec's critic_observations) every observation handed in has that many exact values after the
    policy's columns, which the critic reads and the actor never does. `obs_noise` (obs_dim,) is
    the half-width of the sensors' uniform training noise in each observation column
    (ObservationPipeline.observed_noise); `smoothness` > 0 needs it."""

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 cfg: SACConfig, privileged_dim: int = 0, obs_noise: np.ndarray | None = None):
        super().__init__()
        self.cfg = cfg
        if cfg.smoothness > 0 and (obs_noise is None or np.shape(obs_noise) != (obs_dim,)):
            raise ValueError(f"SACConfig.smoothness {cfg.smoothness:g} needs the observation's noise "
                             f"half-widths, one per policy column ({obs_dim}); got "
                             f"{None if obs_noise is None else np.shape(obs_noise)}")
        # not saved: it is the spec's, and a checkpoint loads against the spec
        self.register_buffer("obs_noise", torch.as_tensor(
            np.zeros(obs_dim) if obs_noise is None else obs_noise, dtype=torch.float32), persistent=False)
        self.policy_dim = obs_dim
        act_dim = len(action_low)
        self.actor = SquashedGaussianActor(obs_dim, action_low, action_high, list(cfg.actor_hidden),
                                           cfg.activation, cfg.init_std, cfg.mean_init_std,
                                           cfg.layer_norm, cfg.dem_temperature)
        critic_args = (obs_dim + privileged_dim, act_dim, list(cfg.critic_hidden), cfg.activation,
                       cfg.num_q, cfg.layer_norm)
        self.critic = TwinQCritic(*critic_args) if cfg.critic == "mse" else \
            GaussianTwinCritic(*critic_args, cfg.critic_stabilizer, cfg.critic_stat_rate)
        self.temperature = EntropyTemperature(act_dim, cfg.init_alpha, cfg.target_entropy_scale,
                                              cfg.auto_alpha) if cfg.temperature == "local" else \
            TrajectoryEntropyTemperature(act_dim, cfg.init_alpha, cfg.target_entropy_scale,
                                         cfg.entropy_budget_scale, cfg.gamma ** cfg.n_step,
                                         TwinQCritic(*critic_args), cfg.critic_lr, cfg.max_grad_norm,
                                         cfg.auto_alpha)
        normalize = cfg.normalize_actor_obs or cfg.normalize_critic_obs
        self.obs_norm = EmpiricalNormalizer(obs_dim) if normalize else nn.Identity()
        self.privileged_norm = EmpiricalNormalizer(privileged_dim) \
            if privileged_dim and cfg.normalize_critic_obs else nn.Identity()
        self.privileged_dim = privileged_dim
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = adam(self.critic.q.parameters(), cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.temperature.log_alpha], lr=cfg.alpha_lr)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    # ---- acting ----------------------------------------------------------------------------
    @property
    def actor_norm(self) -> nn.Module:
        """The actor's and the critic's inputs are normalized with the same statistics (both were
        always fed the same observations), so there is one normalizer; each side may skip it."""
        return self.obs_norm if self.cfg.normalize_actor_obs else nn.Identity()

    @property
    def critic_norm(self) -> nn.Module:
        return self.obs_norm if self.cfg.normalize_critic_obs else nn.Identity()

    def critic_input(self, obs: torch.Tensor) -> torch.Tensor:
        """The critic's normalized input: the policy's columns, then the privileged ones."""
        if not self.privileged_dim:
            return self.critic_norm(obs)
        p = self.policy_dim
        return torch.cat([self.critic_norm(obs[..., :p]), self.privileged_norm(obs[..., p:])], -1)

    def actor_input(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor_norm(obs[..., :self.policy_dim] if self.privileged_dim else obs)

    @torch.no_grad()
    def observe(self, obs: torch.Tensor) -> None:
        """Feed collected observations to the normalizers (never during an update)."""
        p = self.policy_dim
        if isinstance(self.obs_norm, EmpiricalNormalizer):
            self.obs_norm.update(obs[..., :p])
        if isinstance(self.privileged_norm, EmpiricalNormalizer):
            self.privileged_norm.update(obs[..., p:])

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, noise: torch.Tensor | None = None,
            logit_scale: torch.Tensor | None = None) -> torch.Tensor:
        """An action per row; `logit_scale` (B,) is DEM's per-env factor on the modulation logits."""
        x = self.actor_input(obs)
        return self.actor.deterministic(x) if deterministic else self.actor(x, noise, logit_scale)[0]

    # ---- learning --------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on critic, temperature and (every p steps) actor; then Polyak."""
        with torch.autocast(batch.obs.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16"):
            return self._update(batch)

    def _update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        step = int(self.num_updates)
        obs_a, next_a = self.actor_input(batch.obs), self.actor_input(batch.next_obs)
        obs_c, next_c = self.critic_input(batch.obs), self.critic_input(batch.next_obs)
        alpha = self.temperature.alpha

        with torch.no_grad():
            next_act, next_logp = self.actor(next_a)
        critic_loss, info = self.critic.loss(obs_c, batch.actions, batch.returns, batch.bootstrap,
                                             next_c, next_act, self.temperature.target_bonus(next_logp))
        check_finite(step, critic_loss=critic_loss)
        self._step(self.critic_opt, critic_loss, self.critic.q.parameters())

        logs = {"loss/critic": critic_loss.detach(), "q/mean": info["q_mean"],
                **self.temperature.learn(step, obs_c, batch.actions, batch.bootstrap, next_c,
                                         next_act, next_logp)}
        if step % cfg.policy_frequency == 0:
            self.critic.requires_grad_(False)
            act, logp = self.actor(obs_a)
            actor_loss = (alpha * logp - self.critic.value_for_actor(obs_c, act)).mean()
            self.critic.q.requires_grad_(True)
            rule_term, alpha_loss, rule_logs = self.temperature.policy_terms(obs_c, act, logp)
            actor_loss = actor_loss + rule_term
            if cfg.smoothness:
                smooth = self.smoothness_loss(batch.obs, obs_a)
                actor_loss = actor_loss + cfg.smoothness * smooth
                logs["loss/smoothness"] = smooth.detach()
            check_finite(step, actor_loss=actor_loss)
            if cfg.auto_alpha:
                self._step(self.alpha_opt, alpha_loss, [self.temperature.log_alpha])
                logs["loss/alpha"] = alpha_loss.detach()
            self._step(self.actor_opt, actor_loss, self.actor.parameters())
            logs.update({"loss/actor": actor_loss.detach(), "policy/entropy": -logp.mean().detach(),
                         **rule_logs})
        self.critic.update_target(cfg.tau)
        self.temperature.update_target(cfg.tau)
        self.num_updates += 1
        logs["policy/alpha"] = alpha
        return logs

    def smoothness_loss(self, obs: torch.Tensor, obs_a: torch.Tensor) -> torch.Tensor:
        """Mean Euclidean distance between the mean actions for `obs` (`obs_a`: its actor input)
        and for `obs` with another draw of the training noise: a policy whose action follows
        sensor noise shakes the robot (a G1 turned it into 6-25 Hz pelvis yaw), which the rewards
        see only through its effects."""
        own = obs[..., :self.policy_dim]
        noisy = own + (2 * torch.rand_like(own) - 1) * self.obs_noise
        diff = self.actor.deterministic(obs_a) - self.actor.deterministic(self.actor_norm(noisy))
        return torch.sqrt((diff ** 2).sum(-1) + 1e-12).mean()

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params) -> None:
        gradient_step(opt, loss, params, self.cfg.max_grad_norm)

    # ---- persistence -----------------------------------------------------------------------
    def optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, float]]:
        """Each optimizer by its checkpoint key, with the learning rate this config gives it."""
        cfg = self.cfg
        opts = {"actor_opt": (self.actor_opt, cfg.actor_lr), "critic_opt": (self.critic_opt, cfg.critic_lr),
                "alpha_opt": (self.alpha_opt, cfg.alpha_lr)}
        return {**opts, **self.temperature.optimizers()}

    def full_state(self) -> dict:
        """Everything needed to continue the same updates: nets (the temperature rule's among
        them), targets, alpha, optimizers, normalizers and the update counter."""
        return {"model": self.state_dict(),
                **{key: opt.state_dict() for key, (opt, _) in self.optimizers().items()}}

    def load_full_state(self, state: dict) -> None:
        """Restore weights and optimizer moments; the learning rates stay this agent's config, so a
        run resumed (or fine-tuned) with other rates uses them instead of the checkpoint's."""
        self.load_state_dict(state["model"])
        for key, (opt, lr) in self.optimizers().items():
            opt.load_state_dict(state[key])
            for group in opt.param_groups:
                group["lr"] = lr

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Checkpoints written before the normalizers were merged hold `actor_norm.*` and
        `critic_norm.*` (identical statistics): the one in use becomes `obs_norm.*`. DSAC-E
        checkpoints written before the temperature rule owned its entropy critic hold it at
        `entropy_critic.*`."""
        old = "actor_norm." if self.cfg.normalize_actor_obs else "critic_norm."
        for key in [k for k in state_dict if k.startswith((prefix + "actor_norm.", prefix + "critic_norm."))]:
            value = state_dict.pop(key)
            if key.startswith(prefix + old):
                state_dict.setdefault(prefix + "obs_norm." + key[len(prefix + old):], value)
        for key in [k for k in state_dict if k.startswith(prefix + "entropy_critic.")]:
            state_dict[prefix + "temperature." + key[len(prefix):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
