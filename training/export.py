"""Checkpoint -> policy bundle (deploy/bundle.py describes the bundle).

The exported graph is the training-time deterministic path itself, wrapped once: `DeterministicPolicy`
calls the actor's own normalizer and `deterministic()` (trunk -> mean head -> tanh -> center +
half_range * tanh), so the ONNX model cannot drift from what was trained and evaluated.

Before a bundle is published it must (1) match the PyTorch actor within 1e-5 on random
observations and on observations replayed from the run, and (2) pass the same `PolicyBundle.load`
the robot runs. It is built in a hidden folder and renamed into place, so a failed or interrupted
export leaves nothing that looks like a bundle."""
from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deploy import bundle as B
from deploy.action_map import ActionMap
from deploy.observations import ObservationPipeline
from deploy.registry import default_root
from deploy.spec import RobotSpec
from training.actor import SquashedGaussianActor
from deploy.durable import sha256_file
from training.checkpoint import CheckpointError, check_robot, load_checkpoint, resolve_checkpoint
from training.networks import EmpiricalNormalizer
from training.config import sac_config
from training.sac import SAC

OPSET = 18
PARITY_TOLERANCE = 1e-5
GOLDEN_PAIRS = 16
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


class ExportError(ValueError):
    """A checkpoint cannot become a bundle; the message says why."""


class FrozenNormalizer(nn.Module):
    """An EmpiricalNormalizer with sqrt(var + eps) evaluated once by torch in float32.

    Exporters fold `sqrt(var + eps)` into a constant their own way (observed: 1 ulp off torch's
    float32 result), which would make the ONNX model differ from training before the first matrix
    product. Evaluating it here gives the exported graph the exact numbers torch computes on every
    call; the constructor proves bitwise agreement with the live normalizer on probe inputs, so a
    change to EmpiricalNormalizer.forward cannot drift silently."""

    def __init__(self, norm: EmpiricalNormalizer):
        super().__init__()
        with torch.no_grad():
            self.register_buffer("mean", norm.mean.detach().clone().float())
            self.register_buffer("std", torch.sqrt(norm.var + norm.eps).detach().clone().float())
            probe = self.mean + self.std * torch.randn(64, len(self.mean),
                                                       generator=torch.Generator().manual_seed(0))
            if not torch.equal(self(probe), norm(probe)):
                raise ExportError("the frozen normalizer no longer reproduces "
                                  "EmpiricalNormalizer.forward bit for bit; update training/export.py")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std


class DeterministicPolicy(nn.Module):
    """obs -> normalizer -> actor.deterministic: the graph written to policy.onnx.

    It computes in the dtype of its weights and takes and returns float32. Exported in float64, the
    bundle evaluates the trained weights exactly: two float32 implementations of the same network
    (onnxruntime's and PyTorch's) sum in different orders and, scaled by a thigh's action half-range
    of about 9 rad, differ by 1e-5 or more on a trained Go2 actor; in float64 they agree to float32
    rounding of the result, at about twice the cost of a float32 MLP (tens of microseconds)."""

    def __init__(self, normalizer: nn.Module, actor: SquashedGaussianActor):
        super().__init__()
        self.normalizer = FrozenNormalizer(normalizer) if isinstance(normalizer, EmpiricalNormalizer) \
            else normalizer
        self.actor = actor

    @property
    def obs_dim(self) -> int:
        return self.actor.trunk[0].in_features

    @property
    def act_dim(self) -> int:
        return self.actor.act_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        compute = self.actor.center.dtype
        return self.actor.deterministic(self.normalizer(obs.to(compute))).to(obs.dtype)

    def obs_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the observations the normalizer has seen (0, 1 without one)."""
        if isinstance(self.normalizer, FrozenNormalizer):
            return self.normalizer.mean.double().numpy(), self.normalizer.std.double().numpy()
        return np.zeros(self.obs_dim), np.ones(self.obs_dim)

    @torch.no_grad()
    def actions(self, obs: np.ndarray, chunk: int = 4096) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        return torch.cat([self(x[i:i + chunk]) for i in range(0, len(x), chunk)]).numpy()


class ExportedGraph(nn.Module):
    """What policy.onnx computes: the deterministic action (the policy's own graph, unchanged) and,
    for exploration on the robot, the pre-squash mean (anchor included) and standard deviation from
    the same normalized observation (deploy.bundle.PolicyBundle.explore)."""

    def __init__(self, policy: DeterministicPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        actor = self.policy.actor
        mean, log_std = actor.distribution_params(self.policy.normalizer(obs.to(actor.center.dtype)))
        return (self.policy(obs), (mean + actor.anchor).to(obs.dtype), log_std.exp().to(obs.dtype))


def deterministic_policy(agent: SAC, dtype: torch.dtype = torch.float64) -> DeterministicPolicy:
    """A detached CPU copy of the agent's acting path, in eval mode, computing in `dtype`."""
    policy = DeterministicPolicy(copy.deepcopy(agent.actor_norm).float(), copy.deepcopy(agent.actor).float())
    return policy.to("cpu", dtype).eval().requires_grad_(False)


def export_onnx(policy: DeterministicPolicy, path: str | Path, opset: int = OPSET) -> Path:
    """torch.onnx.export (the torch.export-based exporter) with a dynamic batch axis, input `obs`,
    outputs `actions` and the exploration outputs `mean`, `std`, weights inside the file."""
    path = Path(path)
    example = torch.zeros(1, policy.obs_dim)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(ExportedGraph(policy), (example,), str(path), input_names=[B.INPUT_NAME],
                              output_names=[B.OUTPUT_NAME, *B.EXPLORE_OUTPUTS], opset_version=opset,
                              dynamo=True,
                              external_data=False, verbose=False,
                              dynamic_shapes={"obs": {0: torch.export.Dim("batch")}})
    finally:
        quiet.setLevel(level)
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
    if leftovers:
        raise ExportError(f"{path}: the exporter wrote external data {leftovers}; a bundle needs "
                          f"one self-contained file")
    return path


# ---- observations for parity and golden pairs --------------------------------------------------
def golden_observations(policy: DeterministicPolicy, n: int = GOLDEN_PAIRS, seed: int = 0) -> np.ndarray:
    """Zeros, the normalizer mean, draws within the normalizer's stats and two at +-3 std."""
    mean, std = policy.obs_stats()
    rng = np.random.default_rng(seed)
    rows = [np.zeros_like(mean), mean]
    rows += [mean + std * rng.standard_normal(len(mean)) for _ in range(max(0, n - 4))]
    rows += [mean + 3.0 * std * rng.choice([-1.0, 1.0], len(mean)) for _ in range(2)]
    return np.asarray(rows[:n], dtype=np.float32)


def random_observations(policy: DeterministicPolicy, n: int, seed: int = 1) -> np.ndarray:
    """Around the normalizer's stats, wide enough to saturate tanh: half N(0,1), a quarter N(0,9),
    a quarter U(-6,6) in normalized units."""
    mean, std = policy.obs_stats()
    rng = np.random.default_rng(seed)
    d = len(mean)
    a, b = n // 2, n // 4
    z = np.concatenate([rng.standard_normal((a, d)), 3.0 * rng.standard_normal((b, d)),
                        rng.uniform(-6.0, 6.0, (n - a - b, d))])
    return (mean + std * z).astype(np.float32)


def replay_observations(checkpoint: Path, limit: int) -> tuple[np.ndarray | None, str | None]:
    """The newest `limit` observations of the run's replay buffer (replay.pt beside the checkpoint,
    or in checkpoints/ beside best.pt); memory-mapped, so a large buffer is not read whole."""
    for cand in (checkpoint.parent / "replay.pt", checkpoint.parent / "checkpoints" / "replay.pt"):
        if cand.is_file():
            try:
                state = torch.load(cand, map_location="cpu", weights_only=False, mmap=True)
            except Exception:  # older files without mmap support
                state = torch.load(cand, map_location="cpu", weights_only=False)
            obs = state.get("obs") if isinstance(state, dict) else None
            if obs is None or obs.ndim != 3 or len(obs) == 0:
                return None, None
            rows = min(len(obs), -(-limit // obs.shape[1]))
            flat = obs[-rows:].reshape(-1, obs.shape[-1])[-limit:]
            return flat.float().numpy().copy(), str(cand)
    return None, None


def parity(policy: DeterministicPolicy, session, obs: np.ndarray,
           chunk: int = 4096) -> tuple[float, int, float]:
    """Largest |onnx - torch| over a set of observations, the row where it occurs, and the float32
    noise floor: the largest |torch float32 - torch float64| on the same observations (two correct
    float32 implementations can differ by about twice that)."""
    want = policy.actions(obs, chunk)
    got = np.concatenate([session.run([B.OUTPUT_NAME], {B.INPUT_NAME: obs[i:i + chunk]})[0]
                          for i in range(0, len(obs), chunk)])
    diff = np.abs(got.astype(np.float64) - want).max(axis=1)
    worst = int(diff.argmax())
    exact = copy.deepcopy(policy).double()
    with torch.no_grad():
        want64 = torch.cat([exact(torch.as_tensor(obs[i:i + chunk], dtype=torch.float64))
                            for i in range(0, len(obs), chunk)]).numpy()
    return float(diff[worst]), worst, float(np.abs(want - want64).max())


# ---- checkpoint -> agent -------------------------------------------------------------------
def load_agent(checkpoint: str | Path, spec: RobotSpec | None = None) -> tuple[dict, RobotSpec, SAC, list]:
    """(checkpoint dict, the spec it is checked against, the agent, the observation layout list)."""
    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    spec = spec if spec is not None else RobotSpec.load(ckpt["robot"]["name"])
    check_robot(ckpt, spec, path)
    model = ckpt["agent"]["model"]
    obs_dim = int(model["actor.trunk.0.weight"].shape[1])
    pipeline, layout = _pipeline_for(ckpt, spec, obs_dim)
    amap = ActionMap(spec)
    low, high = (np.asarray(ckpt["action_bounds"][k], dtype=np.float64) for k in ("low", "high"))
    for name, got, want in (("low", low, amap.low), ("high", high, amap.high)):
        if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=1e-6):
            raise ExportError(f"{path}: action bounds ({name}) in the checkpoint differ from those of "
                              f"spec '{spec.name}' ({spec.source})")
    privileged = sum(int(e["dim"]) for e in ckpt.get("privileged_layout") or ())
    agent = SAC(obs_dim, low, high, sac_config(ckpt["config"]["sac"], path, "config.sac"), privileged,
                pipeline.observed_noise)
    try:
        agent.load_state_dict(model)
    except RuntimeError as exc:
        raise ExportError(f"{path}: the agent's weights do not fit its recorded config ({exc})") from exc
    agent.eval()
    return ckpt, spec, agent, layout


def _pipeline_for(ckpt: dict, spec: RobotSpec, obs_dim: int) -> tuple[ObservationPipeline, list[dict]]:
    """The spec's pipeline (flat or rough) of the checkpoint's recorded layout and that layout; a
    backend that recorded none gets the spec pipeline whose dim fits the actor."""
    pipelines = [ObservationPipeline(spec, height_scan=rough) for rough in (False, True)]
    recorded = ckpt.get("obs_layout")
    if recorded is not None:
        for pipeline in pipelines:
            if B.layout_hash(recorded) == pipeline.layout.hash:
                break
        else:
            raise ExportError(f"the checkpoint's observation layout {[e['name'] for e in recorded]} "
                              f"is neither layout of spec '{spec.name}'")
        chosen = recorded
    else:
        fits = [p for p in pipelines if p.dim == obs_dim]
        if not fits:
            raise ExportError(f"actor input dim {obs_dim} fits no observation layout of spec "
                              f"'{spec.name}' ({[p.dim for p in pipelines]})")
        pipeline, chosen = fits[0], fits[0].layout.to_list()
    if sum(e["dim"] for e in chosen) != obs_dim:
        raise ExportError(f"observation layout dim {sum(e['dim'] for e in chosen)} != actor input "
                          f"dim {obs_dim}")
    return pipeline, chosen


# ---- the bundle ----------------------------------------------------------------------------
def bundle_meta(spec: RobotSpec, ckpt: dict, checkpoint: Path, layout: list[dict],
                golden_obs: np.ndarray, golden_actions: np.ndarray, parity_report: dict,
                created: str, bundle_id: str) -> dict:
    import onnxruntime

    amap = ActionMap(spec)
    progress = ckpt.get("progress", {})
    return {
        "format": B.BUNDLE_FORMAT,
        "id": bundle_id,
        "created": created,
        "robot": {"name": spec.name, "spec_hash": spec.hash, "spec": B.spec_hashed_content(spec)},
        "joints": spec.joint_names,
        "observation": {"dim": sum(e["dim"] for e in layout), "layout": layout,
                        "hash": B.layout_hash(layout)},
        "action": {
            "dim": spec.num_joints,
            "semantics": "joint target = default_pos + scale * action, clamped to "
                         "[soft_lower, soft_upper]; action lies in [low, high] (policy order)",
            "scale": spec.action_scale, "default_pos": spec.default_pos.tolist(),
            "low": amap.low.tolist(), "high": amap.high.tolist(),
            "soft_lower": spec.soft_lower.tolist(), "soft_upper": spec.soft_upper.tolist()},
        "timing": {"policy_dt": spec.policy_dt, "sim_dt": spec.sim_dt, "decimation": spec.decimation},
        "gains": {"kp": spec.kp.tolist(), "kd": spec.kd.tolist()},
        "onnx": {"file": B.ONNX_FILE, "input": B.INPUT_NAME, "output": B.OUTPUT_NAME,
                 "exploration_outputs": list(B.EXPLORE_OUTPUTS),
                 "opset": OPSET, "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True)",
                 "path": "obs -> (obs - mean) / sqrt(var + eps) -> trunk -> mean head -> tanh -> "
                         "center + half_range * tanh"},
        "parent": {"checkpoint": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint),
                   "format": ckpt["format"]},
        "training": {"task": ckpt.get("task"), "config": ckpt["config"], "seed": ckpt.get("seed"),
                     "iteration": int(progress.get("iteration", 0)),
                     "env_steps": int(progress.get("env_steps", 0)),
                     "updates": int(progress.get("updates", 0))},
        "parity": {**parity_report, "onnxruntime": onnxruntime.__version__},
        "golden": {"tolerance": B.GOLDEN_TOLERANCE, "obs": golden_obs.tolist(),
                   "actions": golden_actions.tolist()},
        "sim2sim": None,
    }


def export_checkpoint(checkpoint: str | Path, root: str | Path | None = None,
                      spec: RobotSpec | None = None, parity_samples: int = 10_000,
                      log=print, precision: str = "float64") -> Path:
    """Write `<root>/<robot>/<id>/` from a checkpoint and return its path. Refuses (ExportError,
    CheckpointError, BundleError) rather than publish a bundle that fails any check.
    `precision` is the graph's compute precision (input and output stay float32)."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision '{precision}' is not one of: {', '.join(PRECISIONS)}")
    path = resolve_checkpoint(checkpoint)
    ckpt, spec, agent, layout = load_agent(path, spec)
    policy = deterministic_policy(agent, PRECISIONS[precision])
    root = Path(root) if root is not None else default_root()
    robot_dir = root / spec.name
    robot_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=robot_dir))
    try:
        onnx_path = export_onnx(policy, work / B.ONNX_FILE)
        session = B.make_session(onnx_path, "cpu")
        report = {"tolerance": PARITY_TOLERANCE, "precision": precision}
        sets = [("random", random_observations(policy, parity_samples), None)]
        replayed, source = replay_observations(path, parity_samples)
        if replayed is not None:      # the policy's columns (the critic may have its own after)
            sets.append(("replayed", replayed[:, :policy.obs_dim], source))
        for name, obs, src in sets:
            worst, row, noise = parity(policy, session, obs)
            report[name] = {"count": len(obs), "max_abs_diff": worst, "float32_noise": noise,
                            **({"source": src} if src else {})}
            if not worst <= PARITY_TOLERANCE:
                raise ExportError(f"{path}: ONNX and PyTorch actions differ by {worst:.2e} "
                                  f"(> {PARITY_TOLERANCE:g}) on {name} observation {row}; PyTorch's "
                                  f"own float32 rounding error there is up to {noise:.1e}")
        if replayed is None:
            report["replayed"] = {"count": 0, "note": "no replay.pt beside the checkpoint"}
        golden = golden_observations(policy)
        onnx_sha = B.sha256_file(onnx_path)
        now = time.time()
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        bundle_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{onnx_sha[:8]}"
        meta = bundle_meta(spec, ckpt, path, layout, golden, policy.actions(golden), report,
                           created, bundle_id)
        (work / B.META_FILE).write_text(B.dump_json(meta))
        B.write_manifest(work)
        B.PolicyBundle.load(work, spec, providers="cpu")   # the robot's own check, before publishing
        final = robot_dir / bundle_id
        if final.exists():
            raise ExportError(f"{final} already exists (the same model exported in the same second)")
        os.chmod(work, 0o755)
        os.rename(work, final)
        B.fsync_dir(robot_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    obs = meta["observation"]
    checks = ", ".join(f"{k} {v['count']} max |diff| {v['max_abs_diff']:.1e}"
                       for k, v in report.items() if isinstance(v, dict) and "max_abs_diff" in v)
    log(f"exported {path} -> {final}\n  robot {spec.name} spec {spec.hash[:12]}, obs {obs['dim']} "
        f"(layout {obs['hash'][:12]}), {spec.num_joints} actions, dt {spec.policy_dt} s, env step "
        f"{meta['training']['env_steps']}\n  ONNX vs PyTorch: {checks}")
    return final


__all__ = ["DeterministicPolicy", "ExportError", "CheckpointError", "deterministic_policy",
           "export_onnx", "export_checkpoint", "load_agent", "golden_observations",
           "random_observations", "replay_observations", "parity"]
