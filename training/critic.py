"""The SAC critic: an ensemble of Q-functions (clipped double Q) with Polyak-averaged targets;
`critic: gaussian` swaps in FastDSAC's distributional one (GaussianTwinCritic).

A critic is a replaceable part of the learner: it owns its target computation and loss, so a
distributional critic (FastDSAC / DSAC-T) can take its place without touching the update step."""
from __future__ import annotations

import copy

import torch
from torch import nn

from training.networks import EnsembleMLP


class TwinQCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], activation: str = "silu",
                 num_q: int = 2, layer_norm: bool = False, outputs: int = 1):
        super().__init__()
        self.q = EnsembleMLP(num_q, obs_dim + act_dim, hidden, outputs, activation, layer_norm)
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
        return loss, {"q_mean": q.mean().detach()}

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak: target <- tau * online + (1 - tau) * target."""
        torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()), tau)


def gaussian_critic_loss(q: torch.Tensor, std: torch.Tensor, y_q: torch.Tensor, y_z: torch.Tensor,
                         omega: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The streamlined DSAC-T objective of FastDSAC (fastdsac.txt Eq. 8), as a surrogate whose
    gradients are, per sample and member (then averaged):

        dL/dq     = -(omega + eps) (y_q - q) / (sigma^2 + eps)                      (I)
        dL/dsigma = -(omega + eps) ((y_z - q)^2 - sigma^2) / (sigma^3 + eps^1.5)    (II)

    (I) pulls the mean to the expected target y_q (expected value substitution: the target's mean,
    not a sample), (II) pulls sigma to the spread of the sampled target y_z (no clipping); the
    factor omega (running mean of sigma^2) over sigma^2 + eps scales the step so that the learning
    rate means the same at any return scale, and eps keeps small sigmas from exploding it."""
    sd = std.detach()
    scale = omega + eps
    mean_term = -(y_q - q).detach() / (sd.pow(2) + eps) * q
    var_term = -((y_z - q.detach()).pow(2) - sd.pow(2)) / (sd.pow(3) + eps.pow(1.5)) * std
    return (scale * (mean_term + var_term)).mean(-1).mean(0)


class GaussianTwinCritic(TwinQCritic):
    """FastDSAC's continuous distributional critic (DSAC-T): each member predicts a return
    distribution N(q, sigma^2). The target takes, per sample, the member of smaller target mean
    (minimum-mean target) and uses its mean for y_q and a sample of it for y_z, both through the
    n-step target of Eq. 11: y = R + gamma^k m (z' - alpha log pi), so y_z's spread is
    gamma^k sigma', right for any window length.

    Running statistics (saved with the model): omega, the mean of sigma^2 over recent batches
    (rate `stat_rate`), and the mean |R| of the batches' n-step returns, which sets the stabilizer
    eps = (stabilizer * mean |R|)^2 in the units of the returns: a Go2 reward scaled by dt and a
    Pendulum reward of -16 per step get the same relative damping."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], activation: str = "silu",
                 num_q: int = 2, layer_norm: bool = False, stabilizer: float = 0.1,
                 stat_rate: float = 0.005):
        super().__init__(obs_dim, act_dim, hidden, activation, num_q, layer_norm, outputs=2)
        self.stabilizer, self.stat_rate = stabilizer, stat_rate
        self.register_buffer("omega", torch.zeros(()))
        self.register_buffer("return_scale", torch.zeros(()))

    @staticmethod
    def _split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, B, 2) -> mean (E, B), std (E, B) > 0."""
        return out[..., 0], nn.functional.softplus(out[..., 1]) + 1e-4

    def distribution(self, obs: torch.Tensor, act: torch.Tensor, target: bool = False):
        net = self.q_target if target else self.q
        return self._split(net(torch.cat([obs, act], -1)).to(obs.dtype))

    def q_values(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs, act)[0]

    @torch.no_grad()
    def target_value(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs, act, target=True)[0].min(0).values

    @torch.no_grad()
    def targets(self, returns: torch.Tensor, bootstrap: torch.Tensor, next_obs: torch.Tensor,
                next_act: torch.Tensor, next_entropy_bonus: torch.Tensor):
        """(y_q, y_z): the expected and the sampled target of the minimum-mean member."""
        mean, std = self.distribution(next_obs, next_act, target=True)
        pick = mean.argmin(0, keepdim=True)
        m, s = mean.gather(0, pick)[0], std.gather(0, pick)[0]
        z = m + torch.randn_like(m).clamp(-3.0, 3.0) * s
        return returns + bootstrap * (m + next_entropy_bonus), returns + bootstrap * (z + next_entropy_bonus)

    def loss(self, obs: torch.Tensor, act: torch.Tensor, returns: torch.Tensor,
             bootstrap: torch.Tensor, next_obs: torch.Tensor, next_act: torch.Tensor,
             next_entropy_bonus: torch.Tensor) -> tuple[torch.Tensor, dict]:
        y_q, y_z = self.targets(returns, bootstrap, next_obs, next_act, next_entropy_bonus)
        q, std = self.distribution(obs, act)
        with torch.no_grad():
            self._track(self.omega, std.pow(2).mean())
            self._track(self.return_scale, returns.abs().mean())
            eps = (self.stabilizer * self.return_scale).pow(2) + 1e-8
        loss = gaussian_critic_loss(q, std, y_q.unsqueeze(0), y_z.unsqueeze(0), self.omega, eps)
        return loss, {"q_mean": q.mean().detach(), "q_std": std.mean().detach()}

    def _track(self, stat: torch.Tensor, value: torch.Tensor) -> None:
        """Running mean; the first batch sets it."""
        stat.copy_(torch.where(stat == 0, value, stat + self.stat_rate * (value - stat)))
