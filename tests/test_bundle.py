"""PolicyBundle.load refuses every classic sim-to-real mismatch with a message that says what differs:
a changed byte, another joint order, other observation dims, another dt, another robot, other gains,
a golden pair that no longer matches."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
import yaml

from deploy import bundle as B
from deploy import signing
from deploy.bundle import BundleError, PolicyBundle, record_verdict
from deploy.spec import ROBOTS_DIR, RobotSpec


def _variant(tmp_path, edit) -> RobotSpec:
    """The go2 spec YAML with one edit, loaded from a temporary file."""
    data = yaml.safe_load((ROBOTS_DIR / "go2.yaml").read_text())
    data["mjcf"] = str((ROBOTS_DIR / data["mjcf"]).resolve())
    edit(data)
    path = tmp_path / "go2_variant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return RobotSpec.load(path, check_mjcf=False)


def _refused(path, spec, *fragments, field=None):
    with pytest.raises(BundleError) as info:
        PolicyBundle.load(path, spec, providers="cpu")
    msg = str(info.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    if field is not None:
        assert info.value.field == field
    return msg


# ---- accepted ---------------------------------------------------------------------------------
def test_an_exported_bundle_loads_and_acts_on_batch_1_and_batches(bundle_dir, spec):
    bundle = PolicyBundle.load(bundle_dir, spec, providers="cpu")
    meta = json.loads((bundle_dir / "policy.json").read_text())
    obs = np.asarray(meta["golden"]["obs"], np.float32)
    want = np.asarray(meta["golden"]["actions"], np.float32)
    assert bundle.act(obs[0]).shape == (12,)
    assert np.abs(bundle.act(obs[0]) - want[0]).max() <= 1e-5
    assert np.abs(bundle.act(obs) - want).max() <= 1e-5
    assert bundle.robot == "go2" and bundle.joint_names == spec.joint_names
    assert bundle.obs_dim == 48 and bundle.policy_dt == spec.policy_dt
    assert bundle.providers == ["CPUExecutionProvider"]
    assert bundle.onnx_sha256 == B.sha256_file(bundle_dir / "policy.onnx")
    assert bundle.sim2sim is None
    with pytest.raises(ValueError, match="expects 48"):
        bundle.act(np.zeros(45))


# ---- refused: files ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["policy.onnx", "policy.json", "manifest.sha256"])
def test_a_changed_byte_in_any_file_is_refused(bundle_dir, spec, name):
    path = bundle_dir / name
    data = bytearray(path.read_bytes())
    i = 10 if name == "manifest.sha256" else len(data) // 2   # inside the first digest
    data[i] = ord("0") if data[i] != ord("0") else ord("1")
    path.write_bytes(bytes(data))
    listed = "policy.json" if name == "manifest.sha256" else name   # line 1 lists policy.json
    _refused(bundle_dir, spec, "differs from the manifest", field=listed)


def test_a_missing_manifest_or_an_unlisted_file_is_refused(bundle_dir, spec):
    (bundle_dir / "notes.txt").write_text("not exported")
    _refused(bundle_dir, spec, "files not in the manifest: notes.txt")
    (bundle_dir / "manifest.sha256").unlink()
    _refused(bundle_dir, spec, "missing", field="manifest.sha256")


# ---- refused: the spec ------------------------------------------------------------------------
def test_a_spec_with_the_same_joints_in_another_order_is_refused(bundle_dir, tmp_path):
    def swap(d):
        d["joints"][0], d["joints"][1] = d["joints"][1], d["joints"][0]
    spec = _variant(tmp_path, swap)
    _refused(bundle_dir, spec, "joint order differs at index 0: bundle 'FL_hip_joint', "
                               "spec 'FR_hip_joint'", field="joints")


def test_a_spec_with_other_observation_dims_is_refused(bundle_dir, tmp_path):
    def drop_lin_vel(d):
        d["observations"] = [t for t in d["observations"] if t["term"] != "base_lin_vel"]
    _refused(bundle_dir, _variant(tmp_path, drop_lin_vel),
             "observation dim differs: bundle 48, spec 45", field="observation.dim")


def test_a_layout_with_the_same_dims_but_other_scaling_is_refused(bundle_dir, tmp_path):
    def scale_vel(d):
        for t in d["observations"]:
            if t["term"] == "joint_vel_rel":
                t["scale"] = 0.05
    _refused(bundle_dir, _variant(tmp_path, scale_vel), "observation layout hash differs",
             "[5].scale: bundle 1.0, spec 0.05", field="observation.layout")


def test_a_caller_layout_other_than_the_bundles_is_refused(bundle_dir, spec):
    from deploy.observations import ObservationPipeline
    rough = ObservationPipeline(spec, height_scan=True).layout
    with pytest.raises(BundleError, match="observation dim differs: bundle 48, spec 235"):
        PolicyBundle.load(bundle_dir, spec, layout=rough, providers="cpu")
    PolicyBundle.load(bundle_dir, spec, layout=ObservationPipeline(spec).layout, providers="cpu")


def test_a_spec_with_another_dt_is_refused(bundle_dir, tmp_path):
    def slower(d):
        d["timing"] = {"policy_dt": 0.025, "sim_dt": 0.005, "decimation": 5}
    _refused(bundle_dir, _variant(tmp_path, slower), "policy dt differs: bundle 0.02 s, spec 0.025 s",
             field="timing.policy_dt")


def test_a_bundle_for_another_robot_is_refused(bundle_dir):
    _refused(bundle_dir, RobotSpec.load("anymal_d"), "bundle is for robot 'go2', spec is 'anymal_d'",
             field="robot")


def test_a_spec_with_other_gains_is_refused(bundle_dir, tmp_path):
    def stiffer(d):
        d["joints"][3]["kp"] = 30.0
    _refused(bundle_dir, _variant(tmp_path, stiffer),
             "kp of joint 'RR_hip_joint' (index 3) differs: bundle 25, spec 30", field="gains.kp")


def test_a_spec_with_another_action_scale_is_refused(bundle_dir, tmp_path):
    def scale(d):
        d["action"]["scale"] = 0.5
    _refused(bundle_dir, _variant(tmp_path, scale), "action scale differs: bundle 0.25, spec 0.5")


def test_any_other_spec_change_is_refused_by_the_hash_naming_the_key(bundle_dir, tmp_path):
    def faster_commands(d):
        d["commands"]["lin_vel_x"] = [-1.0, 2.0]
    _refused(bundle_dir, _variant(tmp_path, faster_commands), "spec hash differs",
             "commands.lin_vel_x[1]: bundle 1.0, spec 2.0", field="robot.spec_hash")


# ---- refused: golden pairs --------------------------------------------------------------------
def test_a_golden_pair_that_no_longer_matches_is_refused(bundle_dir, spec):
    """Even with a consistent manifest (rewritten after the edit), the numbers must agree."""
    meta = json.loads((bundle_dir / "policy.json").read_text())
    meta["golden"]["actions"][3][5] += 1e-3
    (bundle_dir / "policy.json").write_text(B.dump_json(meta))
    B.write_manifest(bundle_dir)
    _refused(bundle_dir, spec, "golden pair 3 no longer matches", "action 5 (joint 'FR_thigh_joint')",
             "> 1e-05", field="golden")


def test_an_onnx_model_swapped_for_another_is_refused_by_the_golden_pairs(bundle_dir, spec, tmp_path):
    import onnx
    from onnx import numpy_helper
    model = onnx.load(bundle_dir / "policy.onnx")
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, bundle_dir / "policy.onnx")
    B.write_manifest(bundle_dir)
    _refused(bundle_dir, spec, "no longer matches", field="golden")


# ---- execution providers ----------------------------------------------------------------------
def test_gpu_providers_only_with_onnxruntime_gpu_and_a_gpu(monkeypatch):
    import onnxruntime as ort
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: everything)
    monkeypatch.setattr(B, "_gpu_present", lambda: True)
    chosen = B.select_providers("auto")
    assert [p[0] if isinstance(p, tuple) else p for p in chosen] == \
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert dict(chosen[:2])["CUDAExecutionProvider"]["use_tf32"] == 0       # fp32 stays fp32
    assert B.select_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(B, "_gpu_present", lambda: False)                  # package but no GPU
    assert B.select_providers("auto") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        B.select_providers("gpu")


def test_cpu_sessions_use_one_intra_op_thread(bundle_dir):
    session = B.make_session(bundle_dir / "policy.onnx", "cpu")
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]


# ---- the sim2sim verdict ----------------------------------------------------------------------
def _verdict(bundle_dir, **over):
    meta = json.loads((bundle_dir / "policy.json").read_text())
    v = {"passed": True, "report": "sim2sim/report.html", "spec_hash": meta["robot"]["spec_hash"],
         "onnx_sha256": B.sha256_file(bundle_dir / "policy.onnx")}
    v.update(over)
    return v


def test_record_verdict_rewrites_policy_json_and_manifest_together(bundle_dir, spec):
    stored = record_verdict(bundle_dir, _verdict(bundle_dir, metrics={"fall_rate": 0.0}))
    bundle = PolicyBundle.load(bundle_dir, spec, providers="cpu")   # manifest still consistent
    assert bundle.sim2sim == stored and stored["passed"] is True and stored["created"]
    assert not [p for p in bundle_dir.iterdir() if p.name.startswith(".")]


def test_record_verdict_adds_the_gates_report_files_to_the_manifest(bundle_dir, spec):
    (bundle_dir / "sim2sim").mkdir()
    (bundle_dir / "sim2sim" / "report.html").write_text("<html>passed</html>")
    record_verdict(bundle_dir, _verdict(bundle_dir))
    assert "sim2sim/report.html" in B.read_manifest(bundle_dir)
    PolicyBundle.load(bundle_dir, spec, providers="cpu")
    (bundle_dir / "sim2sim" / "report.html").write_text("<html>edited</html>")
    _refused(bundle_dir, spec, "differs from the manifest", field="sim2sim/report.html")


def test_record_verdict_refuses_a_verdict_for_other_content(bundle_dir):
    with pytest.raises(BundleError, match="the verdict is for onnx"):
        record_verdict(bundle_dir, _verdict(bundle_dir, onnx_sha256="0" * 64))
    with pytest.raises(BundleError, match="the verdict is for spec"):
        record_verdict(bundle_dir, _verdict(bundle_dir, spec_hash="f" * 64))
    with pytest.raises(BundleError, match="sim2sim.passed"):
        record_verdict(bundle_dir, _verdict(bundle_dir, passed="yes"))
    with pytest.raises(BundleError, match="sim2sim.report.*missing"):
        v = _verdict(bundle_dir)
        del v["report"]
        record_verdict(bundle_dir, v)
    assert json.loads((bundle_dir / "policy.json").read_text())["sim2sim"] is None


def test_an_interrupted_verdict_update_is_refused_then_completed(bundle_dir, spec, monkeypatch):
    """Crash after policy.json was renamed but before the manifest was: the bundle is refused (with
    a hint), and the next record_verdict completes the pending manifest."""
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith("manifest.sha256"):
            raise KeyboardInterrupt("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(B.os, "replace", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        record_verdict(bundle_dir, _verdict(bundle_dir))
    monkeypatch.setattr(B.os, "replace", real_replace)
    _refused(bundle_dir, spec, "interrupted verdict update", field="policy.json")
    B._complete_pending(bundle_dir)
    assert PolicyBundle.load(bundle_dir, spec, providers="cpu").sim2sim["passed"] is True


def test_policy_json_agrees_with_its_manifest_digest(bundle_dir):
    text = (bundle_dir / "policy.json").read_bytes()
    assert B.read_manifest(bundle_dir)["policy.json"] == hashlib.sha256(text).hexdigest()


# ---- signatures (deploy/signing.py) -------------------------------------------------------------
@pytest.fixture
def keys(tmp_path):
    """A key the robot trusts and an attacker's key, made the way `sac2real keys new` makes them."""
    made = {name: signing.new_key(name, tmp_path / "private", tmp_path / "public")
            for name in ("lab", "attacker")}
    trusted = signing.TrustConfig(None, signing.trusted_keys([str(made["lab"][1])], tmp_path), "test")
    return made, trusted


def _signed_copy(bundle_dir, key, passed=True):
    record_verdict(bundle_dir, _verdict(bundle_dir, passed=passed))
    B.sign_bundle(bundle_dir, key)
    return bundle_dir


def _refused_signature(path, spec, trust, *fragments):
    from deploy.signing import TrustCheck

    with pytest.raises(BundleError) as info:
        PolicyBundle.load(path, spec, providers="cpu", trust=TrustCheck(trust, hardware=True))
    assert info.value.field == "signature" and str(path) in str(info.value)
    for f in fragments:
        assert f in str(info.value), str(info.value)


def test_a_forged_self_consistent_bundle_is_refused_on_hardware_naming_the_signature(
        copy_bundle, spec, keys, tmp_path):
    """The review's forgery: ONNX changed, golden pairs, verdict and manifest recomputed. Every
    other check passes it (it loads on the MuJoCo backend's default rule); on a hardware backend
    the signature refuses it, whether the original signature is kept, removed or replaced by one
    from an untrusted key."""
    import shutil

    from bench.fuzzing.bundles import forge
    from deploy.signing import SIGNATURE_FILE, TrustCheck

    (lab, _), (attacker, _) = keys[0]["lab"], keys[0]["attacker"]
    trust = keys[1]
    genuine = _signed_copy(copy_bundle(tmp_path / "a"), lab)
    loaded = PolicyBundle.load(genuine, spec, providers="cpu", trust=TrustCheck(trust, hardware=True))
    assert loaded.signature["key"]["name"] == "lab"

    forged = tmp_path / "forged"
    shutil.copytree(genuine, forged)
    forge(forged)
    assert B.read_manifest(forged)["policy.onnx"] != B.read_manifest(genuine)["policy.onnx"]
    PolicyBundle.load(forged, spec, providers="cpu", trust=TrustCheck(trust, hardware=False))
    _refused_signature(forged, spec, trust, "does not match the content", "changed after it was signed")
    (forged / SIGNATURE_FILE).unlink()
    _refused_signature(forged, spec, trust, "missing", "unsigned", "trusts 'lab'")
    B.sign_bundle(forged, attacker)
    _refused_signature(forged, spec, trust, "not from a trusted key", "signed by 'attacker'")
    with pytest.raises(BundleError, match="not from a trusted key"):   # required on MuJoCo too
        PolicyBundle.load(forged, spec, providers="cpu", trust=TrustCheck(
            signing.TrustConfig(True, trust.keys), hardware=False))


def test_a_signed_failing_verdict_is_not_trusted(bundle_dir, spec, keys):
    _signed_copy(bundle_dir, keys[0]["lab"][0], passed=False)
    _refused_signature(bundle_dir, spec, keys[1], "not a pass")


def test_tampered_signature_files_are_refused_by_name(bundle_dir, spec, keys):
    from deploy.signing import SIGNATURE_FILE

    _signed_copy(bundle_dir, keys[0]["lab"][0])
    path = bundle_dir / SIGNATURE_FILE
    good = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(good["signature"]))
    raw[0] ^= 1
    path.write_text(json.dumps({**good, "signature": base64.b64encode(bytes(raw)).decode()}))
    _refused_signature(bundle_dir, spec, keys[1], "does not match the content",
                       "signature bytes themselves were altered")
    forged_claim = {**good["signed"], "verdict": {"passed": True, "created": "now", "report": "x"}}
    path.write_text(json.dumps({**good, "signed": forged_claim}))      # found by the fuzzer
    _refused_signature(bundle_dir, spec, keys[1], "does not match the content", "verdict signed")
    path.write_text("{not json")
    _refused_signature(bundle_dir, spec, keys[1], "malformed signature.json")
    path.write_text(json.dumps({**good, "algorithm": "none"}))
    _refused_signature(bundle_dir, spec, keys[1], "malformed", "ed25519")


def test_recording_a_verdict_removes_the_signature_it_invalidates(bundle_dir, spec, keys):
    from deploy.signing import SIGNATURE_FILE

    _signed_copy(bundle_dir, keys[0]["lab"][0])
    record_verdict(bundle_dir, _verdict(bundle_dir))
    assert not (bundle_dir / SIGNATURE_FILE).exists()
    _refused_signature(bundle_dir, spec, keys[1], "missing")


@pytest.mark.parametrize("report", ["/tmp/elsewhere/report.json", "../report.json", ""])
def test_a_verdict_must_refer_to_a_file_inside_the_bundle(bundle_dir, report):
    with pytest.raises(BundleError, match="sim2sim.report.*not a path inside the bundle"):
        record_verdict(bundle_dir, _verdict(bundle_dir, report=report))


def test_the_controller_refuses_an_unsigned_bundle_at_start_and_at_swap(copy_bundle, spec, keys,
                                                                        tmp_path):
    """Trust required (as on hardware): an unsigned bundle is refused by the constructor and by
    a swap, by path and as a loaded object; a bundle signed by the trusted key is installed."""
    from deploy.backends.mujoco_backend import MujocoBackend
    from deploy.controller import Controller, PolicyRefused
    from deploy.deploy_config import DeployConfig

    config = DeployConfig.load(spec)
    config = dataclasses.replace(config, trust=signing.TrustConfig(True, keys[1].keys))
    unsigned = copy_bundle(tmp_path / "u")
    signed = _signed_copy(copy_bundle(tmp_path / "s"), keys[0]["lab"][0])
    with pytest.raises(PolicyRefused, match="signature: missing"):
        Controller(spec, MujocoBackend(spec), PolicyBundle.load(unsigned, spec, providers="cpu"),
                   config=config)
    ctrl = Controller(spec, MujocoBackend(spec), None, config=config)
    result = ctrl.swap_policy(unsigned)
    assert not result.accepted and "signature: missing" in result.reason
    result = ctrl.swap_policy(PolicyBundle.load(unsigned, spec, providers="cpu"))
    assert not result.accepted and "signature: missing" in result.reason and ctrl.bundle is None
    assert ctrl.swap_policy(signed).accepted and ctrl.policy_id == B.read_meta(signed)["id"]


def test_hardware_backends_require_a_signature_by_default_and_mujoco_does_not(bundle, spec):
    """The default rule (trust.require_signature null): a UnitreeBackend (DDS on loopback, no
    robot needed to construct it) refuses the unsigned bundle and says this robot trusts no key;
    the MuJoCo backend runs it."""
    pytest.importorskip("unitree_sdk2py", reason="unitree_sdk2py not installed (pip install -e '.[unitree]')")
    from deploy.backends.mujoco_backend import MujocoBackend
    from deploy.backends.unitree import UnitreeBackend
    from deploy.bridges.process import dds_test_domain
    from deploy.controller import Controller, PolicyRefused

    assert bundle.signature is None
    assert Controller(spec, MujocoBackend(spec), bundle).policy_id == bundle.id
    # the domain of the Unitree backend tests: the SDK joins one domain per process
    backend = UnitreeBackend(spec, "lo", dds_test_domain(), release_motion_mode=False)
    try:
        with pytest.raises(PolicyRefused, match="signature: missing: .* trusts no key"):
            Controller(spec, backend, bundle)
    finally:
        backend.close()


@pytest.mark.parametrize("trust, key, words", [
    ({"keys": ["no-such-key"]}, "trust.keys", "no-such-key.pub"),
    ({"keys": ["other.pub"]}, "trust.keys", "not a readable PEM public key"),
    ({"keys": [3]}, "trust.keys[0]", "expected a key name"),
    ({"require_signature": "yes"}, "trust.require_signature", "expected bool"),
    ({"requires_signature": True}, "trust.requires_signature", "did you mean 'require_signature'"),
])
def test_trust_section_errors_name_the_key(spec, tmp_path, trust, key, words):
    from deploy.config import ConfigError
    from deploy.deploy_config import DeployConfig

    (tmp_path / "other.pub").write_text("not a key")
    path = tmp_path / "go2.yaml"
    path.write_text(yaml.safe_dump({"trust": trust}))
    with pytest.raises(ConfigError) as info:
        DeployConfig.load(spec, path)
    assert info.value.key == key and words in str(info.value) and str(path) in str(info.value)


def test_trust_section_reads_keys_by_name_or_path_relative_to_the_config(spec, tmp_path, keys):
    from deploy.deploy_config import DeployConfig

    (tmp_path / "go2.yaml").write_text("trust:\n  require_signature: true\n  keys: [public/lab.pub]\n")
    trust = DeployConfig.load(spec, tmp_path / "go2.yaml").trust
    assert trust.require_signature is True and [k.name for k in trust.keys] == ["lab"]
    assert trust.keys[0].id == keys[1].keys[0].id
    assert trust.required(hardware=False) and signing.TrustConfig().required(hardware=True)
    assert not signing.TrustConfig().required(hardware=False)
