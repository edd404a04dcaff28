"""The sim2sim gate: verify a bundle, run the scenario file through the Controller on MuJoCo, hold
every episode to the thresholds, write report.json and plots, and record the verdict in the
bundle (deploy.bundle.record_verdict).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deploy import bundle as B
from deploy import signing
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
    signed_by: str | None = None   # the key that signed the recorded verdict

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


def _new_folder(parent: Path) -> Path:
    """parent/<UTC time>, with -1, -2, ... added when a run in the same second took that name."""
    stamp = _stamp()
    return next(parent / name for name in (stamp, *(f"{stamp}-{n}" for n in range(1, 1000)))
                if not (parent / name).exists())


def run_gate(bundle_path: str | Path, scenarios: str | Path | None = None,
             report_dir: str | Path | None = None, faults: tuple[Fault, ...] = (),
             record: bool = True, spec: RobotSpec | None = None, plots: bool = True,
             parallel: bool = True, threads: int = 1, config: DeployConfig | None = None,
             log: Callable[[str], None] = print, sign_key: str | Path | None = None) -> GateResult:
    bundle_path = Path(bundle_path)
    record = record and not faults
    if record and sign_key is not None:
        signing.load_private(sign_key)      # a bad key fails now, not after the episodes
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
        report_dir = _new_folder(bundle_path / "sim2sim") if record else \
            REPO_ROOT / "runs" / "sim2sim" / f"{bundle.id}-{_stamp()}"
    report_dir = Path(report_dir)
    labels = tuple(f.label for f in faults)
    log(f"sim2sim: {bundle.robot}/{bundle.id} on {len(scenario_file.episodes)} episodes from "
        f"{scen_path}" + (f" with planted fault(s) {', '.join(labels)}" if labels else ""))
    results = run_episodes(spec, bundle, list(scenario_file.episodes), faults, config=config,
                           parallel=parallel, threads=threads, progress=log)
    wall = time.perf_counter() - t0
    passed = all(r.passed for r in results)

    from deploy.sim2sim.report import write_report
    added = report_dir if inside else None
    signed_by = None
    try:
        report = write_report(report_dir, bundle, spec, scenario_file, results, passed, labels,
                              wall, plots=plots, log=log)
        verdict = None
        if record:
            if not inside:
                report = added = _copy_into(bundle_path, report)
            verdict = B.record_verdict(bundle_path, {
                "passed": passed, "report": report.relative_to(bundle_path).as_posix(),
                "spec_hash": bundle.spec_hash, "onnx_sha256": bundle.onnx_sha256,
                "metrics": summary_metrics(results)})
            added = None        # listed in the manifest now: it stays
            signed_by = _sign(bundle_path, sign_key, log)
    except BaseException:
        if added is not None:   # never leave unlisted files in a bundle: it would no longer load
            shutil.rmtree(added, ignore_errors=True)
        raise
    return GateResult(passed, bundle.id, report_dir, results, wall, verdict, None, labels, signed_by)


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
