"""Pink exploration noise: each step is still a standard normal draw (so the policy's std means
what it says), but successive steps are correlated over many ticks, which white noise is not."""
from __future__ import annotations

import torch

from training.actor import SquashedGaussianActor
from training.exploration import PinkNoise


def _sequence(length: int, steps: int, seed: int = 0) -> torch.Tensor:
    noise = PinkNoise(64, 12, torch.Generator().manual_seed(seed), length)
    return torch.stack([noise.next() for _ in range(steps)], -1)        # (envs, dims, steps)


def _autocorrelation(x: torch.Tensor, lag: int) -> float:
    return float((x[..., :-lag] * x[..., lag:]).mean() / x.var())


def test_each_step_is_standard_normal_across_blocks():
    x = _sequence(length=500, steps=1500)             # three blocks
    assert abs(float(x.mean())) < 0.05
    assert abs(float(x.std()) - 1.0) < 0.03
    for odd in (499, 500):                            # odd and even block lengths normalize alike
        assert abs(float(_sequence(odd, odd).std()) - 1.0) < 0.05


def test_steps_are_correlated_over_a_stride_unlike_white_noise():
    x = _sequence(length=1000, steps=1000)
    white = torch.randn(64, 12, 1000, generator=torch.Generator().manual_seed(0))
    assert _autocorrelation(x, 10) > 0.3              # half a second at 50 Hz
    assert abs(_autocorrelation(white, 10)) < 0.02


def test_the_actor_uses_the_noise_it_is_given():
    """Collection passes its own eps; the same eps gives the same action, zero eps the mean."""
    torch.manual_seed(0)
    actor = SquashedGaussianActor(8, -torch.ones(3).numpy(), torch.ones(3).numpy(), [16])
    obs = torch.randn(5, 8)
    eps = torch.randn(5, 3)
    assert torch.equal(actor(obs, eps)[0], actor(obs, eps)[0])
    assert torch.allclose(actor(obs, torch.zeros(5, 3))[0], actor.deterministic(obs))
    assert not torch.allclose(actor(obs, eps)[0], actor.deterministic(obs))
