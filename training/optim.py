"""The gradient step every part of the learner takes the same way (the actor, the critics, the
temperature and DSAC-E's entropy critic), and the non-finite check that stops a run with the name
of the tensor that went bad instead of training on NaN."""
from __future__ import annotations

import torch
from torch import nn


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; names the step and the tensor."""


def adam(params, lr: float) -> torch.optim.Optimizer:
    """Fused Adam (one kernel for all parameters) where this torch build has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def gradient_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, max_grad_norm: float) -> None:
    """Backward, clip the norm (when max_grad_norm > 0), step. In a torchrun group the gradients
    are averaged across processes during backward (training/distributed.py), before the clip."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        nn.utils.clip_grad_norm_(list(params), max_grad_norm)
    opt.step()


def check_finite(step: int, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"non-finite {name} at update {step}")
