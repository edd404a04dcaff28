"""Per-robot calibration of the gate's tolerances, derived from good bundles instead of typed in
(`sac2real sim2sim calibrate [BUNDLE ...] --robot go2` -> configs/sim2sim/calibration/go2.yaml).

For each good bundle, the deployment path and the reference rollout run the robot's scenario
file over the calibration seeds (disjoint from the gate's default seeds, so a gate run is out of
sample), and compare.paired gives, per statistic, the mean paired difference m_b and its
standard error se_b. What a correct deployment may differ from its reference by (tolerance) is

    MARGIN x max_b |m_b| + max_b se_b

the largest systematic difference seen on a good bundle, doubled, plus one standard error so that
a bias estimated near zero by chance does not make a tolerance of zero. The gate's own interval
(compare.py) then takes care of its noise: it fails a statistic only when the whole interval lies
beyond the tolerance. The file records where every number
came from: bundles (id, onnx sha256), seeds, scenario file, alpha, margin, code command, date,
and each bundle's own interval ends."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from deploy.config import Section, load_yaml
from deploy.sim2sim.behaviour import statistic_names
from deploy.spec import REPO_ROOT, RobotSpec

CALIBRATION_DIR = REPO_ROOT / "configs" / "sim2sim" / "calibration"
CALIBRATION_SEEDS = (100, 101, 102, 103, 104)
MARGIN = 2.0
FLOOR = 1e-4            # a statistic both paths hold exactly (a clamp at a joint limit)


@dataclass(frozen=True)
class Calibration:
    robot: str
    path: Path
    tolerances: dict[str, float]
    alpha: float

    @classmethod
    def load(cls, spec: RobotSpec, path: str | Path | None = None) -> "Calibration | None":
        """configs/sim2sim/calibration/<robot>.yaml, or None when the robot has none yet. Its
        tolerances name every behaviour statistic of this spec and nothing else: the comparison
        tests only statistics that have a tolerance, so a deleted or misspelled key would
        silently switch that check off."""
        path = Path(path) if path is not None else spec.settings_file(CALIBRATION_DIR)
        if not path.is_file():
            return None
        root = Section(load_yaml(path), path)
        root.allow(["robot", "alpha", "tolerances"], ["provenance"])
        if root.get("robot", str) not in (spec.name, spec.family):
            raise root.error("robot", f"calibration for '{root.get('robot', str)}', not '{spec.name}'"
                             + (f" or its family '{spec.family}'" if spec.family != spec.name else ""))
        tol = root.sub("tolerances")
        names = statistic_names(spec)
        tol.allow(names)
        if "provenance" in root.data:
            _check_provenance(root.sub("provenance"), names)
        return cls(spec.name, path, {name: tol.number(name, low=0.0, high=100.0) for name in names},
                   root.number("alpha", low=1e-6, high=0.2))


def _check_provenance(prov: Section, names: list[str]) -> None:
    """The record of where the tolerances came from is read as strictly as they are: people and
    reviews trust it, and a garbled one is a wrong one."""
    prov.allow(["bundles", "seeds", "scenarios", "command", "created", "margin", "floor",
                "mean_and_se"])
    ids = []
    for bundle in prov.items("bundles"):
        bundle.allow(["id", "onnx_sha256"])
        ids.append(bundle.get("id", str))
        bundle.get("onnx_sha256", str)
    prov.vector("seeds", low=0, high=2 ** 31 - 1, what="seeds (integers >= 0)")
    if not all(isinstance(seed, int) for seed in prov.data["seeds"]):
        raise prov.error("seeds", f"{prov.data['seeds']} are not all integers (seeds are integers >= 0)")
    for key in ("scenarios", "command", "created"):
        prov.get(key, str)
    prov.number("margin", low=0.0, high=100.0, open_low=True)
    prov.number("floor", low=0.0, high=1.0)
    per_bundle = prov.sub("mean_and_se")
    per_bundle.allow(ids)
    for bundle_id in ids:
        rows = per_bundle.sub(bundle_id)
        rows.allow([], names)
        for name in rows.data:
            if rows.vector(name, 2, low=-100.0, high=100.0, what="[mean difference, standard error]")[1] < 0:
                raise rows.error(name, "the standard error (second number) is negative")


def derive(per_bundle: dict[str, list], margin: float = MARGIN) -> dict[str, float]:
    """Tolerance per statistic from each bundle's compare.Row list (run at tolerance 0)."""
    bias: dict[str, float] = {}
    se: dict[str, float] = {}
    for rows in per_bundle.values():
        for r in rows:
            if math.isfinite(r.diff) and math.isfinite(r.se):
                bias[r.statistic] = max(bias.get(r.statistic, 0.0), abs(r.diff))
                se[r.statistic] = max(se.get(r.statistic, 0.0), r.se)
    return {k: round(max(FLOOR, margin * bias[k] + se[k]), 6) for k in bias}


def write(robot: str, tolerances: dict[str, float], per_bundle: dict[str, list], alpha: float,
          provenance: dict, path: str | Path | None = None) -> Path:
    path = Path(path) if path is not None else CALIBRATION_DIR / f"{robot}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"robot": robot, "alpha": alpha, "tolerances": tolerances,
            "provenance": {**provenance, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "margin": MARGIN, "floor": FLOOR,
                           "mean_and_se": {b: {r.statistic: [round(r.diff, 6), round(r.se, 6)]
                                               for r in rows if math.isfinite(r.diff)}
                                           for b, rows in per_bundle.items()}}}
    head = ("# Written by `sac2real sim2sim calibrate` (deploy/sim2sim/calibration.py); do not edit by\n"
            "# hand: re-run it with good bundles. tolerances: what the deployment path may differ from\n"
            "# the reference rollout by, per behaviour statistic (deploy/sim2sim/behaviour.py).\n")
    path.write_text(head + yaml.safe_dump(data, sort_keys=False, width=100))
    return path


def calibrate(robot: str, bundles: list[Path], seeds=CALIBRATION_SEEDS, scenarios=None,
              out: str | Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Run every bundle through the gate (no tolerances, nothing recorded) and write the file."""
    from deploy.sim2sim.compare import ALPHA
    from deploy.sim2sim.gate import run_gate

    spec = RobotSpec.load(robot)
    zero = {name: 0.0 for name in statistic_names(spec)}
    per_bundle, ids = {}, []
    scen = None
    for b in bundles:
        r = run_gate(b, scenarios, record=False, plots=False, seeds=tuple(seeds), spec=spec,
                     tolerances=zero, log=log, report_dir=_scratch())
        if r.refused or not all(x.passed for x in r.results):
            raise ValueError(f"{b}: not a good bundle for calibration: {r.failures()[:3]}")
        per_bundle[r.bundle_id] = r.comparison
        ids.append({"id": r.bundle_id, "onnx_sha256": r.onnx_sha256})
        scen = r.scenarios
        log(f"calibrate: {r.bundle_id}: {len(r.comparison)} statistics, {r.wall_s:.1f} s")
    tol = derive(per_bundle)
    unmeasured = [name for name in zero if name not in tol]
    if unmeasured:
        raise ValueError(f"no bundle measured {', '.join(unmeasured)} on {_relative(scen)}: a "
                         f"calibration must give every statistic a tolerance; use scenarios that "
                         f"exercise it")
    prov = {"bundles": ids, "seeds": list(seeds), "scenarios": _relative(scen),
            "command": "sac2real sim2sim calibrate " +
                       " ".join(str(_relative(b)) for b in bundles) + f" --robot {robot}"}
    return write(robot, tol, per_bundle, ALPHA, prov, out)


def _relative(p) -> str:
    p = Path(p).resolve()
    return p.relative_to(REPO_ROOT).as_posix() if p.is_relative_to(REPO_ROOT) else str(p)


def _scratch() -> Path:
    import tempfile
    return Path(tempfile.mkdtemp(prefix="sim2sim-calibrate-"))
