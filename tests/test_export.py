"""`sac2real export`: a checkpoint becomes a self-describing bundle whose ONNX actor matches the
PyTorch actor's deterministic action within 1e-5 on 10,000 random and 10,000 replayed observations."""
from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
import torch

from deploy import bundle as B
from deploy.action_map import ActionMap
from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec
from deploy.durable import sha256_file
from training.checkpoint import CheckpointError
from training.envs.velocity import TaskConfig, VelocityEnv
from training.export import (DeterministicPolicy, ExportError, export_checkpoint, export_onnx,
                             load_agent, random_observations)
from training.actor import SquashedGaussianActor
from training.networks import EmpiricalNormalizer
from training.sac import SACConfig
from training.smoke import train_smoke_run

TOL = 1e-5
N = 10_000


def _quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short real run with the CPU profile's actor (48 -> [256, 256, 128] -> 12)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    ckpt = train_smoke_run(out, "go2", sac=SACConfig(actor_hidden=(256, 256, 128),
                                                     critic_hidden=(64, 64)))
    return ckpt


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    root = tmp_path_factory.mktemp("policies")
    return export_checkpoint(run, root, log=_quiet)


@pytest.fixture(scope="module")
def agent(run):
    return load_agent(run)[2]


def test_bundle_folder_is_named_by_robot_time_and_onnx_hash(exported):
    assert exported.parent.name == "go2"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{8}", exported.name)
    assert exported.name.endswith(B.sha256_file(exported / "policy.onnx")[:8])
    assert sorted(p.name for p in exported.iterdir()) == ["manifest.sha256", "policy.json", "policy.onnx"]
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")], "work folder left behind"


def test_manifest_holds_the_sha256_of_every_file(exported):
    lines = (exported / "manifest.sha256").read_text().splitlines()
    listed = {name: digest for digest, name in (line.split("  ") for line in lines)}
    assert listed == {n: B.sha256_file(exported / n) for n in ("policy.json", "policy.onnx")}


def test_policy_json_describes_everything_a_deployment_must_agree_on(exported, run):
    spec = RobotSpec.load("go2")
    meta = json.loads((exported / "policy.json").read_text())
    layout = ObservationPipeline(spec).layout
    amap = ActionMap(spec)
    ckpt = torch.load(run, weights_only=False)
    assert meta["id"] == exported.name
    assert meta["robot"]["name"] == "go2" and meta["robot"]["spec_hash"] == spec.hash
    assert meta["joints"] == spec.joint_names
    assert meta["observation"] == {"dim": 48, "layout": layout.to_list(), "hash": layout.hash}
    assert meta["action"]["scale"] == spec.action_scale
    assert meta["action"]["default_pos"] == spec.default_pos.tolist()
    assert meta["action"]["low"] == amap.low.tolist() and meta["action"]["high"] == amap.high.tolist()
    assert meta["timing"]["policy_dt"] == spec.policy_dt
    assert meta["gains"] == {"kp": spec.kp.tolist(), "kd": spec.kd.tolist()}
    assert meta["parent"]["sha256"] == sha256_file(run)
    assert meta["training"]["config"]["sac"]["actor_hidden"] == [256, 256, 128]
    assert meta["training"]["env_steps"] == ckpt["progress"]["env_steps"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["created"])
    assert len(meta["golden"]["obs"]) == 16 and len(meta["golden"]["actions"]) == 16
    assert meta["golden"]["obs"][0] == [0.0] * 48
    assert meta["sim2sim"] is None
    assert meta["parity"]["random"]["count"] == N
    assert meta["parity"]["replayed"]["count"] == ckpt["progress"]["env_steps"]  # the whole replay


def test_onnx_has_named_io_dynamic_batch_and_opset_18(exported):
    model = onnx.load(exported / "policy.onnx")
    (inp,), outs = model.graph.input, model.graph.output
    assert inp.name == "obs" and [o.name for o in outs] == ["actions", "mean", "std"]
    batch, dim = inp.type.tensor_type.shape.dim
    assert batch.dim_param and not batch.dim_value and dim.dim_value == 48
    assert all(o.type.tensor_type.shape.dim[1].dim_value == 12 for o in outs)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    session = B.make_session(exported / "policy.onnx", "cpu")
    for n in (1, 7, 300):
        assert all(y.shape == (n, 12) for y in session.run(None, {"obs": np.zeros((n, 48), np.float32)}))


def test_parity_on_10000_random_observations(exported, agent):
    bundle = B.PolicyBundle.load(exported, RobotSpec.load("go2"), providers="cpu")
    obs = random_observations(DeterministicPolicy(agent.actor_norm, agent.actor), N, seed=123)
    with torch.no_grad():
        want = agent.act(torch.as_tensor(obs), deterministic=True).numpy()
    assert np.abs(bundle.act(obs) - want).max() <= TOL


def test_parity_on_10000_replayed_observations(exported, agent, run):
    """Observations the deployed policy itself produces in closed loop, plus the run's replay."""
    spec = RobotSpec.load("go2")
    bundle = B.PolicyBundle.load(exported, spec, providers="cpu")
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 64, seed=7, threads=1)
    try:
        obs, seen = env.reset(seed=7), []
        while sum(len(o) for o in seen) < N:
            seen.append(obs)
            obs = env.step(bundle.act(obs)).obs
    finally:
        env.close()
    replay = torch.load(run.parent / "replay.pt", weights_only=False)["obs"].reshape(-1, 48).numpy()
    rollout = np.concatenate(seen)[:N].astype(np.float32)
    assert np.abs(rollout).max() > 1.0                  # the robot really moved
    with torch.no_grad():
        for obs in (rollout, replay):
            want = agent.act(torch.as_tensor(obs), deterministic=True).numpy()
            assert np.abs(bundle.act(obs) - want).max() <= TOL


def test_a_saturating_actor_is_exported_as_accurately_as_torch_computes_it(tmp_path):
    """Large head weights and a wide normalizer: tanh saturates, the bounds' affine map dominates.
    With weights this large, any two float32 implementations differ by float32 rounding alone, so
    the claim is: ONNX is no further from the exact (float64) function than PyTorch's own float32
    forward is (within 2x), i.e. the export adds no error of its own."""
    torch.manual_seed(0)
    amap = ActionMap(RobotSpec.load("go2"))
    actor = SquashedGaussianActor(48, amap.low, amap.high, [256, 256, 128])
    norm = EmpiricalNormalizer(48)
    with torch.no_grad():
        actor.head.weight.normal_(0.0, 4.0)
        norm.mean.normal_(0.0, 2.0)
        norm.var.uniform_(0.01, 25.0)
    policy = DeterministicPolicy(norm, actor).eval()
    session = B.make_session(export_onnx(policy, tmp_path / "policy.onnx"), "cpu")
    obs = random_observations(policy, N, seed=5)
    x = torch.as_tensor(obs)
    with torch.no_grad():
        mean, _ = actor.distribution_params(norm(x))
        torch32 = actor.deterministic(norm(x)).numpy()
        exact = DeterministicPolicy(norm, actor).double()(x.double()).numpy()
    assert (mean.abs() > 2.0).float().mean() > 0.2                  # really saturating
    onnx_err = np.abs(session.run(None, {"obs": obs})[0] - exact).max()
    torch_err = np.abs(torch32 - exact).max()
    assert onnx_err <= 2.0 * torch_err + 1e-7, (onnx_err, torch_err)


def test_export_cli_writes_a_bundle_that_verifies(run, tmp_path, capsys):
    from deploy.cli import main
    assert main(["export", str(run.parent / "latest.pt"), "--out", str(tmp_path),
                 "--parity-samples", "2000"]) == 0
    (bundle,) = (tmp_path / "go2").iterdir()
    assert str(bundle) in capsys.readouterr().out
    assert main(["models", "verify", bundle.name, "--root", str(tmp_path)]) == 0


def test_export_refuses_a_checkpoint_for_another_spec(run, tmp_path):
    with pytest.raises(CheckpointError, match="trained for robot 'go2'.*'anymal_d'"):
        export_checkpoint(run, tmp_path, spec=RobotSpec.load("anymal_d"), log=_quiet)
    assert not (tmp_path / "anymal_d").exists() or not any((tmp_path / "anymal_d").iterdir())


def test_a_failed_parity_check_publishes_nothing(run, tmp_path, monkeypatch):
    import training.export as export
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="ONNX and PyTorch actions differ"):
        export_checkpoint(run, tmp_path, parity_samples=100, log=_quiet)
    assert list((tmp_path / "go2").iterdir()) == []
