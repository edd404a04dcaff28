"""`sac2real demo` shortened for CI, as a real process with its own two processes: the mechanics
(candidates gated and promoted, the runner swapping to them, every transition's policy id, the
report files), not the learning result. It ends after the first swap (--until-swaps), with
--minutes only a cap, so a loaded machine makes it slower, not red. With the learning rates at 0
every candidate equals the
running policy, so each must pass the gate and be promoted, and the runner must tick with it."""
import json
import subprocess
import sys

from deploy.replay import ReplayReader


def test_the_short_demo_promotes_swaps_and_reports(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "demo", "--out", str(out), "--minutes", "8",
         "--until-swaps", "1", "--lr-scale", "0", "--promote-every", "150", "--prior-steps", "400",
         "--eval-episodes", "1", "--eval-s", "4", "--episode-s", "15"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.png").stat().st_size > 10_000
    promotions = report["promotions"]
    assert promotions and all(p["promoted"] for p in promotions), promotions
    promoted = {p["bundle"] for p in promotions}
    swaps = [e for e in report["swaps"] if e["event"] == "swapping"]
    assert swaps and {e["bundle"] for e in swaps} <= promoted
    # every transition names the bundle that acted; the runner ticked with a promoted one
    data = ReplayReader(out / "replay").load()
    ids = data.fields["policy_id"].astype(str)
    assert set(ids) <= promoted | {report["parent_bundle"]}
    assert set(ids) & promoted
    first_new = min(i for i, x in enumerate(ids) if x in promoted)
    assert set(ids[:first_new]) == {report["parent_bundle"]}          # the parent until the swap
    ev = report["evaluation"]
    assert set(ev) == {"nominal", "before", "after"}      # the last candidate was promoted
    assert all(len(ev[k]["per_seed"]) == 3 for k in ev)
    assert report["final_bundle"] in promoted
    assert report["timeline"]["minutes"] and len(report["episodes"]) >= 1
