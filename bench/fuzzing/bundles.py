"""Fuzzing of policy bundles (deploy.bundle.PolicyBundle.load with a hardware backend's trust rule,
and the registry's resolver): mutations of a signed copy of a real bundle.

The bundle is the registry's current Go2 bundle (models/policies/go2), copied, signed with a key
made for the run and trusted by the run's TrustCheck (hardware=True, as on the unitree and ros2
backends). Each trial mutates a fresh copy: ONNX bytes, policy.json fields, the manifest, golden
pairs, the signature, and bundles forged to be self-consistent (ONNX changed; golden pairs,
verdict and manifest recomputed, as an attacker with this code could), left unsigned, re-signed
with an untrusted key or carrying the original signature. Outcomes: refused = load or registry
raised BundleError / RegistryError naming the bundle; handled = a change outside the signed
content (a hidden file) and the bundle still loads; silently_accepted = a mutated bundle loaded."""
from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from bench.fuzzing.tally import Tally
from deploy import bundle as B
from deploy import signing
from deploy.registry import PolicyRegistry, RegistryError
from deploy.spec import RobotSpec

ROBOT = "go2"
BAD_VALUES = [float("nan"), float("inf"), -1.0, 0, 1e308, "x", None, [], {}, True, 5e-324]


def forge(bundle_dir: Path, scale: float = 1.5) -> Path:
    """Make `bundle_dir` a self-consistent bundle of a different policy, in place: one weight
    of the ONNX graph scaled, golden actions recomputed with onnxruntime, a passing verdict for
    the new content, the manifest rewritten. Everything but a signature checks out."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(bundle_dir / B.ONNX_FILE)
    init = max((t for t in model.graph.initializer if t.data_type in (1, 11)),
               key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale, init.name))
    onnx.save(model, bundle_dir / B.ONNX_FILE)
    meta = json.loads((bundle_dir / B.META_FILE).read_text())
    session = B.make_session(bundle_dir / B.ONNX_FILE, "cpu")
    obs = np.asarray(meta["golden"]["obs"], np.float32)
    meta["golden"]["actions"] = session.run([B.OUTPUT_NAME], {B.INPUT_NAME: obs})[0].tolist()
    meta["sim2sim"] = {"passed": True, "report": "sim2sim/forged/report.json",
                       "spec_hash": meta["robot"]["spec_hash"], "created": "2026-01-01T00:00:00Z",
                       "onnx_sha256": hashlib.sha256((bundle_dir / B.ONNX_FILE).read_bytes()).hexdigest()}
    (bundle_dir / B.META_FILE).write_text(B.dump_json(meta))
    B.write_manifest(bundle_dir)
    return bundle_dir


class Fixture:
    """A signed copy of the real bundle, the keys and the hardware trust rule of one run."""

    def __init__(self, work: Path):
        source = PolicyRegistry().current(ROBOT)
        if source is None:
            raise RuntimeError(f"no current {ROBOT} bundle in the registry to fuzz")
        self.spec = RobotSpec.load(ROBOT)
        self.root = work / "registry"
        self.signed = self.root / ROBOT / source.name
        shutil.copytree(source, self.signed, ignore=shutil.ignore_patterns(signing.SIGNATURE_FILE))
        self.trusted_key, pub = signing.new_key("trusted", work / "private", work / "public")
        self.untrusted_key, _ = signing.new_key("attacker", work / "private", work / "public")
        B.sign_bundle(self.signed, self.trusted_key)
        config = signing.TrustConfig(None, signing.trusted_keys([str(pub)], work), "fuzz")
        self.trust = signing.TrustCheck(config, hardware=True)
        B.PolicyBundle.load(self.signed, self.spec, providers="cpu", trust=self.trust)  # sane start

    def copy(self, dst: Path) -> Path:
        shutil.copytree(self.signed, dst)
        return dst


def _rewrite_meta(path: Path, edit: Callable[[dict], None], manifest: bool) -> None:
    meta = json.loads((path / B.META_FILE).read_text())
    edit(meta)
    (path / B.META_FILE).write_text(json.dumps(meta, allow_nan=True))
    if manifest:
        B.write_manifest(path)


def _leaf_paths(obj, prefix=()) -> list[tuple]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaf_paths(v, prefix + (k,))] or [prefix]
    if isinstance(obj, list) and obj:
        return [p for i, v in enumerate(obj[:3]) for p in _leaf_paths(v, prefix + (i,))]
    return [prefix]


def _set(meta: dict, path: tuple, value) -> None:
    node = meta
    for k in path[:-1]:
        node = node[k]
    if value is _DELETE and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = None if value is _DELETE else value


_DELETE = object()


def _mutations(fx: Fixture, rng: random.Random) -> dict[str, Callable[[Path], None]]:
    """name -> a function that mutates a copy of the signed bundle in place."""
    def onnx_bytes(p: Path, manifest: bool = False) -> None:
        data = bytearray((p / B.ONNX_FILE).read_bytes())
        kind = rng.choice(["flip", "truncate", "append"])
        if kind == "flip":
            i = rng.randrange(len(data))
            data[i] ^= rng.randrange(1, 256)
        elif kind == "truncate":
            del data[rng.randrange(len(data)):]
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        (p / B.ONNX_FILE).write_bytes(bytes(data))
        if manifest:
            B.write_manifest(p)

    def meta_field(p: Path, manifest: bool) -> None:
        meta = json.loads((p / B.META_FILE).read_text())
        path = rng.choice(_leaf_paths(meta))
        _rewrite_meta(p, lambda m: _set(m, path, rng.choice(BAD_VALUES + [_DELETE])), manifest)

    def golden(p: Path) -> None:
        def edit(m):
            row = rng.randrange(len(m["golden"]["actions"]))
            col = rng.randrange(len(m["golden"]["actions"][row]))
            m["golden"]["actions"][row][col] += rng.choice([1e-3, -0.5, 2.0])
        _rewrite_meta(p, edit, True)

    def manifest_text(p: Path) -> None:
        lines = (p / B.MANIFEST_FILE).read_text().splitlines()
        i = rng.randrange(len(lines))
        kind = rng.choice(["drop", "duplicate", "garbage", "digest", "absolute"])
        if kind == "drop":
            del lines[i]
        elif kind == "duplicate":
            lines.append(lines[i])
        elif kind == "garbage":
            lines[i] = "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randint(0, 90)))
        elif kind == "digest":
            lines[i] = "0" * 64 + lines[i][64:]
        else:
            lines[i] = lines[i][:66] + "/etc/passwd"
        (p / B.MANIFEST_FILE).write_text("\n".join(lines) + "\n")

    def signature(p: Path) -> None:
        path = p / signing.SIGNATURE_FILE
        sig = json.loads(path.read_text())
        kind = rng.choice(["delete", "bytes", "key_id", "signed_field", "garbage", "format"])
        if kind == "delete":
            path.unlink()
            return
        if kind == "bytes":
            raw = bytearray(base64.b64decode(sig["signature"]))
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            sig["signature"] = base64.b64encode(bytes(raw)).decode()
        elif kind == "key_id":
            sig["key"]["id"] = "%016x" % rng.getrandbits(64)
        elif kind == "signed_field":
            sig["signed"]["verdict"] = {"passed": True, "created": "now", "report": "x"}
        elif kind == "format":
            sig["algorithm"] = rng.choice(["rsa", "none", ""])
        else:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))
            return
        path.write_text(json.dumps(sig))

    def deep_json(p: Path) -> None:
        """policy.json or signature.json nested past the JSON parser's recursion limit."""
        name = rng.choice([B.META_FILE, signing.SIGNATURE_FILE])
        (p / name).write_text(rng.choice("[{") * rng.choice([2000, 100_000]))
        if name == B.META_FILE and rng.random() < 0.5:
            B.write_manifest(p)

    def extra_file(p: Path) -> None:
        (p / "sim2sim" / "extra.txt").parent.mkdir(exist_ok=True)
        (p / "sim2sim" / "extra.txt").write_text("added after signing")
        B.write_manifest(p)

    def forged_unsigned(p: Path) -> None:
        forge(p)
        (p / signing.SIGNATURE_FILE).unlink()

    def forged_attacker_signed(p: Path) -> None:
        forge(p)
        B.sign_bundle(p, fx.untrusted_key)

    def forged_original_signature(p: Path) -> None:
        forge(p)        # signature.json still the original one

    return {
        "onnx_bytes": onnx_bytes, "onnx_bytes+manifest": lambda p: onnx_bytes(p, True),
        "meta_field": lambda p: meta_field(p, False), "meta_field+manifest": lambda p: meta_field(p, True),
        "golden+manifest": golden, "manifest": manifest_text, "signature": signature,
        "extra_file+manifest": extra_file, "deep_json": deep_json, "forged_unsigned": forged_unsigned,
        "forged_attacker_signed": forged_attacker_signed,
        "forged_original_signature": forged_original_signature,
    }


def _load_outcome(fx: Fixture, path: Path) -> str:
    try:
        B.PolicyBundle.load(path, fx.spec, providers="cpu", trust=fx.trust)
    except B.BundleError as exc:
        return "refused" if str(path) in str(exc) and exc.field else "silently_accepted"
    return "silently_accepted"


def _registry_outcome(fx: Fixture, work: Path, rng: random.Random) -> tuple[str, str]:
    """A `policy` reference that leaves the registry: refused unless external bundles are allowed."""
    outside = fx.copy(work / f"outside-{rng.getrandbits(32):08x}" / ROBOT / fx.signed.name)
    link = fx.root / ROBOT / f"link-{rng.getrandbits(32):08x}"
    link.symlink_to(outside, target_is_directory=True)
    ref = rng.choice([str(outside), str(link), f"{ROBOT}/../../{outside.relative_to(work)}",
                      link.name, f"{ROBOT}/{link.name}"])
    try:
        PolicyRegistry(fx.root).resolve(ref, ROBOT, external=False)
    except RegistryError:
        return "refused", ref
    return "silently_accepted", ref


def fuzz(n: int, seed: int) -> Tally:
    tally = Tally("bundles")
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="fuzz-bundles-") as tmp:
        work = Path(tmp)
        fx = Fixture(work)
        mutations = _mutations(fx, rng)
        names = sorted(mutations) + ["registry_outside", "hidden_file"]
        for i in range(n):
            name = names[i % len(names)] if i < len(names) else rng.choice(names)
            trial = work / f"t{i}"
            if name == "registry_outside":
                outcome, ref = _registry_outcome(fx, work, rng)
                tally.add(outcome, f"{name}: {ref}")
                continue
            path = fx.copy(trial / ROBOT / fx.signed.name)
            if name == "hidden_file":
                (path / ".notes").write_text("never read")
                # outside the signed content and never read: loading it is safe (handled)
                tally.trial(name, lambda: "handled" if _load_outcome(fx, path) == "silently_accepted"
                            else "refused")
            else:
                tally.trial(name, lambda: (mutations[name](path), _load_outcome(fx, path))[1])
            shutil.rmtree(trial, ignore_errors=True)
    return tally
