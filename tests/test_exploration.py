"""Exploration noise. Pink: each step is still a standard normal draw (so the policy's std means
what it says), but successive steps are correlated over many ticks, which white noise is not."""
from __future__ import annotations

import torch

from training.actor import SquashedGaussianActor
from training.exploration import EnvNoiseScales, PinkNoise


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


def test_the_power_spectrum_falls_as_one_over_f():
    """Pink is power ~ 1/f: the log-log slope of the periodogram is -1 (red noise would be -2)."""
    x = _sequence(length=1000, steps=1000).double()
    power = torch.fft.rfft(x, dim=-1).abs().pow(2).mean((0, 1))[1:]         # drop f = 0
    f = torch.fft.rfftfreq(1000, dtype=torch.float64)[1:]
    keep = (f > 0.005) & (f < 0.4)
    logf, logp = f[keep].log(), power[keep].log()
    slope = float(((logf - logf.mean()) * (logp - logp.mean())).sum() / (logf - logf.mean()).pow(2).sum())
    assert -1.15 < slope < -0.85, slope


def test_the_actor_uses_the_noise_it_is_given():
    """Collection passes its own eps; the same eps gives the same action, zero eps the mean."""
    torch.manual_seed(0)
    actor = SquashedGaussianActor(8, -torch.ones(3).numpy(), torch.ones(3).numpy(), [16])
    obs = torch.randn(5, 8)
    eps = torch.randn(5, 3)
    assert torch.equal(actor(obs, eps)[0], actor(obs, eps)[0])
    assert torch.allclose(actor(obs, torch.zeros(5, 3))[0], actor.deterministic(obs))
    assert not torch.allclose(actor(obs, eps)[0], actor.deterministic(obs))


def test_env_scales_are_log_uniform_and_redrawn_only_where_episodes_ended():
    scales = EnvNoiseScales(20000, 0.5, 3.0, torch.Generator().manual_seed(0))
    s = scales.scale
    assert float(s.min()) >= 0.5 and float(s.max()) <= 3.0
    assert abs(float(s.median()) - (0.5 * 3.0) ** 0.5) < 0.03        # geometric mean
    done = torch.zeros(20000, dtype=torch.bool)
    done[:100] = True
    scales.redraw(done)
    assert torch.equal(scales.scale[100:], s[100:]) and not torch.equal(scales.scale[:100], s[:100])


def test_trainer_scales_each_envs_pink_noise_by_its_own_multiplier(tmp_path):
    """Two trainers with one seed draw the same pink sequence; a fixed multiplier of 2 must show up
    as exactly twice the noise the actor is given."""
    from deploy.spec import RobotSpec
    from training.envs.velocity import TaskConfig, VelocityEnv
    from training.runner import Trainer
    from training.smoke import smoke_config

    spec = RobotSpec.load("go2")
    out = []
    for scale in ((1.0, 1.0), (2.0, 2.0)):
        cfg = smoke_config(num_envs=4, exploration_noise="pink", exploration_scale=scale)
        env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 4, seed=0)
        trainer = Trainer(cfg, spec, env, None, tmp_path / str(scale[0]), "velocity_flat", seed=0)
        out.append(torch.stack([trainer._exploration_noise(trainer.obs) for _ in range(5)]))
    assert torch.allclose(out[1], 2.0 * out[0])
