"""Long fuzz run over every entry point in bench/fuzzing (one module each, found by name, so a new
module needs no edit here). Prints ONE JSON object: per module its tally (tried / refused / handled
/ silently_accepted / crashed, with up to ten examples of the last two) and the seconds it took,
and the totals; progress lines go to stderr. Exits 1 when anything was silently accepted or
crashed, or a module failed to run.

    python3 bench/fuzz.py [--n 2000] [--seed 0] [--only configs replay ...]
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FUZZING = REPO / "bench" / "fuzzing"
NOT_ENTRY_POINTS = {"tally"}


def modules() -> list[str]:
    """Names of the fuzz modules in bench/fuzzing (each has `fuzz(n, seed) -> Tally`)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(FUZZING)])
                  if m.name not in NOT_ENTRY_POINTS and not m.name.startswith("_"))


def run(name: str, n: int, seed: int) -> dict:
    t0 = time.perf_counter()
    try:
        tally = importlib.import_module(f"bench.fuzzing.{name}").fuzz(n, seed)
        out = tally.as_dict()
    except Exception:       # a module that cannot run is a finding; the others still run
        out = {"error": traceback.format_exc(limit=5)}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def main() -> int:
    known = modules()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="inputs per module (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="+", metavar="MODULE", choices=known,
                    help=f"run only these modules (of: {', '.join(known)})")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be at least 1")
    result: dict = {"n": args.n, "seed": args.seed, "modules": {}}
    for name in args.only or known:
        print(f"fuzz {name}: {args.n} inputs, seed {args.seed} ...", file=sys.stderr, flush=True)
        r = result["modules"][name] = run(name, args.n, args.seed)
        summary = r.get("error", "").splitlines()[-1:] or [
            ", ".join(f"{k} {r[k]}" for k in ("tried", "refused", "handled", "silently_accepted",
                                             "crashed"))]
        print(f"fuzz {name}: {summary[0]} ({r['seconds']} s)", file=sys.stderr, flush=True)
    tallies = [r for r in result["modules"].values() if "error" not in r]
    result["totals"] = {k: sum(r[k] for r in tallies)
                        for k in ("tried", "refused", "handled", "silently_accepted", "crashed")}
    result["failed_modules"] = sorted(k for k, r in result["modules"].items() if "error" in r)
    print(json.dumps(result, indent=1))
    bad = result["totals"]["silently_accepted"] + result["totals"]["crashed"]
    return 1 if bad or result["failed_modules"] else 0


if __name__ == "__main__":
    sys.exit(main())
