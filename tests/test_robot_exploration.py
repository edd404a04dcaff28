"""Exploration on the robot (issue: fine-tuning needs it): a bundle carries the policy's pre-squash
mean and std as extra ONNX outputs; the Controller samples within them at a runtime scale, before
the safety filter; at scale 0 deployment is the deterministic policy, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy.backends.mujoco_backend import MujocoBackend
from deploy.bundle import PolicyBundle
from deploy.controller import Controller
from deploy.registry import PolicyRegistry
from deploy.spec import REPO_ROOT, RobotSpec
from deploy.state_machine import Mode
from training.export import export_checkpoint, load_agent

CHECKPOINT = REPO_ROOT / "models" / "checkpoints" / "go2_cpu" / "model.pt"


@pytest.fixture(scope="module")
def spec():
    return RobotSpec.load("go2")


@pytest.fixture(scope="module")
def exploring(spec, tmp_path_factory):
    """The shipped Go2 checkpoint exported now: with the exploration outputs."""
    path = export_checkpoint(CHECKPOINT, tmp_path_factory.mktemp("policies"), log=lambda *a: None,
                             parity_samples=300)
    return PolicyBundle.load(path, spec, providers="cpu")


def _targets(spec, bundle, scale: float | None, ticks: int = 300) -> list[np.ndarray]:
    """Every joint target the Controller sends while the bundle walks at 0.4 m/s."""
    backend = MujocoBackend(spec, seed=4)
    sent = []
    write = backend.write_command
    backend.write_command = lambda q, kp, kd: (sent.append(np.array(q)), write(q, kp, kd))[1]
    ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    if scale is not None:
        ctrl.set_exploration(scale, seed=0)
    ctrl.set_command(0.4, 0.0, 0.0)
    ctrl.request_stand()
    for _ in range(ticks):
        if ctrl.mode is Mode.STAND:
            ctrl.request_policy()
        ctrl.tick()
        backend.advance()
    assert ctrl.mode is Mode.POLICY
    backend.close()
    return sent


def test_scale_zero_is_the_shipped_deterministic_deployment_bit_for_bit(spec, exploring):
    shipped = PolicyBundle.load(PolicyRegistry().resolve("current", "go2"), spec, providers="cpu")
    assert exploring.can_explore and not shipped.can_explore
    reference = _targets(spec, shipped, None)
    for got in (_targets(spec, exploring, None), _targets(spec, exploring, 0.0)):
        assert len(got) == len(reference)
        assert all(np.array_equal(a, b) for a, b in zip(got, reference))
    assert not all(np.array_equal(a, b) for a, b in zip(_targets(spec, exploring, 0.5), reference))


def test_samples_are_the_training_actors_samples(exploring):
    """explore(obs, s, eps) is what the trained actor draws with noise s * eps (its own path)."""
    _, _, agent, _ = load_agent(CHECKPOINT)
    agent = agent.double()
    rng = np.random.default_rng(1)
    obs = rng.normal(0, 1, (20, exploring.obs_dim)).astype(np.float32)
    for scale in (0.3, 1.0, 2.0):
        eps = rng.standard_normal((20, exploring.act_dim))
        with torch.no_grad():
            x = agent.obs_norm(torch.as_tensor(obs, dtype=torch.float64))
            want, _ = agent.actor(x, noise=torch.as_tensor(scale * eps))
        got = np.stack([exploring.explore(o, scale, e) for o, e in zip(obs, eps)])
        np.testing.assert_allclose(got, want.numpy(), atol=2e-5)


@pytest.mark.parametrize("scale", [-0.1, float("nan"), float("inf"), 3.5, "1", True])
def test_a_bad_exploration_scale_is_refused_naming_the_allowed_values(spec, exploring, scale):
    ctrl = Controller(spec, MujocoBackend(spec), exploring)
    with pytest.raises(ValueError, match=r"allowed values are finite numbers in \[0, 3\]"):
        ctrl.set_exploration(scale)
    assert ctrl.exploration_scale == 0.0
