"""Seconds from a fine-tuning checkpoint being written to the runner ticking with it, promoted:
export + gate + the follower's poll + verification + the swap at a tick boundary, against the
gate's own run time in the same run (the share of the loop the gate is).

Runs `sac2real demo` shortened with the learning rates at 0 (every candidate equals the running
policy, so each passes and is swapped in) and reads its records: the promotion's decision time
less its export and gate time is when the checkpoint was written; the first replay transition
acted by the promoted bundle is when the runner ticked with it. One JSON object on stdout.

    python3 bench/finetune_loop.py [--minutes 2] [--promote-every 150]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--promote-every", type=int, default=150)
    args = ap.parse_args()
    from deploy.replay import ReplayReader

    out = Path(tempfile.mkdtemp(prefix="finetune-loop-")) / "demo"
    mono_to_wall = time.time() - time.monotonic()
    subprocess.run([sys.executable, "-m", "deploy.cli", "demo", "--out", str(out), "--minutes",
                    str(args.minutes), "--lr-scale", "0", "--promote-every", str(args.promote_every),
                    "--prior-steps", "400", "--eval-episodes", "1", "--eval-s", "4"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    report = json.loads((out / "report.json").read_text())
    data = ReplayReader(out / "replay").load()
    ids = data.fields["policy_id"].astype(str)
    wall = data.fields["time_ns"] * 1e-9 + mono_to_wall
    rows = []
    for p in report["promotions"]:
        if not p["promoted"] or not (ids == p["bundle"]).any():
            continue
        written = p["time"] - p["total_s"]
        ticking = float(wall[np.argmax(ids == p["bundle"])])
        rows.append({"bundle": p["bundle"], "checkpoint_to_tick_s": round(ticking - written, 2),
                     "export_s": p["export_s"], "gate_s": p["gate_s"],
                     "gate_share": round(p["gate_s"] / (ticking - written), 3)})
    loop = [r["checkpoint_to_tick_s"] for r in rows]
    print(json.dumps({"bench": "finetune_loop", "promotions": rows,
                      "median_checkpoint_to_tick_s": float(np.median(loop)) if loop else None,
                      "median_gate_s": float(np.median([r["gate_s"] for r in rows])) if rows else None,
                      "ratio_loop_to_gate": round(float(np.median(
                          [r["checkpoint_to_tick_s"] / r["gate_s"] for r in rows])), 3) if rows else None}))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
