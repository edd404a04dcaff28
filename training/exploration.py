"""Exploration noise for collection. SAC samples a fresh Gaussian every step; at 50 Hz with the
small std of rsl_rl_sac.md Sec. 3.3 that white noise averages out within a stride and never moves
the base anywhere new. Pink noise (power spectrum 1/f, Eberhard et al., ICLR 2023) has the same
per-step distribution but drifts over many steps, so a policy that only knows how to walk forward
still gets shoved sideways or backward for long enough to see what that is worth.

What it changes: each action is still a draw from the policy's Gaussian taken alone, but given the
previous steps it is not (autocorrelation about 0.76 at lag 1), so the data come from a behaviour
policy other than pi. The one-step target does not care (it evaluates pi at s' itself); an n-step
target sums rewards earned by the behaviour's intermediate actions, so with n > 1 it estimates the
value of acting with correlated noise for n - 1 steps, then following pi: a bias towards that
noise's value, which grows with n and the noise scale. The update's own reparameterized samples and
log-probabilities stay those of the Gaussian policy."""
from __future__ import annotations

import math

import torch

NOISE_KINDS = ("white", "pink")
BLOCK_STEPS = 1000  # one 20 s episode at 50 Hz: the slowest drift the noise contains


class PinkNoise:
    """Unit-variance 1/f Gaussian sequences, one per env and action dimension, drawn in blocks of
    `length` steps from the trainer's generator so a resumed run draws the same."""

    def __init__(self, num_envs: int, dim: int, generator: torch.Generator, length: int = BLOCK_STEPS):
        self.shape, self.length, self.gen = (num_envs, dim), length, generator
        freqs = torch.fft.rfftfreq(length, dtype=torch.float64).clamp(min=1.0 / length)
        self.scale = freqs.pow(-0.5)                      # amplitude 1/sqrt(f): power 1/f
        # irfft is a sum of L terms; the zero and Nyquist bins count once, the others twice (Hermitian)
        weight = torch.full_like(self.scale, 4.0)
        weight[0] = 1.0
        if length % 2 == 0:
            weight[-1] = 1.0
        self.std = (weight * self.scale.pow(2)).sum().sqrt() / length
        self.block = self._draw()
        self.pos = 0

    def _draw(self) -> torch.Tensor:
        n = self.scale.numel()
        re = torch.randn(*self.shape, n, generator=self.gen, dtype=torch.float64)
        im = torch.randn(*self.shape, n, generator=self.gen, dtype=torch.float64)
        im[..., 0] = 0.0
        if self.length % 2 == 0:
            im[..., -1] = 0.0
        x = torch.fft.irfft(torch.complex(re, im) * self.scale, n=self.length)
        return (x / self.std).to(torch.float32)

    def next(self) -> torch.Tensor:
        """(num_envs, dim) noise for this step."""
        if self.pos == self.length:
            self.block, self.pos = self._draw(), 0
        self.pos += 1
        return self.block[..., self.pos - 1]

    def state_dict(self) -> dict:
        return {"block": self.block.clone(), "pos": self.pos, "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.block, self.pos = state["block"].clone(), int(state["pos"])
        self.gen.set_state(state["rng"])


class EnvNoiseScales:
    """A noise multiplier per env, drawn log-uniformly from [low, high] whenever that env's episode
    ends (per-actor exploration as in Ape-X, FastTD3's mixed noise). Some robots explore far beyond
    the policy's std (stepping backward where the policy would stand) while others stay close to it
    and keep the data on-task; SAC's update never reads the behaviour policy, so nothing else
    changes."""

    def __init__(self, num_envs: int, low: float, high: float, generator: torch.Generator):
        self.low, self.high, self.gen = low, high, generator
        self.scale = torch.ones(num_envs)
        self.redraw(torch.ones(num_envs, dtype=torch.bool))

    def redraw(self, envs: torch.Tensor) -> None:
        """New multipliers for the envs flagged in the boolean mask `envs`."""
        u = torch.rand(self.scale.shape, generator=self.gen)
        fresh = torch.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        self.scale = torch.where(envs.cpu(), fresh, self.scale)

    def state_dict(self) -> dict:
        return {"scale": self.scale.clone(), "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.scale = state["scale"].clone()
        self.gen.set_state(state["rng"])
