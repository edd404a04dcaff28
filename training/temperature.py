"""Automatic entropy temperature (rsl_rl_sac.md Eq. 4), a replaceable part of the learner: a
trajectory entropy budget (DSAC-E) can take its place with the same interface."""
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
