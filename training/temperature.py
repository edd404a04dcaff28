"""The temperature rule, a strategy the SAC update calls at fixed points: the entropy bonus in the
reward critic's target, its own learning after the critic's step, what it adds to the actor's loss
and its own loss, its targets' Polyak step and its optimizers for checkpoints. `temperature: local`
(EntropyTemperature, rsl_rl_sac.md Eq. 4) needs nothing more than alpha; `temperature: trajectory`
(TrajectoryEntropyTemperature, DSAC-E) owns an entropy critic with its target and optimizer, so the
update in sac.py has no branch for either."""
from __future__ import annotations

import math

import torch
from torch import nn

from training.critic import TwinQCritic
from training.optim import adam, check_finite, gradient_step


class EntropyTemperature(nn.Module):
    """alpha = exp(log_alpha), tuned so the policy entropy tracks -scale * action_dim."""

    def __init__(self, action_dim: int, init_alpha: float, target_entropy_scale: float,
                 learnable: bool = True):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)), requires_grad=learnable)
        self.target_entropy = -target_entropy_scale * action_dim

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    def loss(self, log_prob: torch.Tensor) -> torch.Tensor:
        """J(log alpha) = E[-(log alpha)(log pi + H_target)]: alpha grows when entropy is too low."""
        return -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()

    def target_bonus(self, next_logp: torch.Tensor) -> torch.Tensor:
        """The soft-Q target's entropy term, -alpha log pi(a'|s') (rsl_rl_sac.md Eq. 2)."""
        return -self.alpha * next_logp

    def learn(self, step: int, obs: torch.Tensor, actions: torch.Tensor, bootstrap: torch.Tensor,
              next_obs: torch.Tensor, next_act: torch.Tensor,
              next_logp: torch.Tensor) -> dict[str, torch.Tensor]:
        """Whatever the rule learns besides alpha, after the reward critic's step: nothing here."""
        return {}

    def policy_terms(self, obs: torch.Tensor, act: torch.Tensor,
                     logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(what the actor's loss adds to E[alpha log pi - min Q], this rule's loss in log alpha,
        logs): the per-step rule adds nothing."""
        return logp.new_zeros(()), self.loss(logp), {}

    def update_target(self, tau: float) -> None:
        """Polyak step of the rule's own target networks: none here."""

    def optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, float]]:
        """The rule's optimizers besides alpha's, by checkpoint key, with their configured rates:
        none here."""
        return {}


class TrajectoryEntropyTemperature(EntropyTemperature):
    """DSAC-E's rule (dsac_e_tecrl.txt Sec. 3.2 step (4), Eq. 15): alpha is tuned so the policy's
    cumulative entropy, -log pi(a|s) + Q_e(s, a) (the current step plus the entropy critic's
    estimate of the discounted future, Eq. 12), meets the budget of Eq. 9, set after Eq. 15 to
    rho H_0 / (1 - gamma), instead of each step's entropy meeting H_0 (Eq. 6). H_0 is the `local`
    rule's target (-scale * action_dim), so rho = 1 asks for the same entropy per step on average
    and lets the policy spend it where it pays.

    The horizon is 1 / (1 - gamma^n) here, not the paper's 1 / (1 - gamma): the entropy critic
    learns through the core's n-step target (rsl_rl_sac.md Eq. 11), which counts the entropy of
    each window's bootstrap state only, as the `local` path's soft-Q bonus does, so with a steady
    per-step entropy H its cumulative estimate is H / (1 - gamma^n). For n = 1 this is the paper's
    budget; otherwise the budget is on the scale the estimate actually has.

    The sign is Eq. 6's: alpha falls while the cumulative entropy exceeds the budget and rises
    while it falls short. Eq. 15 as printed, -alpha(H_cum - H_budget), would do the opposite and
    drive the entropy away from the budget; the paper calls it an extension of Eq. 6, whose sign
    this keeps. Like the `local` rule, the gradient is taken in log alpha.

    The entropy critic (Eq. 12-13) is a plain twin critic whose loss is the squared error of Eq. 13
    whatever `critic:` the reward critic is; the reward critic's target takes no entropy (PEV,
    Eq. 11) and the actor climbs alpha Q_e besides (PIM, Eq. 14)."""

    def __init__(self, action_dim: int, init_alpha: float, target_entropy_scale: float,
                 budget_scale: float, horizon_discount: float, entropy_critic: TwinQCritic,
                 critic_lr: float, max_grad_norm: float, learnable: bool = True):
        super().__init__(action_dim, init_alpha, target_entropy_scale, learnable)
        self.budget = budget_scale * self.target_entropy / (1.0 - horizon_discount)
        self.entropy_critic = entropy_critic
        self.max_grad_norm, self.critic_lr = max_grad_norm, critic_lr
        self.critic_opt = adam(entropy_critic.q.parameters(), critic_lr)

    def loss(self, log_prob: torch.Tensor, future_entropy: torch.Tensor) -> torch.Tensor:
        """J(log alpha) = E[(log alpha)(-log pi + Q_e - H_budget)]."""
        cumulative = future_entropy.detach() - log_prob.detach()
        return (self.log_alpha * (cumulative - self.budget)).mean()

    def target_bonus(self, next_logp: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(next_logp)

    def learn(self, step: int, obs: torch.Tensor, actions: torch.Tensor, bootstrap: torch.Tensor,
              next_obs: torch.Tensor, next_act: torch.Tensor,
              next_logp: torch.Tensor) -> dict[str, torch.Tensor]:
        """PIS, Eq. 13: y_e = gamma (H(pi(.|s')) + Q_e'(s', a')) through the core's n-step,
        timeout-aware target: no reward (the window's returns are zero), bootstrap gamma^k m, and
        the entropy of s' estimated by -log pi(a'|s') as Eq. 3 does."""
        loss, info = self.entropy_critic.loss(obs, actions, torch.zeros_like(next_logp), bootstrap,
                                              next_obs, next_act, -next_logp)
        check_finite(step, entropy_critic_loss=loss)
        gradient_step(self.critic_opt, loss, self.entropy_critic.q.parameters(), self.max_grad_norm)
        return {"loss/entropy_critic": loss.detach(), "q/entropy_mean": info["q_mean"]}

    def policy_terms(self, obs: torch.Tensor, act: torch.Tensor,
                     logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """PIM, Eq. 14: -alpha Q_e(s, a), differentiable in a only (the actor's loss must not move
        the entropy critic's weights); TUP, Eq. 15."""
        self.entropy_critic.q.requires_grad_(False)
        future = self.entropy_critic.value_for_actor(obs, act)
        self.entropy_critic.q.requires_grad_(True)
        logs = {"policy/trajectory_entropy": (future - logp).mean().detach()}
        return -self.alpha * future.mean(), self.loss(logp, future), logs

    def update_target(self, tau: float) -> None:
        self.entropy_critic.update_target(tau)

    def optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, float]]:
        return {"entropy_critic_opt": (self.critic_opt, self.critic_lr)}
