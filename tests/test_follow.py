"""The runner follows promotions (deploy/follow.py): a newly promoted bundle is verified off the
control thread and installed at a tick boundary; hot swaps never mix two policies in one logged
transition; a bundle that faults within the rollback window is rolled back, reported, and not
installed again."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from deploy import bundle as B
from deploy.backends.mujoco_backend import MujocoBackend
from deploy.controller import Controller
from deploy.follow import PolicyFollower
from deploy.registry import PolicyRegistry
from deploy.replay import ReplayReader
from deploy.robot_rewards import robot_replay_writer
from deploy.spec import REPO_ROOT, RobotSpec
from deploy.state_machine import Mode
from training.checkpoint import load_checkpoint
from training.export import export_checkpoint

SHIPPED = REPO_ROOT / "models" / "checkpoints" / "go2_cpu" / "model.pt"


def _variant(tmp_path, name: str, bias: dict[int, float]) -> dict:
    """The shipped Go2 checkpoint with the actor's mean-head bias moved on some action dims."""
    ckpt = load_checkpoint(SHIPPED)
    head = ckpt["agent"]["model"]["actor.head.bias"]
    for i, delta in bias.items():
        head[i] += delta
    path = tmp_path / f"{name}.pt"
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry with the walking Go2 (current), a near-copy that walks too but acts measurably
    differently, and a broken one whose legs snap to their limits."""
    tmp = tmp_path_factory.mktemp("follow")
    root = tmp / "policies"
    ids = {}
    for name, bias in (("good", {}), ("other", {0: 0.05, 4: -0.05}), ("bad", {i: 3.0 for i in range(12)})):
        path = export_checkpoint(_variant(tmp, name, bias), root, log=lambda *a: None,
                                 parity_samples=300)
        meta = json.loads((path / "policy.json").read_text())
        B.record_verdict(path, {"passed": True, "report": "report.json", "spec_hash": meta["robot"]["spec_hash"],
                                "onnx_sha256": B.sha256_file(path / "policy.onnx")})
        ids[name] = path.name
    return PolicyRegistry(root), ids


def _walking(spec, reg, ident: str, replay_dir=None):
    backend = MujocoBackend(spec, seed=2)
    bundle = B.PolicyBundle.load(reg.resolve(ident, "go2"), spec, providers="cpu")
    writer = None if replay_dir is None else robot_replay_writer(replay_dir, spec, bundle).start()
    ctrl = Controller(spec, backend, bundle, replay=writer, clock=backend.clock)
    ctrl.request_stand()
    for _ in range(int(4.0 / spec.policy_dt)):
        if ctrl.mode is Mode.STAND:
            ctrl.request_policy()
        ctrl.tick()
        backend.advance()
    assert ctrl.mode is Mode.POLICY
    return ctrl, backend, writer


def test_a_promotion_is_followed_and_a_faulting_bundle_rolled_back(registry, tmp_path):
    reg, ids = registry
    spec = RobotSpec.load("go2")
    reg.promote(ids["good"])
    ctrl, backend, writer = _walking(spec, reg, ids["good"], tmp_path / "replay")
    follower = PolicyFollower(ctrl, reg, log_path=tmp_path / "promotions.jsonl")
    assert follower.check_once() is None                    # nothing new
    reg._write_pointer(B.PolicyBundle.load(reg.resolve(ids["bad"]), spec, providers="cpu"))  # forced past the gate
    assert follower.check_once()["event"] == "swapping"
    for _ in range(int(1.5 / spec.policy_dt)):
        ctrl.tick()
        backend.advance()
        if ctrl.mode is Mode.DAMPING:
            break
    assert ctrl.mode is Mode.DAMPING and ctrl.policy_id == ids["good"] and ctrl.rolled_back == [ids["bad"]]
    assert follower.check_once()["event"] == "rolled_back"
    assert follower.check_once() is None                    # the pointer still names it: not again
    assert ctrl.policy_id == ids["good"]
    backend.fleet.reset(0)                                  # the operator puts the robot back up
    ctrl.request_reset()
    ctrl.request_stand()
    in_policy = 0
    while in_policy < 10:                                   # ten ticks under the old bundle again
        if ctrl.mode is Mode.STAND:
            ctrl.request_policy()
        ctrl.tick()
        backend.advance()
        in_policy += ctrl.mode is Mode.POLICY
    writer.close()
    backend.close()
    ids_logged = [p.decode() for p in ReplayReader(tmp_path / "replay").load().fields["policy_id"]]
    first_bad = ids_logged.index(ids["bad"])
    after = ids_logged[first_bad:]
    n_bad = after.count(ids["bad"])
    assert n_bad >= 1 and after[:n_bad] == [ids["bad"]] * n_bad       # its actions, up to the fall
    assert after[n_bad:] == [ids["good"]] * (len(after) - n_bad) and len(after) - n_bad >= 8
    assert ids_logged[:first_bad] == [ids["good"]] * first_bad
    events = [json.loads(line)["event"] for line in (tmp_path / "promotions.jsonl").read_text().splitlines()]
    assert events == ["swapping", "rolled_back"]


def test_1000_hot_swaps_from_another_thread_never_mix_two_policies(registry, tmp_path):
    """The loop ticks in its own thread while this one swaps between two verified bundles 1,000
    times; every logged transition's action is exactly what the bundle it names computes for its
    observation, never the other's. (The loop's deadlines under swaps: bench/control_loop.py.)"""
    reg, ids = registry
    spec = RobotSpec.load("go2")
    ctrl, backend, writer = _walking(spec, reg, ids["good"], tmp_path / "replay")
    bundles = {name: B.PolicyBundle.load(reg.resolve(ids[name]), spec, providers="cpu")
               for name in ("good", "other")}
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            ctrl.tick()
            backend.advance()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        for k in range(1000):
            target = bundles["other" if k % 2 == 0 else "good"]
            assert ctrl.swap_policy(target).accepted
            while ctrl.policy_id != target.id and ctrl.mode is Mode.POLICY:
                pass                                         # installed at the next tick
            installed = ctrl.diagnostics()["tick"]
            while ctrl.diagnostics()["tick"] < installed + 3 and ctrl.mode is Mode.POLICY:
                pass                                         # a transition needs two ticks of it
    finally:
        stop.set()
        thread.join()
    assert ctrl.mode is Mode.POLICY
    writer.close()
    backend.close()
    data = ReplayReader(tmp_path / "replay").load()
    by_id = {b.id: b for b in bundles.values()}
    logged = [p.decode() for p in data.fields["policy_id"]]
    assert set(logged) == set(by_id) and len(data) > 200
    for obs, action, ident in zip(data.obs, data.actions, logged):
        mine = by_id[ident].act(obs)
        other = next(b for i, b in by_id.items() if i != ident).act(obs)
        np.testing.assert_allclose(action, mine, atol=1e-6)
        assert np.abs(action - other).max() > 1e-4
