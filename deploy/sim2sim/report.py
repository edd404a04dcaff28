"""report.json and PNG plots of a sim2sim run. matplotlib is imported here only, and only when
plots are asked for (the robot computer does not need it)."""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from deploy.sim2sim.metrics import THRESHOLDS

SCHEMA = 2


def write_report(result, bundle, spec, scenario_file, plots: bool = True,
                 log: Callable[[str], None] = print) -> Path:
    """report.json (and plots) of a gate.GateResult: episodes, comparison rows with their
    intervals and effect sizes, regression rows, the reasons for a fail."""
    report_dir, results, passed = Path(result.report_dir), result.results, result.passed
    faults, wall_s = result.faults, result.wall_s
    report_dir.mkdir(parents=True, exist_ok=True)
    ticks = sum(r.ticks for r in results)
    report = {
        "schema": SCHEMA, "passed": passed, "seeds": list(result.seeds),
        "reasons": result.failures(), "notes": result.notes, "against": result.against,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": {"id": bundle.id, "path": str(bundle.path), "robot": bundle.robot,
                   "onnx_sha256": bundle.onnx_sha256, "spec_hash": bundle.spec_hash},
        "faults": list(faults), "scenarios": scenario_file.path,
        "thresholds": {name: {"bound": b, "unit": u, "meaning": m}
                       for name, (b, u, m) in THRESHOLDS.items()},
        "comparison": [r.to_dict() for r in result.comparison],
        "regression": [r.to_dict() for r in result.regression],
        "summary": {"episodes": len(results), "passed_episodes": sum(r.passed for r in results),
                    "failures": [f"{r.episode.key}: {f}" for r in results for f in r.failures],
                    "wall_s": round(wall_s, 3), "controller_ticks": ticks,
                    "ticks_per_s": round(ticks / wall_s, 1) if wall_s > 0 else None,
                    "host": platform.node()},
        "episodes": [r.summary() for r in results],
    }
    files = []
    if plots:
        try:
            files = _plots(report_dir, results, spec)
        except ModuleNotFoundError as exc:
            log(f"sim2sim: no plots ({exc.name} is not installed)")
    report["plots"] = [p.name for p in files]
    path = report_dir / "report.json"
    path.write_text(json.dumps(report, indent=1, default=_jsonable) + "\n")
    flagged = sum(r.flagged for r in result.comparison + result.regression)
    log(f"sim2sim: {'PASSED' if passed else 'FAILED'} ({report['summary']['passed_episodes']}/"
        f"{len(results)} episodes, {flagged} behaviour flags) in {wall_s:.1f} s; report {path}")
    return path


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and math.isnan(x):
        return None
    return str(x)


def _plots(report_dir: Path, results, spec) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    n = len(results)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False,
                             sharex=False)
    for ax, r in zip(axes.flat, results):
        a = r.arrays
        if len(a.get("t", [])) == 0:
            ax.set_title(f"{r.episode.key}: {r.end_reason}", fontsize=8)
            continue
        t = a["t"] - a["t"][0]
        for k, (label, color) in enumerate((("vx", "C0"), ("vy", "C1"), ("wz", "C2"))):
            meas = a["lin_vel"][:, k] if k < 2 else a["ang_vel"][:, 2]
            ax.plot(t, a["command"][:, k], color=color, lw=1.0, ls="--")
            ax.plot(t, meas, color=color, lw=0.8, label=label)
        mark = "pass" if r.passed else "FAIL"
        ax.set_title(f"{r.episode.key} [{mark}]", fontsize=8,
                     color="black" if r.passed else "red")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper right")
    out.append(_save(fig, "velocity tracking: command (dashed) vs ground truth, policy time (s)",
                     report_dir / "tracking.png"))

    names = [k for k in ("lin_vel_error", "ang_vel_error", "action_rate", "action_accel",
                         "pd_error", "torque_saturation", "joint_limit_margin", "base_height")]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6), squeeze=False)
    labels = [r.episode.key for r in results]
    for ax, name in zip(axes.flat, names):
        vals = [r.metrics.get(name, float("nan")) for r in results]
        colors = ["C0" if r.passed else "C3" for r in results]
        ax.bar(range(n), [0 if math.isnan(v) else v for v in vals], color=colors)
        limits = {r.episode.thresholds.get(name) for r in results} - {None}
        for lim in limits:
            ax.axhline(lim, color="k", ls="--", lw=0.8)
        ax.set_title(f"{name} ({THRESHOLDS[name][1] or '-'})", fontsize=9)
        ax.set_xticks(range(n))
        ax.set_xticklabels(labels, rotation=70, fontsize=6, ha="right")
        ax.tick_params(axis="y", labelsize=7)
    out.append(_save(fig, "per-episode metrics (red: episode failed; dashed: threshold)",
                     report_dir / "metrics.png"))
    return out


def _save(fig, title: str, path: Path) -> Path:
    """Closed once written, so that a gate of many scenarios does not keep every figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
