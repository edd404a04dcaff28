"""The fine-tuner's promotion loop: a checkpoint becomes a bundle in the robot's registry, the
sim2sim gate judges it (its own safety limits and behaviour, and the regression comparison
against the bundle the robot runs now), and only a bundle that passed becomes the robot's
`current`, which a running Controller follows (deploy/follow.py). A refused candidate stays in the
registry with its gate report and the reasons, and the robot keeps what it runs.

Every decision is one JSON line in `<out>/promotions.jsonl`: what `sac2real demo` reports and
what a person reads to know why the robot still runs an older policy."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from deploy.event_log import append_event
from deploy.registry import PolicyRegistry


class Promoter:
    def __init__(self, robot: str, out: str | Path, registry: PolicyRegistry | None = None,
                 seeds: Sequence[int] = (0, 1, 2), scenarios: str | Path | None = None,
                 sign_key: str | Path | None = None, parity_samples: int = 1000,
                 log: Callable[[str], None] = print):
        self.robot, self.registry = robot, registry or PolicyRegistry()
        self.log_path = Path(out) / "promotions.jsonl"
        self.seeds, self.scenarios, self.sign_key = tuple(seeds), scenarios, sign_key
        self.parity_samples, self.log = parity_samples, log

    def __call__(self, checkpoint: Path, updates: int) -> dict:
        """Export, gate and (if it passed) promote one checkpoint; the decision as a dict."""
        from deploy.bundle import BundleError
        from deploy.sim2sim.gate import run_gate
        from training.checkpoint import CheckpointError
        from training.export import ExportError, export_checkpoint

        t0 = time.monotonic()
        running = self.registry.current(self.robot)
        try:
            bundle = export_checkpoint(checkpoint, self.registry.root,
                                       parity_samples=self.parity_samples, log=lambda _line: None)
        except (ExportError, BundleError, CheckpointError) as exc:   # the robot keeps its policy
            event = {"time": time.time(), "updates": updates, "checkpoint": str(checkpoint),
                     "bundle": None, "against": running.name if running else None,
                     "passed": False, "promoted": False, "reasons": [f"export refused: {exc}"]}
            append_event(self.log_path, event)
            self.log(f"promotion: {checkpoint} not exported: {exc}")
            return event
        t_export = time.monotonic() - t0
        result = run_gate(bundle, scenarios=self.scenarios, seeds=self.seeds, against=running,
                          plots=False, sign_key=self.sign_key, log=lambda _line: None)
        event = {"time": time.time(), "updates": updates, "checkpoint": str(checkpoint),
                 "bundle": bundle.name, "against": running.name if running else None,
                 "passed": result.passed, "promoted": False,
                 "reasons": result.failures()[:12], "report": str(result.report_dir),
                 "export_s": round(t_export, 2), "gate_s": round(result.wall_s, 2)}
        if result.passed:
            self.registry.promote(bundle.name)
            event["promoted"] = True
        event["total_s"] = round(time.monotonic() - t0, 2)
        append_event(self.log_path, event)
        verdict = "promoted" if event["promoted"] else "refused: " + "; ".join(event["reasons"][:3])
        self.log(f"promotion: {bundle.name} after {updates} updates {verdict} "
                 f"(export {t_export:.1f} s, gate {result.wall_s:.1f} s)")
        return event
