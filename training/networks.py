"""Building blocks shared by actors and critics: MLPs, an ensemble MLP evaluated as one batched
matrix product (twin critics cost one pass, not two), and empirical observation normalization
saved and exported with the model."""
from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"silu": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def trunk(in_dim: int, hidden: list[int], activation: str = "silu",
          layer_norm: bool = False) -> nn.Sequential:
    """Hidden layers only, each followed by its activation: heads are attached by the caller."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers.append(nn.Linear(a, b))
        if layer_norm:
            layers.append(nn.LayerNorm(b))
        layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied to an (E, B, in) input with one baddbmm."""

    def __init__(self, ensemble: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    def __init__(self, ensemble: int, in_dim: int, hidden: list[int], out_dim: int,
                 activation: str = "silu", layer_norm: bool = False):
        super().__init__()
        self.ensemble = ensemble
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers.append(EnsembleLinear(ensemble, a, b))
            if layer_norm:
                layers.append(nn.LayerNorm(b))
            layers.append(ACTIVATIONS[activation]())
        layers.append(EnsembleLinear(ensemble, dims[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in) -> (E, B, out): every member sees the same input. The output layer always runs in
        the weights' precision, so mixed precision never rounds the values themselves."""
        h = self.net[:-1](x.unsqueeze(0).expand(self.ensemble, -1, -1))
        return full_precision(self.net[-1], h)


def full_precision(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Apply `layer` with autocast off, in the dtype of its parameters."""
    dtype = next(layer.parameters()).dtype
    with torch.autocast(h.device.type, enabled=False):
        return layer(h.to(dtype))


class EmpiricalNormalizer(nn.Module):
    """Running mean/variance (parallel Welford); frozen in eval/export, saved with the model."""

    def __init__(self, dim: int, eps: float = 1e-2):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        w = float(n / total)
        self.mean += delta * w
        self.var.copy_(self.var * (1 - w) + batch_var * w + delta.pow(2) * w * (1 - w))
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / torch.sqrt(self.var + self.eps)
