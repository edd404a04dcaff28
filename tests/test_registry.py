"""The registry over models/policies/: `sac2real models list | show | verify | promote | sign |
current` and `sac2real keys`. Promotion and signing need a passing sim2sim verdict recorded for the
bundle's own content, and the current pointer changes atomically."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from deploy import bundle as B
from deploy.cli import main
from deploy.registry import ENV_VAR, PolicyRegistry, RegistryError, default_root
from deploy.spec import REPO_ROOT

OTHER_ID = "20000101-000000-0badf00d"


@pytest.fixture
def root(exported_bundle, copy_bundle, tmp_path):
    """A registry with two go2 bundles: the export and an older copy of it under another id."""
    root = tmp_path / "policies"
    copy_bundle(root)
    other = root / "go2" / OTHER_ID
    shutil.copytree(exported_bundle, other)
    meta = json.loads((other / "policy.json").read_text())
    meta["id"] = OTHER_ID
    (other / "policy.json").write_text(B.dump_json(meta))
    B.write_manifest(other)
    return root


def _pass(bundle_dir, **over):
    meta = json.loads((bundle_dir / "policy.json").read_text())
    v = {"passed": True, "report": "report.html", "spec_hash": meta["robot"]["spec_hash"],
         "onnx_sha256": B.sha256_file(bundle_dir / "policy.onnx")}
    v.update(over)
    return B.record_verdict(bundle_dir, v)


def test_root_defaults_to_models_policies_and_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_root() == REPO_ROOT / "models" / "policies"
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert PolicyRegistry().root == tmp_path


def test_list_shows_every_bundle_oldest_first(root, exported_bundle, capsys):
    assert main(["models", "list", "--root", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert OTHER_ID in lines[1] and exported_bundle.name in lines[2]
    assert all("none" in line for line in lines[1:])      # no sim2sim verdicts yet
    entries = PolicyRegistry(root).bundles("go2")
    assert [e.id for e in entries] == [OTHER_ID, exported_bundle.name]


def test_a_damaged_bundle_is_listed_with_its_error(root, capsys):
    (root / "go2" / OTHER_ID / "policy.json").write_text("{")
    assert main(["models", "list", "--root", str(root)]) == 0
    assert "unreadable" in capsys.readouterr().out


def test_bundles_resolve_by_id_robot_id_and_unique_prefix(root, exported_bundle):
    reg = PolicyRegistry(root)
    assert reg.resolve(exported_bundle.name) == root / "go2" / exported_bundle.name
    assert reg.resolve(f"go2/{OTHER_ID}") == root / "go2" / OTHER_ID
    assert reg.resolve("2000") == root / "go2" / OTHER_ID
    with pytest.raises(RegistryError, match="ambiguous"):
        reg.resolve("2")
    with pytest.raises(RegistryError, match="no bundle 'nope'"):
        reg.resolve("nope")


def test_show_prints_what_the_bundle_holds(root, exported_bundle, capsys):
    assert main(["models", "show", exported_bundle.name, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    for fragment in ("robot go2", "observation dim 48", "FL_hip_joint", "golden pairs 16",
                     "sim2sim: none", "policy.onnx"):
        assert fragment in out, fragment
    assert main(["models", "show", exported_bundle.name, "--json", "--root", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == exported_bundle.name


def test_verify_passes_a_good_bundle_and_refuses_a_changed_one(root, exported_bundle, capsys):
    assert main(["models", "verify", exported_bundle.name, "--root", str(root)]) == 0
    assert "ok: go2/" in capsys.readouterr().out
    (root / "go2" / exported_bundle.name / "policy.onnx").open("ab").write(b"\0")
    assert main(["models", "verify", exported_bundle.name, "--root", str(root)]) == 2
    assert "policy.onnx: sha256" in capsys.readouterr().err
    assert main(["models", "verify", OTHER_ID, "--spec", "anymal_d", "--root", str(root)]) == 2
    assert "bundle is for robot 'go2', spec is 'anymal_d'" in capsys.readouterr().err


def test_promote_is_refused_without_a_sim2sim_verdict(root, exported_bundle, capsys):
    assert main(["models", "promote", exported_bundle.name, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "need a passing sim2sim verdict" in err and "run `sac2real sim2sim` first" in err
    assert PolicyRegistry(root).current("go2") is None


def test_promote_is_refused_with_a_failed_verdict(root, exported_bundle):
    _pass(root / "go2" / exported_bundle.name, passed=False)
    with pytest.raises(RegistryError, match="sim2sim verdict failed"):
        PolicyRegistry(root).promote(exported_bundle.name)


def test_promote_is_refused_when_the_verdict_was_recorded_for_other_content(root, exported_bundle):
    """A policy.json (with its verdict) copied from another bundle: the onnx it certified differs."""
    bundle = root / "go2" / exported_bundle.name
    meta = json.loads((bundle / "policy.json").read_text())
    meta["sim2sim"] = {"passed": True, "report": "r.html", "spec_hash": meta["robot"]["spec_hash"],
                       "onnx_sha256": "ab" * 32, "created": "2025-01-01T00:00:00Z"}
    (bundle / "policy.json").write_text(B.dump_json(meta))
    B.write_manifest(bundle)
    with pytest.raises(RegistryError, match="recorded for onnx abababab"):
        PolicyRegistry(root).promote(exported_bundle.name)


def test_promote_with_a_passing_verdict_moves_the_current_pointer(root, exported_bundle, capsys):
    assert main(["models", "current", "go2", "--root", str(root)]) == 1
    _pass(root / "go2" / OTHER_ID)
    _pass(root / "go2" / exported_bundle.name)
    reg = PolicyRegistry(root)
    reg.promote(OTHER_ID)
    assert reg.current("go2") == root / "go2" / OTHER_ID
    assert main(["models", "promote", exported_bundle.name, "--root", str(root)]) == 0
    assert f"current is now {exported_bundle.name} (was {OTHER_ID})" in capsys.readouterr().out
    pointer = json.loads((root / "go2" / "current.json").read_text())
    assert pointer["id"] == exported_bundle.name and pointer["previous"] == OTHER_ID
    assert pointer["onnx_sha256"] == B.sha256_file(root / "go2" / exported_bundle.name / "policy.onnx")
    assert main(["models", "current", "go2", "--root", str(root)]) == 0
    assert exported_bundle.name in capsys.readouterr().out
    assert main(["models", "list", "--root", str(root)]) == 0
    assert f"* go2        {exported_bundle.name}" in capsys.readouterr().out
    assert not [p for p in (root / "go2").iterdir() if p.name.startswith(".")]


def test_a_failed_pointer_write_leaves_the_previous_pointer(root, exported_bundle, monkeypatch):
    """write new, rename: an interruption before the rename changes nothing a reader sees."""
    _pass(root / "go2" / OTHER_ID)
    _pass(root / "go2" / exported_bundle.name)
    reg = PolicyRegistry(root)
    reg.promote(OTHER_ID)
    before = (root / "go2" / "current.json").read_text()

    def interrupted(src, dst):
        raise KeyboardInterrupt("power cut before the rename")

    monkeypatch.setattr(B.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reg.promote(exported_bundle.name)
    monkeypatch.setattr(B.os, "replace", os.replace)
    assert (root / "go2" / "current.json").read_text() == before
    assert reg.current("go2") == root / "go2" / OTHER_ID


def test_promote_re_verifies_the_bundle(root, exported_bundle):
    bundle = root / "go2" / exported_bundle.name
    _pass(bundle)
    (bundle / "policy.onnx").open("ab").write(b"\0")
    with pytest.raises(B.BundleError, match="differs from the manifest"):
        PolicyRegistry(root).promote(exported_bundle.name)
    assert PolicyRegistry(root).current("go2") is None


def test_current_resolves_the_same_way_for_the_cli_the_node_and_preflight(root, exported_bundle,
                                                                        monkeypatch, capsys):
    """`sac2real run --policy current`, the launch files' `policy:=current` (the node's `policy`
    parameter) and preflight all go through PolicyRegistry.resolve."""
    import sys

    sys.path.insert(0, str(REPO_ROOT / "ros2_ws" / "src" / "policy_runner"))
    from policy_runner.node import ParameterError, parse_parameters, resolve_policy

    from deploy.preflight import Preflight
    from deploy.spec import RobotSpec

    monkeypatch.setenv(ENV_VAR, str(root))
    reg, spec = PolicyRegistry(), RobotSpec.load("go2")
    with pytest.raises(RegistryError, match="robot 'go2' has no current bundle"):
        reg.resolve("current", "go2")
    with pytest.raises(ParameterError, match="parameter 'policy': robot 'go2' has no current bundle"):
        resolve_policy(parse_parameters({"robot": "go2", "policy": "current"}), spec)
    assert main(["run", "--robot", "go2", "--policy", "current", "--duration", "0.1", "--fast"]) == 1
    assert "no current bundle" in capsys.readouterr().err
    with pytest.raises(RegistryError, match="say which robot"):
        reg.resolve("current")

    _pass(root / "go2" / exported_bundle.name)
    reg.promote(exported_bundle.name)
    expected = root / "go2" / exported_bundle.name
    assert reg.resolve("current", "go2") == expected
    assert resolve_policy(parse_parameters({"robot": "go2", "policy": "current"}), spec).path == expected
    preflight = Preflight("go2", "mujoco", policy="current", registry_root=str(root))
    preflight.spec = spec
    assert preflight._bundle() == str(expected)
    assert main(["run", "--robot", "go2", "--policy", "current", "--duration", "0.2", "--fast"]) in (0, 1)
    run = json.loads(capsys.readouterr().out)
    assert run["policy_id"] == exported_bundle.name


# ---- keys and signing ---------------------------------------------------------------------------
def test_keys_new_makes_a_private_key_only_its_owner_reads_and_list_names_who_trusts_it(
        tmp_path, monkeypatch, capsys):
    from deploy import signing

    monkeypatch.setenv(signing.KEYS_ENV, str(tmp_path / "private"))
    public = tmp_path / "public"
    assert main(["keys", "new", "lab", "--public-dir", str(public)]) == 0
    private = tmp_path / "private" / "lab.key"
    assert private.stat().st_mode & 0o777 == 0o600 and (private.parent.stat().st_mode & 0o777) == 0o700
    assert (public / "lab.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "-----BEGIN PRIVATE KEY-----" in private.read_text()
    capsys.readouterr()
    assert main(["keys", "new", "lab", "--public-dir", str(public)]) == 2          # never overwrites
    assert "exists; a key is never overwritten" in capsys.readouterr().err
    assert main(["keys", "new", "in-repo", "--dir", str(REPO_ROOT / "keys"),
                 "--public-dir", str(public)]) == 2
    assert "inside the repository" in capsys.readouterr().err and not (REPO_ROOT / "keys").exists()
    assert main(["keys", "new", "../x", "--public-dir", str(public)]) == 2

    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "go2.yaml").write_text(f"trust:\n  keys: [{public / 'lab.pub'}]\n")
    (deploy / "g1.yaml").write_text("safety: {}\n")
    assert main(["keys", "list", "--public-dir", str(public), "--deploy-dir", str(deploy)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("lab ")][0]
    kid = signing.key_id(signing.load_public(public / "lab.pub"))
    assert kid in row and "go2" in row and "g1" not in row and str(private) in row


def test_sign_needs_a_passing_verdict_and_a_robot_trusting_the_key_then_loads_it(
        root, exported_bundle, tmp_path, monkeypatch, capsys):
    from deploy import signing
    from deploy.spec import RobotSpec

    monkeypatch.setenv(signing.KEYS_ENV, str(tmp_path / "private"))
    _, pub = signing.new_key("lab", public_dir=tmp_path / "public")
    ref = ["--root", str(root)]
    config = tmp_path / "go2.yaml"
    config.write_text(f"trust:\n  keys: [{pub}]\n")
    signed = ["models", "verify", exported_bundle.name, "--signed", "--deploy-config", str(config), *ref]
    assert main(signed) == 2
    assert "signature: missing" in capsys.readouterr().err
    assert main(["models", "sign", exported_bundle.name, "--key", "lab", *ref]) == 2
    assert "need a passing sim2sim verdict" in capsys.readouterr().err
    _pass(root / "go2" / exported_bundle.name)
    assert main(["models", "sign", exported_bundle.name, "--key", "nokey", *ref]) == 2
    assert "no private key 'nokey'" in capsys.readouterr().err
    assert main(["models", "sign", exported_bundle.name, "--key", "lab", *ref]) == 0
    assert "with key 'lab'" in capsys.readouterr().out
    assert main(["models", "show", exported_bundle.name, *ref]) == 0
    assert "signature: key 'lab'" in capsys.readouterr().out
    assert main(signed) == 0
    assert "signed by trusted key 'lab'" in capsys.readouterr().out
    trust = signing.TrustCheck(signing.TrustConfig(None, signing.trusted_keys([str(pub)], tmp_path)),
                               hardware=True)
    bundle = B.PolicyBundle.load(root / "go2" / exported_bundle.name, RobotSpec.load("go2"),
                                 providers="cpu", trust=trust)
    assert bundle.signature["key"]["name"] == "lab"


def test_a_private_key_others_can_read_is_refused(tmp_path):
    from deploy import signing

    private, _ = signing.new_key("lab", tmp_path / "private", tmp_path / "public")
    private.chmod(0o644)
    with pytest.raises(signing.SigningError, match="readable by others"):
        signing.load_private(private)


def test_without_external_bundles_only_registry_folders_resolve(root, exported_bundle, tmp_path):
    """What the node's `policy` parameter accepts by default: ids and folders of the registry;
    a folder elsewhere, a link out of the registry or a path climbing out of it are refused."""
    reg = PolicyRegistry(root)
    inside = root / "go2" / exported_bundle.name
    assert reg.resolve(str(inside), external=False) == inside
    assert reg.resolve(exported_bundle.name, external=False) == inside
    outside = tmp_path / "elsewhere" / "go2" / "x"
    shutil.copytree(exported_bundle, outside)
    (root / "go2" / "link").symlink_to(outside, target_is_directory=True)
    for ref in (str(outside), "go2/link", str(root / "go2" / "link"), "go2/../../elsewhere/go2/x"):
        assert reg.resolve(ref) is not None
        with pytest.raises(RegistryError, match="not a bundle in the registry"):
            reg.resolve(ref, external=False)
