"""`sac2real export CHECKPOINT [--out ROOT]`: a checkpoint becomes a verified policy bundle."""
from __future__ import annotations

import argparse
import sys

from deploy.cli_types import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint as a policy bundle (ONNX + policy.json + "
                                      "manifest) into the model registry")
    p.add_argument("checkpoint", help="a model_*.pt / best.pt, or a run's checkpoints/latest.pt")
    p.add_argument("--out", "--root", dest="out", metavar="ROOT",
                   help="registry root; the bundle goes to ROOT/<robot>/<id>/ (default "
                        "$SAC2REAL_MODELS or models/policies)")
    p.add_argument("--robot", help="robot spec name or YAML to export for (default: the "
                                   "checkpoint's robot in configs/robots; its hash must match)")
    p.add_argument("--parity-samples", type=count(1), default=10_000,
                   help="random and replayed observations checked against PyTorch (default 10000)")
    p.add_argument("--precision", default="float64", choices=("float64", "float32"),
                   help="compute precision inside the graph (default float64: exact parity with "
                        "the trained weights; float32 is ~2-9x faster for the paper's large networks "
                        "but may miss the 1e-5 parity bound on a trained actor)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    import torch

    from deploy.bundle import BundleError
    from deploy.spec import RobotSpec
    from training.checkpoint import CheckpointError
    from training.export import ExportError, export_checkpoint

    torch.set_num_threads(1)
    spec = RobotSpec.load(args.robot) if args.robot else None
    try:
        export_checkpoint(args.checkpoint, args.out, spec, parity_samples=args.parity_samples,
                          precision=args.precision)
    except (CheckpointError, ExportError, BundleError) as exc:
        print(f"sac2real export: refused: {exc}", file=sys.stderr)
        return 2
    return 0
