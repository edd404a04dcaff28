"""PolicyBundle: the only form in which a policy crosses from training to a robot.

A bundle is a folder `models/policies/<robot>/<id>/` holding

    policy.onnx      obs -> normalizer -> trunk -> mean -> tanh -> center + half_range * tanh
                     (deterministic; input `obs` (batch, obs_dim), output `actions` (batch, joints))
    policy.json      what the numbers mean: robot and spec hash, joint names in policy order,
                     observation layout and hash, action semantics, dt, gains, parentage, golden
                     obs -> action pairs and the sim2sim verdict (null until the gate writes one)
    manifest.sha256  the sha256 of every other file, in `sha256sum` format
    signature.json   optional: an Ed25519 signature of the manifest and verdict (deploy/signing.py);
                     not in the manifest. Hardware backends drive only bundles a trusted key signed

Loading re-checks all of it against the RobotSpec the caller is about to drive and runs the golden
pairs through onnxruntime, so a bundle that was altered, exported for another robot or another
joint order, observation layout, dt or gains is refused before anything moves. Every refusal is a
`BundleError` that names the bundle, the field and what differs.

No torch here: numpy, onnxruntime and json only."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from deploy.action_map import ActionMap
from deploy.observations import ObservationLayout, ObservationPipeline
from deploy.durable import atomic_write_text, fsync_dir, sha256_file, write_synced
from deploy.signing import SIGNATURE_FILE, TrustCheck, load_private, make_signature, read_signature, \
    signed_content
from deploy.spec import RobotSpec

BUNDLE_FORMAT = 1
ONNX_FILE = "policy.onnx"
META_FILE = "policy.json"
MANIFEST_FILE = "manifest.sha256"
PENDING_MANIFEST = ".manifest.sha256.pending"   # written before a verdict update renames files
INPUT_NAME = "obs"
OUTPUT_NAME = "actions"
# Optional outputs for exploration on the robot: the pre-squash mean (anchor included) and standard
# deviation, so a = center + half_range * tanh(mean + scale * std * eps) samples the trained policy.
EXPLORE_OUTPUTS = ("mean", "std")
GOLDEN_TOLERANCE = 1e-5
VERDICT_KEYS = {"passed": bool, "report": str, "spec_hash": str, "onnx_sha256": str, "created": str}
VERDICT_OPTIONAL = {"metrics": dict}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"


class BundleError(ValueError):
    """A bundle is refused; the message names the bundle path, the field and what differs."""

    def __init__(self, path: str | Path, field: str, problem: str):
        self.path = str(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: {field}: {problem}")


# ---- files: hashing, manifest, atomic writes -------------------------------------------------
def layout_hash(layout: list[dict]) -> str:
    """The same digest as ObservationLayout.hash, for a layout read back from JSON."""
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()


def _bundle_files(bundle_dir: Path) -> list[str]:
    """Every regular file under the bundle, as relative POSIX paths, except the manifest itself, the
    signature (it signs the manifest) and anything hidden (temporary files of atomic writes)."""
    out = []
    for p in sorted(bundle_dir.rglob("*")):
        rel = p.relative_to(bundle_dir)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if rel.as_posix() not in (MANIFEST_FILE, SIGNATURE_FILE):
            out.append(rel.as_posix())
    return out


def manifest_text(bundle_dir: str | Path, overrides: dict[str, str] | None = None) -> str:
    """`sha256sum` lines for the bundle's files; `overrides` gives digests of files about to be
    replaced (name -> sha256)."""
    bundle_dir = Path(bundle_dir)
    overrides = overrides or {}
    names = sorted(set(_bundle_files(bundle_dir)) | set(overrides))
    lines = [f"{overrides.get(n) or sha256_file(bundle_dir / n)}  {n}" for n in names]
    return "\n".join(lines) + "\n"


def write_manifest(bundle_dir: str | Path) -> Path:
    """(Re)write manifest.sha256 over every file now in the bundle, atomically."""
    path = Path(bundle_dir) / MANIFEST_FILE
    atomic_write_text(path, manifest_text(bundle_dir))
    return path


def read_manifest(bundle_dir: str | Path) -> dict[str, str]:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(bundle_dir, MANIFEST_FILE, "missing: a bundle without a manifest is refused")
    entries: dict[str, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        ok_digest = len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
        if not sep or not ok_digest or not name or name.startswith("/") or ".." in name.split("/"):
            raise BundleError(bundle_dir, f"{MANIFEST_FILE} line {n}",
                              f"not a '<sha256>  <file>' line: {line[:80]!r}")
        if name in entries:
            raise BundleError(bundle_dir, f"{MANIFEST_FILE} line {n}", f"'{name}' is listed twice")
        entries[name] = digest
    return entries


def check_manifest(bundle_dir: str | Path, allow_unlisted: bool = False) -> dict[str, str]:
    """Every file listed, present and unchanged; no file unlisted (unless `allow_unlisted`, for a
    writer about to add files to the manifest). Returns name -> sha256."""
    bundle_dir = Path(bundle_dir)
    entries = read_manifest(bundle_dir)
    hint = ""
    if (bundle_dir / PENDING_MANIFEST).exists():
        hint = (f" (an interrupted verdict update left {PENDING_MANIFEST}; calling "
                f"deploy.bundle.record_verdict again completes or undoes it)")
    for name in (ONNX_FILE, META_FILE):
        if name not in entries:
            raise BundleError(bundle_dir, MANIFEST_FILE, f"does not list {name}")
    for name, digest in entries.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(bundle_dir, name, f"listed in {MANIFEST_FILE} but missing")
        actual = sha256_file(path)
        if actual != digest:
            raise BundleError(bundle_dir, name, f"sha256 {actual[:16]}... differs from the manifest's "
                              f"{digest[:16]}...: the file changed after export{hint}")
    unlisted = sorted(set(_bundle_files(bundle_dir)) - set(entries))
    if unlisted and not allow_unlisted:
        raise BundleError(bundle_dir, MANIFEST_FILE, f"files not in the manifest: {', '.join(unlisted)}")
    return entries


def dump_json(obj: Any) -> str:
    """Indented JSON with lists of numbers on one line each (golden pairs stay readable)."""
    return _json(obj, 0) + "\n"


def _json(obj: Any, level: int) -> str:
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict) and obj and (any(isinstance(v, (dict, list, tuple)) for v in obj.values())
                                          or len(json.dumps(obj)) > 200):
        items = [f"{inner}{json.dumps(str(k))}: {_json(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (dict, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(f"{inner}{_json(v, level + 1)}" for v in obj) + f"\n{pad}]"
    return json.dumps(obj)


def read_meta(bundle_dir: str | Path) -> dict:
    """policy.json as a dict, with its format and shape checked (not its agreement with a spec)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / META_FILE
    if not path.is_file():
        raise BundleError(bundle_dir, META_FILE, "missing")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(bundle_dir, META_FILE, f"not valid JSON ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from exc
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise BundleError(bundle_dir, f"{META_FILE}: format",
                          f"expected bundle format {BUNDLE_FORMAT}, found {found!r}")
    _check_shape(meta, bundle_dir)
    return meta


# the keys a loader relies on, with their JSON types
_SCHEMA: dict[str, type | tuple] = {
    "id": str, "created": str, "robot.name": str, "robot.spec_hash": str, "robot.spec": dict,
    "joints": list, "observation.dim": int, "observation.layout": list, "observation.hash": str,
    "action.dim": int, "action.scale": (int, float), "action.default_pos": list,
    "action.low": list, "action.high": list, "action.soft_lower": list, "action.soft_upper": list,
    "timing.policy_dt": (int, float), "gains.kp": list, "gains.kd": list,
    "onnx.file": str, "onnx.input": str, "onnx.output": str, "parent.sha256": str,
    "training.config": dict, "training.env_steps": int, "golden.obs": list, "golden.actions": list,
}


def _check_shape(meta: dict, bundle_dir: Path) -> None:
    for dotted, kind in _SCHEMA.items():
        value: Any = meta
        for key in dotted.split("."):
            if not isinstance(value, dict) or key not in value:
                raise BundleError(bundle_dir, f"{META_FILE}: {dotted}", "required key is missing")
            value = value[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise BundleError(bundle_dir, f"{META_FILE}: {dotted}",
                              f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    if "sim2sim" not in meta:
        raise BundleError(bundle_dir, f"{META_FILE}: sim2sim", "required key is missing (null if none)")


# ---- agreement with the RobotSpec being driven ------------------------------------------------
def spec_hashed_content(spec: RobotSpec) -> dict:
    """The spec content its hash covers (file locations left out), as JSON types."""
    d = spec.to_dict()
    d.pop("source")
    d.pop("mjcf")
    return json.loads(json.dumps(d))


def _first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}".lstrip("."), a.get(k, "<absent>"), b.get(k, "<absent>")
            d = _first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path} (length)", len(a), len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else (path.lstrip("."), a, b)


def _close(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)), abs(float(b)))


def check_against_spec(meta: dict, spec: RobotSpec, bundle_dir: str | Path,
                       layout: ObservationLayout | None = None) -> None:
    """Refuse a bundle that disagrees with `spec` (and with `layout` when the caller gives its own
    pipeline's layout), naming the first difference. Specific fields are checked before the spec
    hash so that the message says what differs, not only that something does."""
    where = bundle_dir
    robot = meta["robot"]["name"]
    if robot != spec.name:
        raise BundleError(where, "robot", f"bundle is for robot '{robot}', spec is '{spec.name}' "
                          f"({spec.source})")

    names = list(meta["joints"])
    if len(names) != spec.num_joints:
        raise BundleError(where, "joints", f"number of joints differs: bundle {len(names)}, "
                          f"spec {spec.num_joints}")
    if set(names) != set(spec.joint_names):
        only_b = sorted(set(names) - set(spec.joint_names))
        only_s = sorted(set(spec.joint_names) - set(names))
        raise BundleError(where, "joints", f"joint names differ: bundle only {only_b}, spec only {only_s}")
    for i, (b, s) in enumerate(zip(names, spec.joint_names)):
        if b != s:
            raise BundleError(where, "joints", f"joint order differs at index {i}: bundle '{b}', "
                              f"spec '{s}'")

    _check_layout(meta, spec, where, layout)

    dt = meta["timing"]["policy_dt"]
    if not _close(dt, spec.policy_dt):
        raise BundleError(where, "timing.policy_dt", f"policy dt differs: bundle {dt:g} s, "
                          f"spec {spec.policy_dt:g} s")

    action = meta["action"]
    if action["dim"] != spec.num_joints:
        raise BundleError(where, "action.dim", f"action dim differs: bundle {action['dim']}, "
                          f"spec {spec.num_joints}")
    if not _close(action["scale"], spec.action_scale):
        raise BundleError(where, "action.scale", f"action scale differs: bundle {action['scale']:g}, "
                          f"spec {spec.action_scale:g}")
    amap = ActionMap(spec)
    per_joint = [("action.default_pos", action["default_pos"], spec.default_pos),
                 ("action.low", action["low"], amap.low), ("action.high", action["high"], amap.high),
                 ("action.soft_lower", action["soft_lower"], spec.soft_lower),
                 ("action.soft_upper", action["soft_upper"], spec.soft_upper),
                 ("gains.kp", meta["gains"]["kp"], spec.kp), ("gains.kd", meta["gains"]["kd"], spec.kd)]
    for field, got, want in per_joint:
        _check_per_joint(where, field, got, want, names)

    if meta["robot"]["spec_hash"] != spec.hash:
        diff = _first_difference(meta["robot"]["spec"], spec_hashed_content(spec))
        what = (f"first difference at {diff[0]}: bundle {diff[1]!r}, spec {diff[2]!r}" if diff
                else "the stored spec content agrees, so the hash itself was altered")
        raise BundleError(where, "robot.spec_hash",
                          f"spec hash differs: bundle {meta['robot']['spec_hash'][:12]}, spec "
                          f"{spec.hash[:12]} ({spec.source}); {what}")


def _check_per_joint(where, field: str, got: list, want: np.ndarray, names: list[str]) -> None:
    if len(got) != len(want):
        raise BundleError(where, field, f"has {len(got)} values for {len(want)} joints")
    for i, (g, w) in enumerate(zip(got, want)):
        if not _close(g, w):
            raise BundleError(where, field, f"{field.split('.')[-1]} of joint '{names[i]}' (index {i}) "
                              f"differs: bundle {g:g}, spec {w:g}")


def _check_layout(meta: dict, spec: RobotSpec, where, layout: ObservationLayout | None) -> None:
    obs = meta["observation"]
    stored = obs["layout"]
    if layout_hash(stored) != obs["hash"]:
        raise BundleError(where, "observation.hash", f"{obs['hash'][:12]} is not the hash of the "
                          f"stored layout ({layout_hash(stored)[:12]})")
    if sum(int(e.get("dim", 0)) for e in stored) != obs["dim"]:
        raise BundleError(where, "observation.dim", f"{obs['dim']} is not the sum of the layout's dims")
    if layout is None:
        rough = any(e.get("name") == "height_scan" for e in stored)
        layout = ObservationPipeline(spec, height_scan=rough).layout
    if obs["dim"] != layout.dim:
        raise BundleError(where, "observation.dim", f"observation dim differs: bundle {obs['dim']}, "
                          f"spec {layout.dim} (terms: bundle {[e.get('name') for e in stored]}, "
                          f"spec {layout.names})")
    if obs["hash"] != layout.hash:
        diff = _first_difference(stored, layout.to_list())
        detail = f"at {diff[0]}: bundle {diff[1]!r}, spec {diff[2]!r}" if diff else ""
        raise BundleError(where, "observation.layout", f"observation layout hash differs (bundle "
                          f"{obs['hash'][:12]}, spec {layout.hash[:12]}) {detail}".rstrip())


# ---- onnxruntime ------------------------------------------------------------------------------
def _gpu_present() -> bool:
    """An NVIDIA GPU is visible to this process (desktop driver or Jetson)."""
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu"))


def select_providers(device: str = "auto") -> list:
    """onnxruntime execution providers: TensorRT / CUDA (fp32: no fp16, no TF32) where
    onnxruntime-gpu is installed and a GPU is present, else the CPU. `device`: auto | cpu | gpu."""
    import onnxruntime as ort

    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be auto, cpu or gpu, got {device!r}")
    if device == "cpu":
        return [CPU_PROVIDER]
    available = ort.get_available_providers()
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if not gpu or not _gpu_present():
        if device == "gpu":
            raise RuntimeError(f"no GPU execution provider usable (available: {available}; "
                               f"GPU device present: {_gpu_present()}); install onnxruntime-gpu")
        return [CPU_PROVIDER]
    options = {"TensorrtExecutionProvider": {"trt_fp16_enable": False, "trt_int8_enable": False},
               "CUDAExecutionProvider": {"use_tf32": 0}}
    return [(p, options[p]) for p in gpu] + [CPU_PROVIDER]


def make_session(onnx_path: str | Path, providers: Sequence | str = "auto"):
    """An InferenceSession for batch-1 control: one intra-op thread, sequential execution."""
    import onnxruntime as ort

    if isinstance(providers, str):
        providers = select_providers(providers)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), so, providers=list(providers))


def _check_session_io(session, meta: dict, where) -> None:
    ins, outs = session.get_inputs(), session.get_outputs()
    obs_dim, act_dim = meta["observation"]["dim"], meta["action"]["dim"]
    names = [o.name for o in outs]
    if [i.name for i in ins] != [INPUT_NAME] or names not in ([OUTPUT_NAME], [OUTPUT_NAME, *EXPLORE_OUTPUTS]):
        raise BundleError(where, ONNX_FILE, f"expected one input '{INPUT_NAME}' and the outputs "
                          f"'{OUTPUT_NAME}' (optionally followed by {', '.join(EXPLORE_OUTPUTS)}), "
                          f"found inputs {[i.name for i in ins]}, outputs {names}")
    if any(len(o.shape) != 2 or o.shape[1] != act_dim for o in outs[1:]):
        raise BundleError(where, ONNX_FILE, f"exploration outputs must be (batch, {act_dim}), found "
                          f"{[o.shape for o in outs[1:]]}")
    if len(ins[0].shape) != 2 or ins[0].shape[1] != obs_dim or isinstance(ins[0].shape[0], int):
        raise BundleError(where, ONNX_FILE, f"input shape {ins[0].shape} is not (batch, {obs_dim}) "
                          f"with a dynamic batch")
    if len(outs[0].shape) != 2 or outs[0].shape[1] != act_dim:
        raise BundleError(where, ONNX_FILE, f"output shape {outs[0].shape} is not (batch, {act_dim})")


def check_golden(session, meta: dict, where, tolerance: float = GOLDEN_TOLERANCE) -> float:
    """Run the stored obs -> action pairs, one at a time (as the robot does) and as one batch.
    Returns the largest difference; refuses any pair off by more than `tolerance`."""
    obs = np.asarray(meta["golden"]["obs"], dtype=np.float32)
    want = np.asarray(meta["golden"]["actions"], dtype=np.float64)
    dim, act_dim = meta["observation"]["dim"], meta["action"]["dim"]
    if obs.ndim != 2 or len(obs) == 0 or obs.shape[1] != dim or want.shape != (len(obs), act_dim):
        raise BundleError(where, "golden", f"expected N x {dim} observations and N x {act_dim} "
                          f"actions, found {obs.shape} and {want.shape}")
    batch = session.run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    single = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: obs[i:i + 1]})[0]
                             for i in range(len(obs))])
    worst = 0.0
    for label, got in (("batch-1", single), (f"batch-{len(obs)}", batch)):
        diff = np.abs(got.astype(np.float64) - want)
        if not np.all(np.isfinite(got)):
            raise BundleError(where, "golden", f"the ONNX model returned non-finite actions ({label})")
        if diff.max() > tolerance:
            k, j = np.unravel_index(int(diff.argmax()), diff.shape)
            joint = meta["joints"][j] if j < len(meta["joints"]) else f"#{j}"
            raise BundleError(where, "golden", f"golden pair {k} no longer matches ({label} run on "
                              f"{session.get_providers()[0]}): action {j} (joint '{joint}') is "
                              f"{got[k, j]:.6f} from {ONNX_FILE}, {want[k, j]:.6f} in {META_FILE} "
                              f"(|diff| {diff[k, j]:.2e} > {tolerance:g})")
        worst = max(worst, float(diff.max()))
    return worst


# ---- the bundle -------------------------------------------------------------------------------
def _malformed_is_refused(path: Path, check, *args):
    """Run a check; a value of the wrong shape or type in policy.json is a refusal, not a crash."""
    try:
        return check(*args)
    except BundleError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise BundleError(path, META_FILE, f"malformed value ({type(exc).__name__}: {exc})") from exc


@dataclass
class _Signed:
    """What a trust check reads of a bundle, before the bundle is loaded."""

    meta: dict
    manifest: dict
    signature: dict | None


class PolicyBundle:
    """A verified, loaded bundle: `act(obs)` maps observations in the bundle's layout to env
    actions (apply them with deploy.action_map.ActionMap)."""

    def __init__(self, path: Path, meta: dict, session, manifest: dict[str, str], golden_error: float,
                 signature: dict | None = None):
        self.path = path
        self.meta = meta
        self.session = session
        self.manifest = manifest
        self.golden_error = golden_error
        self.signature = signature     # signature.json as read at load (None: unsigned)
        self._out = [OUTPUT_NAME]
        self.can_explore = [o.name for o in session.get_outputs()][1:] == list(EXPLORE_OUTPUTS)
        low, high = (np.asarray(meta["action"][k], dtype=np.float64) for k in ("low", "high"))
        self._center, self._half = (high + low) / 2, (high - low) / 2

    @classmethod
    def load(cls, path: str | Path, spec: RobotSpec, layout: ObservationLayout | None = None,
             providers: Sequence | str = "auto", trust: TrustCheck | None = None) -> "PolicyBundle":
        """Check the manifest, the spec (robot, joint names and order, dims, dt, gains, action
        semantics, spec hash), the observation layout, then run the golden pairs. `layout` is the
        caller's own pipeline layout; by default it is derived from `spec`. With `trust` (the
        robot's trust rule), a bundle without the signature that rule requires is refused first."""
        path = Path(path)
        if not path.is_dir():
            raise BundleError(path, "<bundle>", "not a bundle folder (not found)")
        manifest = check_manifest(path)
        meta = read_meta(path)
        signature = read_signature(path)
        if trust is not None:
            problem = trust.problem(_Signed(meta, manifest, signature))
            if problem:
                raise BundleError(path, "signature", problem)
        if meta["onnx"]["file"] != ONNX_FILE:
            raise BundleError(path, "onnx.file", f"expected '{ONNX_FILE}', found '{meta['onnx']['file']}'")
        _malformed_is_refused(path, check_against_spec, meta, spec, path, layout)
        if isinstance(providers, str):
            try:
                providers = select_providers(providers)
            except RuntimeError as exc:
                raise BundleError(path, "providers", str(exc)) from exc
        try:
            session = make_session(path / ONNX_FILE, providers)
        except Exception as exc:  # onnxruntime raises its own types for a damaged model
            raise BundleError(path, ONNX_FILE, f"onnxruntime cannot load it ({exc})") from exc
        _check_session_io(session, meta, path)
        error = _malformed_is_refused(path, check_golden, session, meta, path)
        return cls(path, meta, session, manifest, error, signature)

    # ---- what the bundle says ------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def robot(self) -> str:
        return self.meta["robot"]["name"]

    @property
    def spec_hash(self) -> str:
        return self.meta["robot"]["spec_hash"]

    @property
    def joint_names(self) -> list[str]:
        return list(self.meta["joints"])

    @property
    def obs_dim(self) -> int:
        return self.meta["observation"]["dim"]

    @property
    def act_dim(self) -> int:
        return self.meta["action"]["dim"]

    @property
    def layout(self) -> list[dict]:
        return self.meta["observation"]["layout"]

    @property
    def layout_hash(self) -> str:
        return self.meta["observation"]["hash"]

    @property
    def policy_dt(self) -> float:
        return float(self.meta["timing"]["policy_dt"])

    @property
    def onnx_sha256(self) -> str:
        return self.manifest[ONNX_FILE]

    @property
    def sim2sim(self) -> dict | None:
        return self.meta["sim2sim"]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    # ---- acting ----------------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> np.ndarray:
        """(obs_dim,) -> (joints,) or (N, obs_dim) -> (N, joints), float32."""
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        x = np.ascontiguousarray(x.reshape(1, -1) if single else x)
        if x.shape[-1] != self.obs_dim:
            raise ValueError(f"observation has {x.shape[-1]} values, bundle {self.id} expects "
                             f"{self.obs_dim}")
        y = self.session.run(self._out, {INPUT_NAME: x})[0]
        return y[0] if single else y

    def explore(self, obs: np.ndarray, scale: float, eps: np.ndarray) -> np.ndarray:
        """(obs_dim,) -> (joints,) float32: the policy's action sampled with its own std times
        `scale` and standard normal `eps` (joints,), squashed into the bounds as in training.
        Only for a bundle exported with the exploration outputs (`can_explore`)."""
        x = np.ascontiguousarray(np.asarray(obs, dtype=np.float32).reshape(1, -1))
        mean, std = self.session.run(list(EXPLORE_OUTPUTS), {INPUT_NAME: x})
        u = mean[0].astype(np.float64) + scale * std[0].astype(np.float64) * eps
        return (self._center + self._half * np.tanh(u)).astype(np.float32)

    __call__ = act

    def __repr__(self) -> str:
        return f"PolicyBundle({self.robot}/{self.id}, obs {self.obs_dim}, actions {self.act_dim})"


# ---- the sim2sim verdict ----------------------------------------------------------------------
def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def validate_verdict(verdict: Any, where: str | Path = "<verdict>") -> dict:
    """A verdict: {passed: bool, report: str, spec_hash: str, onnx_sha256: str, created: str}
    (+ optional metrics: dict). `created` defaults to now (UTC)."""
    if not isinstance(verdict, dict):
        raise BundleError(where, "sim2sim", f"a verdict is a mapping, got {type(verdict).__name__}")
    v = dict(verdict)
    v.setdefault("created", _utc_now())
    for key in v:
        if key not in VERDICT_KEYS and key not in VERDICT_OPTIONAL:
            raise BundleError(where, f"sim2sim.{key}", f"unknown verdict key (allowed: "
                              f"{', '.join([*VERDICT_KEYS, *VERDICT_OPTIONAL])})")
    for key, kind in {**VERDICT_KEYS, **VERDICT_OPTIONAL}.items():
        if key not in v:
            if key in VERDICT_KEYS:
                raise BundleError(where, f"sim2sim.{key}", "required key is missing")
            continue
        if not isinstance(v[key], kind) or (kind is not bool and isinstance(v[key], bool)):
            raise BundleError(where, f"sim2sim.{key}",
                              f"expected {kind.__name__}, got {type(v[key]).__name__}")
    report = Path(v["report"])
    if report.is_absolute() or ".." in report.parts or not v["report"]:
        raise BundleError(where, "sim2sim.report", f"{v['report']!r} is not a path inside the bundle "
                          f"(what a bundle records refers only to its own files)")
    return v


def _complete_pending(bundle_dir: Path) -> None:
    """Finish or undo a verdict update that was interrupted between its two renames."""
    pending = bundle_dir / PENDING_MANIFEST
    if not pending.exists():
        return
    try:
        listed = {line[66:]: line[:64] for line in pending.read_text().splitlines() if line}
        complete = all((bundle_dir / n).is_file() and sha256_file(bundle_dir / n) == d
                       for n, d in listed.items())
    except OSError:
        complete = False
    if complete:
        os.replace(pending, bundle_dir / MANIFEST_FILE)
    else:
        pending.unlink()
    fsync_dir(bundle_dir)


def record_verdict(bundle_dir: str | Path, verdict: dict) -> dict:
    """Write a sim2sim verdict into policy.json and rewrite the manifest with it.

    The verdict must name the onnx sha256 and spec hash it was measured on; both must match this
    bundle. Files the gate put into the bundle folder (its report and plots) join the manifest;
    files already listed must be unchanged. Order of writes: new policy.json and new manifest are
    written and fsynced as hidden files, then policy.json is renamed, then the manifest; a crash
    between the two renames leaves a bundle that is refused (never one accepted with unverified
    content) and the next call here completes it. Returns the verdict as stored."""
    bundle_dir = Path(bundle_dir)
    _complete_pending(bundle_dir)
    manifest = check_manifest(bundle_dir, allow_unlisted=True)
    meta = read_meta(bundle_dir)
    v = validate_verdict(verdict, bundle_dir)
    if v["onnx_sha256"] != manifest[ONNX_FILE]:
        raise BundleError(bundle_dir, "sim2sim.onnx_sha256", f"the verdict is for onnx "
                          f"{v['onnx_sha256'][:16]}..., this bundle holds {manifest[ONNX_FILE][:16]}...")
    if v["spec_hash"] != meta["robot"]["spec_hash"]:
        raise BundleError(bundle_dir, "sim2sim.spec_hash", f"the verdict is for spec "
                          f"{v['spec_hash'][:12]}, this bundle was exported for "
                          f"{meta['robot']['spec_hash'][:12]}")
    meta["sim2sim"] = v
    (bundle_dir / SIGNATURE_FILE).unlink(missing_ok=True)    # it signed the content replaced here
    text = dump_json(meta)
    tmp_meta = bundle_dir / f".{META_FILE}.tmp"
    write_synced(tmp_meta, text)
    new_digest = hashlib.sha256(text.encode()).hexdigest()
    write_synced(bundle_dir / PENDING_MANIFEST, manifest_text(bundle_dir, {META_FILE: new_digest}))
    os.replace(tmp_meta, bundle_dir / META_FILE)
    os.replace(bundle_dir / PENDING_MANIFEST, bundle_dir / MANIFEST_FILE)
    fsync_dir(bundle_dir)
    return v


def sign_bundle(bundle_dir: str | Path, key: str | Path) -> dict:
    """Sign the bundle's manifest and verdict as they are now (deploy/signing.py) with the private
    key `key` (a name in the key folder or a path) and write signature.json atomically. The
    manifest is checked first: only content that is what the manifest says gets signed."""
    bundle_dir = Path(bundle_dir)
    name, private = load_private(key)
    manifest = check_manifest(bundle_dir)
    meta = read_meta(bundle_dir)
    signature = make_signature(signed_content(meta, manifest), name, private)
    atomic_write_text(bundle_dir / SIGNATURE_FILE, dump_json(signature))
    return signature
