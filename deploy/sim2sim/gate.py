"""The sim2sim gate: verify a bundle, run the scenario file through the Controller on MuJoCo, hold
every episode to the thresholds, write report.json and plots, and record the verdict in the
bundle (deploy.bundle.record_verdict).

Where the report goes: by default into the bundle, `<bundle>/sim2sim/<UTC time>/`, so that the
manifest rewritten by record_verdict covers it; a run with a planted fault (or `record=False`)
never touches the bundle and reports to `runs/sim2sim/<bundle id>-<UTC time>/` unless told
otherwise."""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deploy import bundle as B
from deploy.deploy_config import DeployConfig
from deploy.sim2sim.faults import Fault
from deploy.sim2sim.runner import EpisodeResult, run_episodes
from deploy.sim2sim.scenarios import DEFAULT_FILE, ScenarioFile
from deploy.spec import REPO_ROOT, RobotSpec

REPORT_NAME = "report.json"


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

    def failures(self) -> list[str]:
        if self.refused:
            return [f"bundle refused: {self.refused}"]
        return [f"{r.episode.name}: {f}" for r in self.results for f in r.failures]


def default_scenarios(robot: str) -> Path:
    """configs/sim2sim/<robot>.yaml when it exists, else configs/sim2sim/default.yaml."""
    own = DEFAULT_FILE.parent / f"{robot}.yaml"
    return own if own.is_file() else DEFAULT_FILE


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def run_gate(bundle_path: str | Path, scenarios: str | Path | None = None,
             report_dir: str | Path | None = None, faults: tuple[Fault, ...] = (),
             record: bool = True, spec: RobotSpec | None = None, plots: bool = True,
             parallel: bool = True, threads: int = 1, config: DeployConfig | None = None,
             log: Callable[[str], None] = print) -> GateResult:
    bundle_path = Path(bundle_path)
    record = record and not faults
    t0 = time.perf_counter()
    if spec is None:
        try:
            robot = B.read_meta(bundle_path)["robot"]["name"]
        except B.BundleError as exc:
            return _refused(bundle_path, exc, report_dir, faults, t0, log)
        spec = RobotSpec.load(robot)
    scen_path = Path(scenarios) if scenarios is not None else default_scenarios(spec.name)
    scenario_file = ScenarioFile.load(scen_path, spec)       # ConfigError names file and key
    try:
        bundle = B.PolicyBundle.load(bundle_path, spec, providers="cpu")
    except B.BundleError as exc:
        return _refused(bundle_path, exc, report_dir, faults, t0, log)

    inside = report_dir is None and record
    if report_dir is None:
        report_dir = (bundle_path / "sim2sim" / _stamp()) if record else \
            REPO_ROOT / "runs" / "sim2sim" / f"{bundle.id}-{_stamp()}"
    report_dir = Path(report_dir)
    if inside and report_dir.exists():
        raise FileExistsError(f"{report_dir} exists (two gate runs in the same second?)")
    labels = tuple(f.label for f in faults)
    log(f"sim2sim: {bundle.robot}/{bundle.id} on {len(scenario_file.episodes)} episodes from "
        f"{scen_path}" + (f" with planted fault(s) {', '.join(labels)}" if labels else ""))
    results = run_episodes(spec, bundle, list(scenario_file.episodes), faults, config=config,
                           parallel=parallel, threads=threads, progress=log)
    wall = time.perf_counter() - t0
    passed = all(r.passed for r in results)

    from deploy.sim2sim.report import write_report
    try:
        report = write_report(report_dir, bundle, spec, scenario_file, results, passed, labels,
                              wall, plots=plots, log=log)
        verdict = None
        if record:
            rel = report.relative_to(bundle_path) if inside else report
            verdict = B.record_verdict(bundle_path, {
                "passed": passed, "report": str(rel), "spec_hash": bundle.spec_hash,
                "onnx_sha256": bundle.onnx_sha256, "metrics": summary_metrics(results)})
    except BaseException:
        if inside:      # never leave unlisted files in a bundle: it would no longer load
            shutil.rmtree(report_dir, ignore_errors=True)
        raise
    return GateResult(passed, bundle.id, report_dir, results, wall, verdict, None, labels)


def _refused(path: Path, exc: Exception, report_dir, faults, t0, log) -> GateResult:
    log(f"sim2sim: bundle refused, not loaded: {exc}")
    return GateResult(False, path.name, Path(report_dir) if report_dir else path, [],
                      time.perf_counter() - t0, None, str(exc), tuple(f.label for f in faults))


def summary_metrics(results: list[EpisodeResult]) -> dict:
    """Worst value of each metric over the episodes, and the failed checks."""
    from deploy.sim2sim.metrics import THRESHOLDS
    worst = {}
    for name, (bound, _, _) in THRESHOLDS.items():
        values = [r.metrics.get(name) for r in results]
        values = [v for v in values if isinstance(v, float) and not math.isnan(v)]
        if values:
            worst[name] = round(max(values) if bound == "max" else min(values), 6)
    return {"episodes": len(results), "passed_episodes": sum(r.passed for r in results),
            "worst": worst,
            "failures": [f"{r.episode.name}: {f}" for r in results for f in r.failures][:50]}
