"""`sac2real sim2sim BUNDLE [--seeds 0,1,2] [--against RUNNING] [--scenarios FILE] [--report DIR]
[--sign-key KEY] [--fault NAME[:ARGS]]... [--power]` and
`sac2real sim2sim calibrate [BUNDLE ...] --robot ROBOT` (configs/sim2sim/calibration/ROBOT.yaml
from good bundles; default: the registry's bundles of ROBOT whose recorded verdict passed).

Exit status: 0 the bundle passed (verdict recorded), 1 it failed or was refused, 2 a bad
scenario file or argument (the message names the file and the key)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from deploy.cli_types import count, seed_list
from deploy.signing import KEYS_ENV, SIGN_KEY_ENV
from deploy.sim2sim.scenarios import DEFAULT_SEEDS


def register(sub: argparse._SubParsersAction) -> None:
    from deploy.sim2sim.faults import FAULTS
    p = sub.add_parser("sim2sim", help="gate a policy bundle: scenarios through the Controller on "
                                       "MuJoCo, verdict into the bundle",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="planted faults (never recorded as a verdict):\n  " +
                       "\n  ".join(doc for _, doc in FAULTS.values()))
    p.add_argument("bundle", nargs="+", help="bundle folder, ID, ROBOT/ID or unique ID prefix in "
                                              "the registry; or `calibrate [BUNDLE ...]`")
    p.add_argument("--robot", help="with calibrate: the robot to calibrate")
    p.add_argument("--seeds", default=",".join(str(s) for s in DEFAULT_SEEDS), type=seed_list,
                   help="the gate's seeds, comma-separated (default %(default)s); a verdict is "
                        "reproducible for its seed set")
    p.add_argument("--against", metavar="BUNDLE",
                   help="regression: the bundle the robot runs now (or `current`); a candidate "
                        "worse than it with confidence fails, with the reason")
    p.add_argument("--scenarios", help="scenario YAML (default configs/sim2sim/<robot>.yaml, "
                                       "else default.yaml)")
    p.add_argument("--report", help="report folder (default: inside the bundle, or "
                                    "runs/sim2sim/... with --fault / --no-record)")
    p.add_argument("--fault", action="append", default=[], metavar="NAME[:ARGS]",
                   help="plant a fault (repeatable); the verdict is not recorded")
    p.add_argument("--no-record", action="store_true", help="do not write the verdict")
    p.add_argument("--sign-key", default=os.environ.get(SIGN_KEY_ENV) or None, metavar="KEY",
                   help=f"sign the recorded verdict with this private key (a name in "
                        f"${KEYS_ENV} or ~/.config/sac2real/keys, or a path; default "
                        f"${SIGN_KEY_ENV}); without one the verdict is recorded unsigned and "
                        f"hardware backends refuse the bundle until it is signed")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--sequential", action="store_true",
                   help="one MuJoCo world per episode instead of all in one")
    p.add_argument("--threads", type=count(1, 256), default=1, help="physics threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--power", action="store_true",
                   help="test the gate itself: the bundle unmodified, then with each standard "
                        "planted fault; prints the table of verdicts, records nothing; exit 0 "
                        "when the unmodified bundle passes and every fault is rejected")
    p.set_defaults(func=_sim2sim)


def _sim2sim(args: argparse.Namespace) -> int:
    from deploy.bundle import BundleError, read_meta
    from deploy.registry import PolicyRegistry, RegistryError
    from deploy.sim2sim.faults import FaultError, parse_fault
    from deploy.sim2sim.gate import run_gate
    from deploy.spec import RobotSpec

    if args.bundle[0] == "calibrate":
        return _calibrate(args)
    if len(args.bundle) != 1:
        print(f"sac2real sim2sim: one bundle, got {args.bundle} (several only after `calibrate`)",
              file=sys.stderr)
        return 2
    try:
        registry = PolicyRegistry()
        path = registry.resolve(args.bundle[0])
        against = None if args.against is None else registry.resolve(args.against, spec_robot(path))
    except (RegistryError, BundleError) as exc:
        print(f"sac2real sim2sim: {exc}", file=sys.stderr)
        return 1
    try:
        spec = RobotSpec.load(read_meta(path)["robot"]["name"])
    except BundleError as exc:
        print(f"sac2real sim2sim: bundle refused, not loaded: {exc}", file=sys.stderr)
        return 1
    try:
        faults = tuple(parse_fault(f, spec) for f in args.fault)
    except FaultError as exc:
        print(f"sac2real sim2sim: {exc}", file=sys.stderr)
        return 2
    if args.power:
        from deploy.sim2sim.power import gate_power, table
        rows = gate_power(path, args.scenarios, tuple(args.fault) or None,
                          args.report, log=lambda m: print(m, file=sys.stderr), seeds=args.seeds)
        print(table(rows))
        return 0 if all(r.ok for r in rows) else 1
    from deploy.signing import SigningError
    from deploy.sim2sim.gate import MIN_RECORDED_SEEDS
    if not args.no_record and not faults and len(args.seeds) < MIN_RECORDED_SEEDS:
        print(f"sac2real sim2sim: --seeds: a recorded verdict needs {MIN_RECORDED_SEEDS} seeds or "
              f"more, got {list(args.seeds)} (or --no-record)", file=sys.stderr)
        return 2
    try:
        result = run_gate(path, args.scenarios, args.report, faults, record=not args.no_record,
                          spec=spec, plots=not args.no_plots, parallel=not args.sequential,
                          threads=args.threads, log=lambda m: print(m, file=sys.stderr),
                          sign_key=args.sign_key, seeds=args.seeds, against=against)
    except SigningError as exc:
        print(f"sac2real sim2sim: --sign-key: {exc}", file=sys.stderr)
        return 2
    if result.refused:
        print(f"sac2real sim2sim: FAILED: bundle refused: {result.refused}", file=sys.stderr)
        return 1
    fails = result.failures()
    if args.json:
        print(json.dumps({**result.to_dict(), "verdict_recorded": result.verdict is not None,
                          "signed_by": result.signed_by}, indent=1))
    else:
        for f in fails[:30]:
            print(f"  {f}")
        state = "PASSED" if result.passed else "FAILED"
        signed = f"signed by {result.signed_by}" if result.signed_by else "unsigned"
        where = "verdict not recorded" if result.verdict is None else \
            f"verdict recorded in the bundle, {signed}"
        planted = f" with {', '.join(result.faults)}" if result.faults else ""
        print(f"sim2sim {state}: {result.bundle_id}{planted} (seeds {list(result.seeds)}; {where}; "
              f"report {result.report_dir})")
    return 0 if result.passed else 1


def spec_robot(path) -> str:
    from deploy.bundle import read_meta
    return read_meta(path)["robot"]["name"]


def _calibrate(args: argparse.Namespace) -> int:
    """`sac2real sim2sim calibrate [BUNDLE ...] --robot ROBOT`."""
    from deploy.registry import PolicyRegistry, RegistryError
    from deploy.sim2sim.calibration import calibrate

    if not args.robot:
        print("sac2real sim2sim calibrate: --robot is required", file=sys.stderr)
        return 2
    registry = PolicyRegistry()
    try:
        bundles = [registry.resolve(b, args.robot) for b in args.bundle[1:]] or \
            [e.path for e in registry.bundles(args.robot) if e.sim2sim == "passed"]
    except RegistryError as exc:
        print(f"sac2real sim2sim calibrate: {exc}", file=sys.stderr)
        return 1
    if not bundles:
        print(f"sac2real sim2sim calibrate: no good {args.robot} bundle (none listed, none in the "
              f"registry with a passing verdict)", file=sys.stderr)
        return 1
    try:
        out = calibrate(args.robot, bundles, scenarios=args.scenarios,
                        log=lambda m: print(m, file=sys.stderr))
    except ValueError as exc:
        print(f"sac2real sim2sim calibrate: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
