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
from deploy.spec import REPO_ROOT

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
    def load(cls, robot: str, path: str | Path | None = None) -> "Calibration | None":
        """configs/sim2sim/calibration/<robot>.yaml, or None when the robot has none yet."""
        path = Path(path) if path is not None else CALIBRATION_DIR / f"{robot}.yaml"
        if not path.is_file():
            return None
        root = Section(load_yaml(path), path)
        root.allow(["robot", "alpha", "tolerances"], ["provenance"])
        if root.get("robot", str) != robot:
            raise root.error("robot", f"calibration for '{root.get('robot', str)}', not '{robot}'")
        tol = root.sub("tolerances")
        return cls(robot, path, {str(k): tol.number(k, low=0.0, high=100.0) for k in tol.data},
                   root.number("alpha", low=1e-6, high=0.2))


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
    from deploy.sim2sim.behaviour import statistic_names
    from deploy.sim2sim.compare import ALPHA
    from deploy.sim2sim.gate import run_gate
    from deploy.spec import RobotSpec

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
