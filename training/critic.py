"""The SAC critic: an ensemble of Q-functions (clipped double Q) with Polyak-averaged targets.

A critic is a replaceable part of the learner: it owns its target computation and loss, so a
distributional critic (FastDSAC / DSAC-T) can take its place without touching the update step."""
from __future__ import annotations

import copy

import torch
from torch import nn

from training.networks import EnsembleMLP


class TwinQCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], activation: str = "silu",
                 num_q: int = 2, layer_norm: bool = False):
        super().__init__()
        self.q = EnsembleMLP(num_q, obs_dim + act_dim, hidden, 1, activation, layer_norm)
        self.q_target = copy.deepcopy(self.q)
        self.q_target.requires_grad_(False)

    def q_values(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """(E, B)."""
        return self.q(torch.cat([obs, act], -1)).to(obs.dtype).squeeze(-1)

    def value_for_actor(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min_i Q_i(s, a): the pessimistic value the actor climbs (Eq. 3)."""
        return self.q_values(obs, act).min(0).values

    @torch.no_grad()
    def target_value(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.q_target(torch.cat([obs, act], -1)).to(obs.dtype).squeeze(-1).min(0).values

    def loss(self, obs: torch.Tensor, act: torch.Tensor, returns: torch.Tensor,
             bootstrap: torch.Tensor, next_obs: torch.Tensor, next_act: torch.Tensor,
             next_entropy_bonus: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Eq. 2 with the n-step target of Eq. 11: y = R + gamma^k m (min Q' - alpha log pi).

        `bootstrap` already holds gamma^k times the survival/timeout mask of each sample."""
        with torch.no_grad():
            y = returns + bootstrap * (self.target_value(next_obs, next_act) + next_entropy_bonus)
        q = self.q_values(obs, act)
        loss = (q - y.unsqueeze(0)).pow(2).mean(1).mean(0)
        return loss, {"q_mean": q.mean().detach(), "target_mean": y.mean()}

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak: target <- tau * online + (1 - tau) * target."""
        torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()), tau)
