"""`sac2real train --init-from`: a checkpoint of an earlier observation layout carried into a new
one. The networks, fed the new layout, must compute exactly what the old ones computed on the old
layout, whatever was added, dropped or moved; real SAC agents of every preset, a real checkpoint
file."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec
from training.checkpoint import FORMAT, CheckpointError
from training.config import load_train_config, resolve_config
from training.sac import SAC
from training.warm_start import warm_start, widen


@pytest.fixture(scope="module")
def g1():
    return RobotSpec.load("g1")


def _spec_with(spec: RobotSpec, terms: list[str]) -> RobotSpec:
    by_name = {t.term: t for t in spec.observations}
    return dataclasses.replace(spec, observations=tuple(by_name[t] for t in terms))


def _agent(spec: RobotSpec, algo: str, seed: int, privileged: int = 0) -> SAC:
    """A SAC of the preset whose weights and normalizer statistics are all non-trivial."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(load_train_config(resolve_config(None, algo, False)).sac,
                              actor_hidden=(32, 32), critic_hidden=(32, 32))
    low = -np.ones(spec.num_joints)
    dim = ObservationPipeline(spec).dim
    agent = SAC(dim, low, -low, cfg, privileged)
    agent.observe(torch.randn(500, dim + privileged) * 3 + 1)
    return agent


def _feed(layout, values: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([values[name] for name in layout.names], dim=1)


@pytest.mark.parametrize("algo", ["sac", "fastdsac", "dsac_e"])
@pytest.mark.parametrize("old_terms, new_terms", [
    (["base_ang_vel", "projected_gravity", "velocity_commands", "joint_pos_rel", "joint_vel_rel",
      "last_action"],
     ["base_ang_vel", "projected_gravity", "velocity_commands", "joint_pos_rel", "joint_vel_rel",
      "last_action", "gait_phase"]),
    (["gait_phase", "base_ang_vel", "projected_gravity", "velocity_commands", "joint_pos_rel",
      "joint_vel_rel", "last_action"],
     ["projected_gravity", "base_ang_vel", "joint_pos_rel", "joint_vel_rel", "last_action",
      "velocity_commands"]),
], ids=["term_added", "term_dropped_and_order_changed"])
def test_widened_networks_compute_what_the_old_ones_did(g1, algo, old_terms, new_terms):
    old_spec, new_spec = _spec_with(g1, old_terms), _spec_with(g1, new_terms)
    old_layout, new_layout = ObservationPipeline(old_spec).layout, ObservationPipeline(new_spec).layout
    old = _agent(old_spec, algo, 0)
    new = _agent(new_spec, algo, 1)
    new.load_state_dict(widen(old.state_dict(), old_layout.to_list(), new_layout, g1.num_joints))

    torch.manual_seed(2)
    values = {e.name: torch.randn(64, e.dim) for e in (*old_layout.entries, *new_layout.entries)}
    for e in old_layout.entries:          # a dropped term: as if it sat at its running mean
        if e.name not in new_layout.names:
            values[e.name] = old.obs_norm.mean[old_layout.slice(e.name)].expand(64, e.dim)
    x_old, x_new = _feed(old_layout, values), _feed(new_layout, values)
    act = torch.rand(64, g1.num_joints) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(new.act(x_new, deterministic=True), old.act(x_old, deterministic=True),
                              atol=1e-6)
        assert torch.allclose(new.critic.q_values(new.critic_norm(x_new), act),
                              old.critic.q_values(old.critic_norm(x_old), act), atol=1e-5)
        if algo == "dsac_e":
            q_e_new = new.temperature.entropy_critic.q_values(new.critic_norm(x_new), act)
            q_e_old = old.temperature.entropy_critic.q_values(old.critic_norm(x_old), act)
            assert torch.allclose(q_e_new, q_e_old, atol=1e-5)
    # an added term's inputs change nothing yet, and the updates can still reach them
    if "gait_phase" in new_layout.names and "gait_phase" not in old_layout.names:
        first = new.actor.trunk[0].weight
        assert (first[:, new_layout.slice("gait_phase")] == 0).all() and first.requires_grad


def _checkpoint(tmp_path, spec: RobotSpec, agent: SAC, robot: str | None = None):
    path = tmp_path / "model_000010.pt"
    spec_dict = spec.to_dict()
    torch.save({"format": FORMAT, "robot": {"name": robot or spec.name, "hash": "old",
                                             "spec": spec_dict},
                "obs_layout": ObservationPipeline(spec).layout.to_list(),
                "agent": {"model": agent.state_dict()}, "progress": {"iteration": 10}}, path)
    return path


def test_warm_start_loads_a_checkpoint_file_and_says_what_it_added(g1, tmp_path):
    old_spec = _spec_with(g1, [t.term for t in g1.observations if t.term != "gait_phase"])
    old, new = _agent(old_spec, "sac", 0), _agent(g1, "sac", 1)
    said = warm_start(new, g1, ObservationPipeline(g1).layout, _checkpoint(tmp_path, old_spec, old))
    assert "iteration 10" in said and "zero weights: gait_phase" in said and "dropped: none" in said
    assert torch.equal(new.obs_norm.count, old.obs_norm.count)


def test_warm_start_refuses_another_robot_and_a_network_of_another_size(g1, tmp_path):
    go2 = RobotSpec.load("go2")
    with pytest.raises(CheckpointError, match=r"same robot \(or a variant of it\) and joint order"):
        warm_start(_agent(g1, "sac", 1), g1, ObservationPipeline(g1).layout,
                   _checkpoint(tmp_path, go2, _agent(go2, "sac", 0)))
    other = SAC(ObservationPipeline(g1).dim, -np.ones(g1.num_joints), np.ones(g1.num_joints),
                dataclasses.replace(load_train_config(resolve_config(None, "sac", False)).sac,
                                    actor_hidden=(16,), critic_hidden=(16,)))
    with pytest.raises(CheckpointError, match="do not fit this run's config"):
        warm_start(other, g1, ObservationPipeline(g1).layout,
                   _checkpoint(tmp_path, g1, _agent(g1, "sac", 0)))


def test_a_malformed_checkpoint_is_refused_naming_the_file(g1, tmp_path):
    path = _checkpoint(tmp_path, g1, _agent(g1, "sac", 0))
    ckpt = torch.load(path, weights_only=False)
    ckpt["obs_layout"][2].pop("offset")
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"model_000010.pt: malformed checkpoint .*offset"):
        warm_start(_agent(g1, "sac", 1), g1, ObservationPipeline(g1).layout, path)


@pytest.mark.parametrize("algo", ["sac", "fastdsac", "dsac_e"])
def test_a_critic_term_added_starts_at_zero_weight_and_the_critic_computes_what_it_did(g1, algo,
                                                                                       tmp_path):
    """The G1's base_lin_vel for the critic alone (spec critic_observations), carried from a
    checkpoint whose critic saw the policy's observation only: actor and critics compute what they
    did whatever the new column holds, its weights start at zero, its normalizer afresh."""
    policy = ObservationPipeline(g1).layout
    extra = ObservationPipeline(g1, terms=g1.critic_observations).layout
    assert extra.names == ["base_lin_vel"]
    old, new = _agent(g1, algo, 0), _agent(g1, algo, 1, privileged=extra.dim)
    said = warm_start(new, g1, policy, _checkpoint(tmp_path, g1, old), extra)
    assert "the critic's own terms added: base_lin_vel" in said
    torch.manual_seed(2)
    x, act = torch.randn(64, policy.dim), torch.rand(64, g1.num_joints) * 2 - 1
    with torch.no_grad():
        want_q = old.critic.q_values(old.critic_norm(x), act)
        for velocity in (torch.zeros(64, 3), torch.randn(64, 3) * 5):
            full = torch.cat([x, velocity], 1)
            assert torch.allclose(new.critic.q_values(new.critic_input(full), act), want_q, atol=1e-5)
            assert torch.allclose(new.act(full, deterministic=True), old.act(x, deterministic=True),
                                  atol=1e-6)
            if algo == "dsac_e":
                assert torch.allclose(
                    new.temperature.entropy_critic.q_values(new.critic_input(full), act),
                    old.temperature.entropy_critic.q_values(old.critic_norm(x), act), atol=1e-5)
    assert torch.equal(new.privileged_norm.mean, torch.zeros(3))
    assert torch.equal(new.privileged_norm.var, torch.ones(3))


@pytest.mark.parametrize("algo, legacy", [("sac", False), ("fastdsac", False), ("dsac_e", False),
                                          ("sac", True)])
def test_a_term_the_policy_drops_and_the_critic_keeps_carries_the_critics_weights(algo, legacy,
                                                                                  tmp_path):
    """The Go2's checkpoint (base_lin_vel in the policy's observation) into its variant go2_proprio
    (base_lin_vel for the critic alone): the critic computes what it did for the same velocity, its
    normalizer statistics carried, and the actor what it did with the velocity at its running mean.
    `legacy`: a checkpoint from before the normalizers were merged (actor_norm.*, critic_norm.*, as
    models/checkpoints/go2_cpu)."""
    go2, variant = RobotSpec.load("go2"), RobotSpec.load("go2_proprio")
    old_layout, policy = ObservationPipeline(go2).layout, ObservationPipeline(variant).layout
    extra = ObservationPipeline(variant, terms=variant.critic_observations).layout
    old, new = _agent(go2, algo, 0), _agent(variant, algo, 1, privileged=extra.dim)
    path = _checkpoint(tmp_path, go2, old)
    if legacy:
        ckpt = torch.load(path, weights_only=False)
        model = ckpt["agent"]["model"]
        for key in [k for k in model if k.startswith("obs_norm.")]:
            value = model.pop(key)
            model["actor_norm." + key[9:]], model["critic_norm." + key[9:]] = value, value.clone()
        torch.save(ckpt, path)
    said = warm_start(new, variant, policy, path, extra)
    assert "dropped: base_lin_vel" in said and "the critic's own terms added: none" in said
    at = old_layout.slice("base_lin_vel")
    assert torch.equal(new.privileged_norm.mean, old.obs_norm.mean[at].to(new.privileged_norm.mean.dtype))
    torch.manual_seed(3)
    x, act = torch.randn(64, old_layout.dim) * 2, torch.rand(64, go2.num_joints) * 2 - 1
    keep = torch.cat([x[:, old_layout.slice(n)] for n in policy.names], 1)
    full = torch.cat([keep, x[:, at]], 1)
    at_mean = x.clone()
    at_mean[:, at] = old.obs_norm.mean[at].to(x.dtype)
    with torch.no_grad():
        assert torch.allclose(new.critic.q_values(new.critic_input(full), act),
                              old.critic.q_values(old.critic_norm(x), act), atol=1e-5)
        assert torch.allclose(new.act(full, deterministic=True), old.act(at_mean, deterministic=True),
                              atol=1e-5)


def test_warm_start_refuses_a_variant_of_another_robot(g1, tmp_path):
    variant = RobotSpec.load("go2_proprio")
    extra = ObservationPipeline(variant, terms=variant.critic_observations).layout
    with pytest.raises(CheckpointError, match="trained for robot 'g1'"):
        warm_start(_agent(variant, "sac", 1, privileged=extra.dim), variant,
                   ObservationPipeline(variant).layout, _checkpoint(tmp_path, g1, _agent(g1, "sac", 0)),
                   extra)
