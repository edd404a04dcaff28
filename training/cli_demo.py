"""`sac2real demo`: a shifted MuJoCo robot, the runner and the fine-tuner in their own processes,
the gate and promotions, and a before/after report (training/demo.py)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from deploy.cli_types import count, exploration, number, seed, seed_list


def register(sub: argparse._SubParsersAction) -> None:
    from training.cli_finetune import prior_fraction
    from training.demo import DEFAULT_CHECKPOINT, DEFAULT_SHIFT, SWAP_TAIL_S, DemoOptions

    d = DemoOptions(out=Path("."))
    p = sub.add_parser("demo", help="fine-tune on a shifted MuJoCo robot: runner, learner, gate, "
                                    "promotions, report (about 15 minutes)")
    p.add_argument("--out", help="run folder (default runs/demo/<UTC time>)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="the pretrained parent")
    p.add_argument("--minutes", type=number(0.0, 1e4, open_low=True), default=d.minutes, help="the robot's time")
    p.add_argument("--physics", action="append", metavar="KEY=VALUE",
                   help=f"the robot's shift (repeatable; default {' '.join(DEFAULT_SHIFT)})")
    p.add_argument("--episode-s", type=number(0.0, 1e4, open_low=True), default=d.episode_s)
    p.add_argument("--explore", type=exploration, default=d.explore,
                   help="exploration scale on the robot (x the bundle's std)")
    p.add_argument("--utd", type=number(0.0, open_low=True), default=d.utd, help="updates per robot transition")
    p.add_argument("--lr-scale", type=number(0.0, 10.0), default=d.lr_scale,
                   help="x the parent's learning rates (0: every candidate equals the running policy)")
    p.add_argument("--promote-every", type=count(1), default=d.promote_every, help="updates between promotions")
    p.add_argument("--prior-steps", type=count(0), default=d.prior_steps)
    p.add_argument("--prior-fraction", default=d.prior_fraction, type=prior_fraction,
                   help="share of each batch from the prior (as sac2real finetune)")
    p.add_argument("--eval-episodes", type=count(1), default=d.eval_episodes, help="held-out episodes per seed")
    p.add_argument("--eval-seeds", default=",".join(map(str, d.eval_seeds)), type=seed_list,
                   help="seeds of the held-out episodes (distinct, >= 0)")
    p.add_argument("--eval-s", type=number(0.0, 1e4, open_low=True), default=d.eval_s, help="held-out episode length")
    p.add_argument("--seed", type=seed, default=d.seed)
    p.add_argument("--until-swaps", type=count(0), default=d.until_swaps,
                   help="end once the runner has swapped to this many promoted bundles (and driven "
                        f"the last for {SWAP_TAIL_S:g} s), or at --minutes, whichever comes first (0: all "
                        "--minutes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.demo import DEFAULT_SHIFT, DemoError, DemoOptions, run_demo

    out = Path(args.out) if args.out else Path("runs/demo") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    opts = DemoOptions(out=out, checkpoint=Path(args.checkpoint), minutes=args.minutes,
                       physics=tuple(args.physics or DEFAULT_SHIFT), episode_s=args.episode_s,
                       explore=args.explore, utd=args.utd, lr_scale=args.lr_scale, promote_every=args.promote_every,
                       prior_steps=args.prior_steps, prior_fraction=args.prior_fraction,
                       eval_seeds=args.eval_seeds, eval_episodes=args.eval_episodes, eval_s=args.eval_s,
                       seed=args.seed, until_swaps=args.until_swaps)
    signal.signal(signal.SIGTERM, _interrupt)     # `kill`: stop the two processes as Ctrl-C does
    try:
        run_demo(opts, log=lambda line: print(line, flush=True))
    except (DemoError, ValueError) as exc:
        print(f"sac2real demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:       # the runner damped, the fine-tuner saved (training/demo.py)
        print(f"sac2real demo: interrupted; what was written is in {out}", file=sys.stderr)
        return 130
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
