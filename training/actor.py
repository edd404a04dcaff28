"""The SAC actor: a tanh-squashed Gaussian scaled to per-joint bounds (rsl_rl_sac.md Eq. 5-6),
initialized so exploration starts at the default pose with std sigma0 on every joint (Sec. 3.3).

With asymmetric joint limits the bounds' centre b is not zero (a Go2 rear thigh: b = 4.0, so a
zero-mean head would command the default pose + 1.0 rad and start every robot in a crouch). Sec. 3.3
wants initial actions at zero, i.e. at the default pose, so the squash is anchored there:
a = b + c tanh(x + x0) with the constant x0 = atanh(-b / c). This is Eq. 5 with the mean shifted by
a constant; the bounds, the zero-bias mean head of Eq. 7 and the log-probability of Eq. 6 (with
x + x0 in the tanh term) are unchanged.

An actor is a replaceable part of the learner: it maps normalized observations to
(action, log_prob) and exposes its deterministic path for evaluation and export.

`dem_temperature` switches on FastDSAC's Dimension-wise Entropy Modulation (fastdsac.txt Sec. 3.1,
Eq. 5-7): a third head gives logits z, the weights w = D softmax(z / T) are positive with mean 1,
and each dimension's std becomes w_i exp(l_i), so the policy moves exploration between joints
under a fixed budget. The log-probability stays exact (log sigma_i = l_i + log w_i). During
collection a per-env factor k may multiply the logits (Eq. 7: k > 1 concentrates the budget, k < 1
spreads it). The weights start at 1 (zero logit head), so the initial std is sigma0 as in
Sec. 3.3; the deterministic path, and so the exported bundle, is the same as the Gaussian actor's."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from training.networks import full_precision, trunk

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


class SquashedGaussianActor(nn.Module):
    def __init__(self, obs_dim: int, low: np.ndarray, high: np.ndarray, hidden: list[int],
                 activation: str = "silu", init_std: float = 0.15, mean_init_std: float = 0.01,
                 layer_norm: bool = False, dem_temperature: float | None = None):
        super().__init__()
        act_dim = len(low)
        self.act_dim = act_dim
        self.dem_temperature = dem_temperature
        self.trunk = trunk(obs_dim, hidden, activation, layer_norm)
        self.head = nn.Linear(hidden[-1], (2 if dem_temperature is None else 3) * act_dim)
        low_t, high_t = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("center", 0.5 * (high_t + low_t))      # b
        self.register_buffer("half_range", 0.5 * (high_t - low_t))  # c
        self.register_buffer("anchor", torch.atanh((-self.center / self.half_range).clamp(-0.999, 0.999)))
        self.reset_head(init_std, mean_init_std)

    @torch.no_grad()
    def reset_head(self, init_std: float, mean_init_std: float) -> None:
        """Eq. 7-8: mean head N(0, eps) weights, zero bias; log-std head zero weights, log(sigma0) bias."""
        d = self.act_dim
        self.head.weight[:d].normal_(0.0, mean_init_std)
        self.head.bias[:d].zero_()
        self.head.weight[d:].zero_()
        self.head.bias[d:2 * d].fill_(math.log(init_std))
        self.head.bias[2 * d:].zero_()          # DEM logits: every weight starts at 1

    def distribution_params(self, obs: torch.Tensor, logit_scale: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log std) of the pre-squash Gaussian; with DEM the log std includes log w."""
        out = full_precision(self.head, self.trunk(obs)).to(obs.dtype)
        mean, log_std = out[..., :self.act_dim], out[..., self.act_dim:2 * self.act_dim]
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        if self.dem_temperature is not None:
            log_std = log_std + self._log_weights(out[..., 2 * self.act_dim:], logit_scale)
        return mean, log_std

    def _log_weights(self, logits: torch.Tensor, logit_scale: torch.Tensor | None) -> torch.Tensor:
        """log w = log D + log_softmax(k z / T): w > 0, mean(w) = 1 (Eq. 5, 7)."""
        z = logits / self.dem_temperature
        if logit_scale is not None:
            z = z * logit_scale.reshape(-1, 1)
        return math.log(self.act_dim) + torch.log_softmax(z, dim=-1)

    def dem_weights(self, obs: torch.Tensor, logit_scale: torch.Tensor | None = None) -> torch.Tensor:
        """The modulation weights w (B, D) (all ones without DEM)."""
        if self.dem_temperature is None:
            return torch.ones(obs.shape[0], self.act_dim, dtype=obs.dtype, device=obs.device)
        out = full_precision(self.head, self.trunk(obs)).to(obs.dtype)
        return self._log_weights(out[..., 2 * self.act_dim:], logit_scale).exp()

    def forward(self, obs: torch.Tensor, noise: torch.Tensor | None = None,
                logit_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized sample a = b + c tanh(mu + sigma eps) and its exact log-probability;
        eps is standard normal unless collection supplies its own (training.exploration), and
        `logit_scale` (B,) is DEM's per-env logit factor (collection only)."""
        mean, log_std = self.distribution_params(obs, logit_scale)
        x = mean + log_std.exp() * (torch.randn_like(mean) if noise is None else noise)
        return self.squash(x), self.log_prob(x, mean, log_std)

    def squash(self, x: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * torch.tanh(x + self.anchor)

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        """Eq. 6. log(1 - tanh^2 y) is written as 2 (log 2 - y - softplus(-2y)) to stay finite."""
        gauss = -0.5 * ((x - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        y = x + self.anchor
        log_det_tanh = 2.0 * (math.log(2.0) - y - nn.functional.softplus(-2.0 * y))
        return (gauss - log_det_tanh - torch.log(self.half_range)).sum(-1)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self.distribution_params(obs)
        return self.squash(mean)
