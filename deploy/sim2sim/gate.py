"""The sim2sim gate: verify a bundle, run the scenario file through the Controller on MuJoCo under
several seeds, hold every episode to the file's absolute (safety) thresholds, compare the
deployment path's behaviour with the reference rollout of the same bundle (reference.py) pair by
pair with confidence (compare.py, tolerances from calibration.py), optionally hold a fine-tuned
candidate to the bundle the robot runs now (`against`), write report.json and plots, and record
the verdict in the bundle (deploy.bundle.record_verdict).

A verdict is a function of the bundle(s), the scenario file, the calibration and the seed set:
every draw (sensor noise, start jitter, headings, the reference's observation noise) comes from
the episode seeds, so the same seed set gives the same verdict.

Where the report goes: by default into the bundle, `<bundle>/sim2sim/<UTC time>/`, so that the
manifest rewritten by record_verdict covers it; a run with a planted fault (or `record=False`)
never touches the bundle and reports to `runs/sim2sim/<bundle id>-<UTC time>/` unless told
otherwise. A recorded verdict refers only to files inside the bundle: a report written elsewhere
(`--report DIR`) has its report.json copied into `<bundle>/sim2sim/<UTC time>/`.

Signing: with `sign_key` (a private key's name or path; deploy/signing.py) the gate signs the
bundle's manifest and the verdict it recorded. Without one the verdict is recorded unsigned, and
hardware backends refuse the bundle until someone signs it (`sac2real models sign`)."""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from deploy import bundle as B
from deploy import signing
from deploy.deploy_config import DeployConfig
from deploy.sim2sim.behaviour import episode_statistics, statistic_names
from deploy.sim2sim.calibration import Calibration
from deploy.sim2sim.compare import ALPHA, Row, paired
from deploy.sim2sim.faults import Fault
from deploy.sim2sim.reference import reference_rollout
from deploy.sim2sim.runner import EpisodeResult, run_episodes
from deploy.sim2sim.scenarios import DEFAULT_FILE, DEFAULT_SEEDS, ScenarioFile, reseeded
from deploy.spec import REPO_ROOT, RobotSpec

REPORT_NAME = "report.json"
MIN_RECORDED_SEEDS = 3
# regression: the statistics a fine-tuned candidate may not be worse in (+1: larger is worse)
# (falls are not among them: a candidate that falls at all fails the absolute limit)
WORSE = {"lin_vel_error": 1, "ang_vel_error": 1, "ang_vel_xy": 1, "target_rate": 1}


@dataclass
class GateResult:
    passed: bool
    bundle_id: str
    report_dir: Path
    results: list[EpisodeResult]
    wall_s: float
    verdict: dict | None           # as recorded in the bundle, None when not recorded
    refused: str | None = None     # the bundle failed verification and was never loaded
    faults: tuple[str, ...] = ()
    signed_by: str | None = None   # the key that signed the recorded verdict
    seeds: tuple[int, ...] = ()
    comparison: list[Row] = field(default_factory=list)    # deployment vs reference
    regression: list[Row] = field(default_factory=list)    # candidate vs `against`
    notes: list[str] = field(default_factory=list)
    onnx_sha256: str = ""
    scenarios: str = ""
    against: str | None = None

    def failures(self) -> list[str]:
        """Why the verdict is a fail (empty: it passed): safety limits, behaviour, regression."""
        if self.refused:
            return [f"bundle refused: {self.refused}"]
        return ([f"{r.episode.key}: {f}" for r in self.results for f in r.failures]
                + [f"behaviour differs from the reference: {r.reason('deployment - reference')}"
                   for r in self.comparison if r.flagged]
                + [f"worse than {self.against}: {r.reason('candidate - running')}"
                   for r in self.regression if r.flagged])

    def to_dict(self) -> dict:
        """The verdict as the fine-tuning loop reads it."""
        return {"passed": self.passed, "bundle": self.bundle_id, "onnx_sha256": self.onnx_sha256,
                "against": self.against, "seeds": list(self.seeds), "faults": list(self.faults),
                "reasons": self.failures(), "notes": self.notes,
                "episodes": len(self.results),
                "episodes_failed": sum(not r.passed for r in self.results),
                "comparison": [r.to_dict() for r in self.comparison],
                "regression": [r.to_dict() for r in self.regression],
                "report": str(self.report_dir), "wall_s": round(self.wall_s, 2)}


def default_scenarios(spec: RobotSpec) -> Path:
    """configs/sim2sim/<robot>.yaml when it exists (a variant's own, else its family's), else
    configs/sim2sim/default.yaml."""
    own = spec.settings_file(DEFAULT_FILE.parent)
    return own if own.is_file() else DEFAULT_FILE


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _new_folder(parent: Path) -> Path:
    """parent/<UTC time>, with -1, -2, ... added when a run in the same second took that name."""
    stamp = _stamp()
    return next(parent / name for name in (stamp, *(f"{stamp}-{n}" for n in range(1, 1000)))
                if not (parent / name).exists())


def run_gate(bundle_path: str | Path, scenarios: str | Path | None = None,
             report_dir: str | Path | None = None, faults: tuple[Fault, ...] = (),
             record: bool = True, spec: RobotSpec | None = None, plots: bool = True,
             parallel: bool = True, threads: int = 1, config: DeployConfig | None = None,
             log: Callable[[str], None] = print, sign_key: str | Path | None = None,
             seeds: Sequence[int] = DEFAULT_SEEDS, against: str | Path | None = None,
             tolerances: dict[str, float] | None = None) -> GateResult:
    """Gate `bundle_path` (GateResult.to_dict() is the verdict as a dict). `seeds`: the gate's
    seeds (3 or more for a verdict that is recorded); `against`: the bundle the robot runs now, a
    candidate worse than it with confidence fails; `tolerances`: instead of the robot's
    calibration file (calibrate.py)."""
    bundle_path = Path(bundle_path)
    record = record and not faults
    seeds = tuple(int(x) for x in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    if record and len(seeds) < MIN_RECORDED_SEEDS:
        raise ValueError(f"a recorded verdict needs {MIN_RECORDED_SEEDS} seeds or more (one seed "
                         f"makes a marginal policy's verdict a coin flip), got {list(seeds)}")
    if record and sign_key is not None:
        signing.load_private(sign_key)      # a bad key fails now, not after the episodes
    t0 = time.perf_counter()
    if spec is None:
        try:
            robot = B.read_meta(bundle_path)["robot"]["name"]
        except B.BundleError as exc:
            return _refused(bundle_path, exc, report_dir, faults, t0, log)
        spec = RobotSpec.load(robot)
    scen_path = Path(scenarios) if scenarios is not None else default_scenarios(spec)
    scenario_file = ScenarioFile.load(scen_path, spec)       # ConfigError names file and key
    calibration = Calibration.load(spec) if tolerances is None else None
    try:
        bundle = B.PolicyBundle.load(bundle_path, spec, providers="cpu")
        running = None if against is None else B.PolicyBundle.load(Path(against), spec, providers="cpu")
    except B.BundleError as exc:
        return _refused(bundle_path, exc, report_dir, faults, t0, log)

    inside = report_dir is None and record
    if report_dir is None:
        report_dir = _new_folder(bundle_path / "sim2sim") if record else \
            REPO_ROOT / "runs" / "sim2sim" / f"{bundle.id}-{_stamp()}"
    report_dir = Path(report_dir)
    labels = tuple(f.label for f in faults)
    episodes = [reseeded(e, s) for s in seeds for e in scenario_file.episodes]
    log(f"sim2sim: {bundle.robot}/{bundle.id} on {len(episodes)} episodes ({len(seeds)} seeds) "
        f"from {scen_path}" + (f" with planted fault(s) {', '.join(labels)}" if labels else "")
        + (f" against {running.id}" if running else ""))
    config = config or DeployConfig.load(spec)
    results = run_episodes(spec, bundle, episodes, faults, config=config,
                           parallel=parallel, threads=threads, progress=log)
    result = GateResult(False, bundle.id, report_dir, results, 0.0, None, None, labels,
                        seeds=seeds, onnx_sha256=bundle.onnx_sha256, scenarios=str(scen_path),
                        against=running.id if running else None)
    _behaviour(result, spec, bundle, running, episodes, config,
               tolerances if tolerances is not None else calibration, parallel, threads, log)
    result.wall_s = time.perf_counter() - t0
    result.passed = not result.failures()
    return _finish(result, bundle_path, bundle, spec, scenario_file, record, inside, plots,
                   sign_key, log)


def _behaviour(result: GateResult, spec, bundle, running, episodes, config,
               tolerances: dict | Calibration | None, parallel: bool, threads: int, log) -> None:
    """Comparison with the reference and, with a running bundle, regression, into `result`."""
    tol = tolerances.tolerances if isinstance(tolerances, Calibration) else (tolerances or {})
    alpha = tolerances.alpha if isinstance(tolerances, Calibration) else ALPHA
    if not tol:
        result.notes.append(f"no calibration for {spec.name} (configs/sim2sim/calibration/"
                            f"{spec.name}.yaml): behaviour not compared; run `sac2real sim2sim "
                            f"calibrate --robot {spec.name}`")
        return
    result.comparison = _compare(spec, bundle, result.results, config, tol, alpha, threads,
                                 result.notes)
    if running is not None:
        theirs = run_episodes(spec, running, episodes, config=config, parallel=parallel,
                              threads=threads, progress=log)
        result.regression = _regression(spec, result.results, theirs, config, tol, alpha)


def _stats(spec: RobotSpec, results: list[EpisodeResult], config: DeployConfig) -> np.ndarray:
    blend = config.controller.blend_in_s
    return np.array([episode_statistics(r.arrays, r.episode, spec, blend) for r in results])


def _compare(spec, bundle, results, config, tol, alpha, threads, notes) -> list[Row]:
    """Deployment vs reference over the episodes the training env can reproduce."""
    mine = [r for r in results if r.episode.training_like]
    if not mine:
        notes.append("no episode without latency at the training noise level: nothing compared")
        return []
    ref = reference_rollout(spec, bundle, [r.episode for r in mine], threads=threads)
    fell = [r.episode.key for r, a in zip(mine, ref) if a["fell"]]
    if fell:
        notes.append(f"the reference rollout (the bundle where it was trained) fell in {fell}")
    blend = config.controller.blend_in_s
    theirs = np.array([episode_statistics(a, r.episode, spec, blend) for r, a in zip(mine, ref)])
    return paired(statistic_names(spec), _stats(spec, mine, config), theirs, tol, alpha)


def _regression(spec, mine, theirs, config, tol, alpha) -> list[Row]:
    """Candidate vs the running bundle, same episodes and seeds, every scenario."""
    return paired(statistic_names(spec), _stats(spec, mine, config), _stats(spec, theirs, config),
                  tol, alpha, worse=WORSE)


def _finish(result: GateResult, bundle_path: Path, bundle, spec, scenario_file, record: bool,
            inside: bool, plots: bool, sign_key, log) -> GateResult:
    """Write the report and, when recording, the verdict (and signature) into the bundle."""
    from deploy.sim2sim.report import write_report
    added = result.report_dir if inside else None
    try:
        report = write_report(result, bundle, spec, scenario_file, plots=plots, log=log)
        if record:
            if not inside:
                report = added = _copy_into(bundle_path, report)
            result.verdict = B.record_verdict(bundle_path, {
                "passed": result.passed, "report": report.relative_to(bundle_path).as_posix(),
                "spec_hash": bundle.spec_hash, "onnx_sha256": bundle.onnx_sha256,
                "metrics": summary_metrics(result)})
            added = None        # listed in the manifest now: it stays
            result.signed_by = _sign(bundle_path, sign_key, log)
    except BaseException:
        if added is not None:   # never leave unlisted files in a bundle: it would no longer load
            shutil.rmtree(added, ignore_errors=True)
        raise
    return result


def _copy_into(bundle_path: Path, report: Path) -> Path:
    """report.json copied to <bundle>/sim2sim/<UTC time>/, where the verdict may refer to it."""
    folder = _new_folder(bundle_path / "sim2sim")
    folder.mkdir(parents=True)
    return Path(shutil.copy2(report, folder / REPORT_NAME))


def _sign(bundle_path: Path, sign_key: str | Path | None, log: Callable[[str], None]) -> str | None:
    if sign_key is None:
        log("sim2sim: verdict recorded UNSIGNED (no --sign-key): hardware backends refuse this "
            "bundle until it is signed by a key they trust (sac2real models sign ID --key NAME)")
        return None
    sig = B.sign_bundle(bundle_path, sign_key)
    log(f"sim2sim: signed by key '{sig['key']['name']}' (id {sig['key']['id']})")
    return sig["key"]["name"]


def _refused(path: Path, exc: Exception, report_dir, faults, t0, log) -> GateResult:
    log(f"sim2sim: bundle refused, not loaded: {exc}")
    return GateResult(False, path.name, Path(report_dir) if report_dir else path, [],
                      time.perf_counter() - t0, None, str(exc), tuple(f.label for f in faults))


def summary_metrics(result: GateResult) -> dict:
    """Worst value of each metric over the episodes, the seeds, the largest behaviour effects,
    and the reasons for a fail."""
    from deploy.sim2sim.metrics import THRESHOLDS
    results = result.results
    worst = {}
    for name, (bound, _, _) in THRESHOLDS.items():
        values = [r.metrics.get(name) for r in results]
        values = [v for v in values if isinstance(v, float) and not math.isnan(v)]
        if values:
            worst[name] = round(max(values) if bound == "max" else min(values), 6)
    rows = sorted(result.comparison, key=lambda r: -abs(r.effect) if np.isfinite(r.effect) else 0)
    return {"episodes": len(results), "passed_episodes": sum(r.passed for r in results),
            "seeds": list(result.seeds), "worst": worst,
            "largest_effects": {r.statistic: round(r.effect, 3) for r in rows[:5]},
            "failures": result.failures()[:50]}
