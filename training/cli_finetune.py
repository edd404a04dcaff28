"""`sac2real finetune`: continue a pretrained policy's SAC updates on robot data."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.cli_types import count, number, seed, seed_list


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("finetune", help="fine-tune a pretrained checkpoint on a robot's replay")
    p.add_argument("--checkpoint", required=True, help="the pretrained parent (model file or latest.pt)")
    p.add_argument("--replay", required=True, help="the robot's replay directory (tailed)")
    p.add_argument("--out", required=True,
                   help="run folder; the same --out again resumes its checkpoints/latest.pt")
    p.add_argument("--prior", default="nominal", choices=["nominal", "training", "none"],
                   help="prior simulation data: the parent rolled out in MuJoCo, nominal or with the "
                        "training's domain randomization and pushes; or none")
    p.add_argument("--prior-steps", type=count(0), default=20_000, help="transitions of prior data")
    p.add_argument("--prior-fraction", default="0.5->0@20000", type=prior_fraction,
                   help="share of each batch from the prior: F or F0->F1@ROBOT_STEPS (linear)")
    p.add_argument("--utd", type=number(0.0, open_low=True), default=1.0, help="updates per new robot transition")
    p.add_argument("--every", type=count(1), default=1000, help="updates between checkpoints")
    p.add_argument("--lr-scale", type=number(0.0, 10.0), default=1.0,
                   help="x the parent's learning rates (0 keeps the weights: a dry run of the loop)")
    p.add_argument("--max-updates", type=count(1), help="stop after this many fine-tuning updates")
    p.add_argument("--idle-exit", type=number(0.0, open_low=True), help="stop after this many seconds without new data")
    p.add_argument("--critic-warmup", type=count(0), default=0,
                   help="the first N updates move only the critics (actor and temperature held)")
    p.add_argument("--promote-every", type=count(1),
                   help="every N updates: export the checkpoint into the robot's registry "
                        "($SAC2REAL_MODELS or models/policies), gate it against the bundle the "
                        "robot runs now and promote it if it passes (promotions.jsonl in --out)")
    p.add_argument("--gate-seeds", default="0,1,2", type=seed_list,
                   help="the gate's seeds for a promotion (3 or more)")
    p.add_argument("--gate-scenarios", help="the gate's scenario file (default: the robot's own)")
    p.add_argument("--sign-key", help="sign promoted bundles with this key (hardware backends "
                                      "drive only signed bundles)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_finetune)


def prior_fraction(text: str) -> str:
    """argparse type: a valid --prior-fraction schedule, kept as its text (the demo hands it on
    to the fine-tuner's command line)."""
    from training.finetune import FinetuneError, Schedule

    try:
        Schedule.parse(text)
    except FinetuneError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None
    return text


def run_finetune(args: argparse.Namespace) -> int:
    from training.checkpoint import CheckpointError
    from training.console import guard_console
    from training.export import ExportError
    from training.finetune import FinetuneError, FinetuneOptions, FineTuner, Schedule

    guard_console()
    try:
        opts = FinetuneOptions(Path(args.checkpoint), Path(args.replay), Path(args.out), utd=args.utd,
                               every=args.every, prior=args.prior, prior_steps=args.prior_steps,
                               prior_fraction=Schedule.parse(args.prior_fraction), seed=args.seed,
                               max_updates=args.max_updates, idle_exit_s=args.idle_exit,
                               device=args.device, lr_scale=args.lr_scale,
                               critic_warmup=args.critic_warmup,
                               promote_every=args.promote_every,
                               gate_seeds=args.gate_seeds,
                               gate_scenarios=Path(args.gate_scenarios) if args.gate_scenarios else None,
                               sign_key=args.sign_key)
        tuner = FineTuner(opts, log=lambda line: print(line, flush=True))
        why = tuner.run()
    except (FinetuneError, CheckpointError, ExportError) as exc:
        print(f"sac2real finetune: error: {exc}", file=sys.stderr)
        return 2
    return {"SIGINT": 130, "SIGTERM": 143}.get(why, 0)
