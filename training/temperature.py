"""Automatic entropy temperature (rsl_rl_sac.md Eq. 4), a replaceable part of the learner: the
trajectory entropy budget of DSAC-E (`temperature: trajectory`) takes its place with the same
`alpha` and a `loss` that also takes the entropy critic's estimate of the future entropy."""
from __future__ import annotations

import math

import torch
from torch import nn


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
    this keeps. Like the `local` rule, the gradient is taken in log alpha."""

    def __init__(self, action_dim: int, init_alpha: float, target_entropy_scale: float,
                 budget_scale: float, horizon_discount: float, learnable: bool = True):
        super().__init__(action_dim, init_alpha, target_entropy_scale, learnable)
        self.budget = budget_scale * self.target_entropy / (1.0 - horizon_discount)

    def loss(self, log_prob: torch.Tensor, future_entropy: torch.Tensor) -> torch.Tensor:
        """J(log alpha) = E[(log alpha)(-log pi + Q_e - H_budget)]."""
        cumulative = future_entropy.detach() - log_prob.detach()
        return (self.log_alpha * (cumulative - self.budget)).mean()
