"""The SAC learner (RSL-RL-SAC, rsl_rl_sac.md Algorithm 1): one update step shared by simulation
pretraining and fine-tuning on robot data.

The actor, the critic and the temperature rule are parts passed in, so FastDSAC's and DSAC-E's
variants slot into the same step."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.actor import SquashedGaussianActor
from training.critic import TwinQCritic
from training.networks import EmpiricalNormalizer
from training.replay_buffer import Batch
from training.temperature import EntropyTemperature


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
    max_grad_norm: float = 1.0
    policy_frequency: int = 1
    n_step: int = 5
    normalize_actor_obs: bool = True
    normalize_critic_obs: bool = True
    num_q: int = 2
    amp: str = "none"   # "bf16": matrix products in bfloat16 (losses, log-probs and optimizers stay fp32)


AMP_MODES = ("none", "bf16")


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Fused Adam (one kernel for all parameters) where this torch build has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; names the step and the tensor."""


class SAC(nn.Module):
    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 cfg: SACConfig):
        super().__init__()
        self.cfg = cfg
        act_dim = len(action_low)
        self.actor = SquashedGaussianActor(obs_dim, action_low, action_high, list(cfg.actor_hidden),
                                           cfg.activation, cfg.init_std, cfg.mean_init_std,
                                           cfg.layer_norm)
        self.critic = TwinQCritic(obs_dim, act_dim, list(cfg.critic_hidden), cfg.activation,
                                  cfg.num_q, cfg.layer_norm)
        self.temperature = EntropyTemperature(act_dim, cfg.init_alpha, cfg.target_entropy_scale,
                                              cfg.auto_alpha)
        self.actor_norm = EmpiricalNormalizer(obs_dim) if cfg.normalize_actor_obs else nn.Identity()
        self.critic_norm = EmpiricalNormalizer(obs_dim) if cfg.normalize_critic_obs else nn.Identity()
        self.actor_opt = _adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = _adam(self.critic.q.parameters(), cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.temperature.log_alpha], lr=cfg.alpha_lr)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    # ---- acting ----------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, obs: torch.Tensor) -> None:
        """Feed collected observations to the normalizers (never during an update)."""
        for norm in (self.actor_norm, self.critic_norm):
            if isinstance(norm, EmpiricalNormalizer):
                norm.update(obs)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False,
            noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.actor_norm(obs)
        return self.actor.deterministic(x) if deterministic else self.actor(x, noise)[0]

    # ---- learning --------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on critic, temperature and (every p steps) actor; then Polyak."""
        with torch.autocast(batch.obs.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16"):
            return self._update(batch)

    def _update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        step = int(self.num_updates)
        obs_a, next_a = self.actor_norm(batch.obs), self.actor_norm(batch.next_obs)
        obs_c, next_c = self.critic_norm(batch.obs), self.critic_norm(batch.next_obs)
        alpha = self.temperature.alpha

        with torch.no_grad():
            next_act, next_logp = self.actor(next_a)
        critic_loss, info = self.critic.loss(obs_c, batch.actions, batch.returns, batch.bootstrap,
                                             next_c, next_act, -alpha * next_logp)
        self._check_finite(step, critic_loss=critic_loss)
        self._step(self.critic_opt, critic_loss, self.critic.q.parameters())

        logs = {"loss/critic": critic_loss.detach(), "q/mean": info["q_mean"]}
        if step % cfg.policy_frequency == 0:
            self.critic.requires_grad_(False)
            act, logp = self.actor(obs_a)
            actor_loss = (alpha * logp - self.critic.value_for_actor(obs_c, act)).mean()
            self.critic.q.requires_grad_(True)
            self._check_finite(step, actor_loss=actor_loss)
            if cfg.auto_alpha:
                alpha_loss = self.temperature.loss(logp)
                self._step(self.alpha_opt, alpha_loss, [self.temperature.log_alpha])
                logs["loss/alpha"] = alpha_loss.detach()
            self._step(self.actor_opt, actor_loss, self.actor.parameters())
            logs.update({"loss/actor": actor_loss.detach(), "policy/entropy": -logp.mean().detach()})
        self.critic.update_target(cfg.tau)
        self.num_updates += 1
        logs["policy/alpha"] = alpha
        return logs

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(list(params), self.cfg.max_grad_norm)
        opt.step()

    @staticmethod
    def _check_finite(step: int, **tensors: torch.Tensor) -> None:
        for name, t in tensors.items():
            if not bool(torch.isfinite(t).all()):
                raise NonFiniteError(f"non-finite {name} at update {step}")

    # ---- persistence -----------------------------------------------------------------------
    def full_state(self) -> dict:
        """Everything needed to continue the same updates: nets, targets, alpha, optimizers,
        normalizers and the update counter."""
        return {"model": self.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "alpha_opt": self.alpha_opt.state_dict()}

    def load_full_state(self, state: dict) -> None:
        """Restore weights and optimizer moments; the learning rates stay this agent's config, so a
        run resumed (or fine-tuned) with other rates uses them instead of the checkpoint's."""
        self.load_state_dict(state["model"])
        cfg = self.cfg
        for opt, key, lr in ((self.actor_opt, "actor_opt", cfg.actor_lr),
                             (self.critic_opt, "critic_opt", cfg.critic_lr),
                             (self.alpha_opt, "alpha_opt", cfg.alpha_lr)):
            opt.load_state_dict(state[key])
            for group in opt.param_groups:
                group["lr"] = lr
