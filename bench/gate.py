"""The sim2sim gate's run time per verdict and its power over seed sets (one JSON object).

    python bench/gate.py [--bundle PATH] [--sets N] [--per-verdict N] [--faults F1 F2 ...]
                         [--clean B1 B2 ...]

Every verdict uses --per-verdict seeds n (default: as many as the gate's default seed set); set k
uses seeds k*n .. k*n + n - 1. For each
planted fault (default: the robot's power.standard_faults) and each of N seed sets, the verdict on the bundle
with that fault; for each clean bundle (default: the one under test), its verdicts on the same
sets. Reported: rejections per fault, false rejections per clean bundle, the flags that decided,
and wall seconds per verdict (mean, min, max) on this machine. Nothing is recorded in a bundle."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.bundle import read_meta  # noqa: E402
from deploy.sim2sim.faults import parse_fault  # noqa: E402
from deploy.sim2sim.gate import run_gate  # noqa: E402
from deploy.sim2sim.power import gate_bundle, standard_faults  # noqa: E402
from deploy.sim2sim.scenarios import DEFAULT_SEEDS  # noqa: E402
from deploy.spec import RobotSpec  # noqa: E402


def verdict(bundle: Path, spec: RobotSpec, fault: str | None, seeds: tuple[int, ...]) -> dict:
    planted = () if fault is None else (parse_fault(fault, spec),)
    t0 = time.perf_counter()
    r = run_gate(bundle, record=False, plots=False, faults=planted, spec=spec, seeds=seeds,
                 log=lambda m: None, report_dir=tempfile.mkdtemp(prefix="bench-gate-"))
    wall = time.perf_counter() - t0
    return {"seeds": list(seeds), "passed": r.passed, "wall_s": round(wall, 2),
            "episodes_failed": sum(not x.passed for x in r.results),
            "flags": [x.statistic for x in r.comparison if x.flagged], "first": r.failures()[:1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle under test (default: registry current go2)")
    ap.add_argument("--sets", type=int, default=1, help="seed sets per fault (default 1)")
    ap.add_argument("--per-verdict", type=int, default=len(DEFAULT_SEEDS), help="seeds per verdict")
    ap.add_argument("--faults", nargs="*", default=None, help="default: the robot's standard faults")
    ap.add_argument("--clean", nargs="*", default=None,
                    help="clean bundles (default: --bundle; none when given without a value)")
    args = ap.parse_args()
    bundle = Path(args.bundle) if args.bundle else gate_bundle()[0]
    spec = RobotSpec.load(read_meta(bundle)["robot"]["name"])
    n = args.per_verdict
    sets = [tuple(range(n * k, n * k + n)) for k in range(args.sets)]
    walls: list[float] = []
    clean, faults = {}, {}
    for b in [Path(x) for x in ([bundle] if args.clean is None else args.clean)]:
        runs = [verdict(b, spec, None, s) for s in sets]
        walls += [r["wall_s"] for r in runs]
        clean[b.name] = {"false_rejections": sum(not r["passed"] for r in runs), "runs": runs}
        print(f"clean {b.name}: {clean[b.name]['false_rejections']}/{len(runs)} rejected", file=sys.stderr)
    for f in standard_faults(spec) if args.faults is None else args.faults:
        runs = [verdict(bundle, spec, f, s) for s in sets]
        walls += [r["wall_s"] for r in runs]
        faults[f] = {"rejected": sum(not r["passed"] for r in runs), "of": len(runs), "runs": runs}
        print(f"{f}: {faults[f]['rejected']}/{len(runs)} rejected", file=sys.stderr)
    print(json.dumps({
        "bench": "gate", "bundle": bundle.name, "seeds_per_verdict": n, "seed_sets": len(sets),
        "seconds_per_verdict": {"mean": round(statistics.mean(walls), 2), "min": min(walls),
                                "max": max(walls), "n": len(walls)},
        "clean": clean, "faults": faults,
        "host": {"node": platform.node(), "cpus": os.cpu_count(),
                 "load_1min": round(os.getloadavg()[0], 2)}}))


if __name__ == "__main__":
    main()
