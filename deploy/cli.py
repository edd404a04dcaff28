"""`sac2real`: one console script, one subcommand per stage of the data flow.

Each stage registers its own subcommands; a stage that needs torch is imported only when its
subcommand runs, so the robot computer (no torch) can still use every deploy-side command."""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, function): each `register(subparsers)` adds its subcommands.
STAGES = [
    ("deploy.cli_robots", "register"),
    ("training.cli", "register"),
    ("deploy.replay.cli", "register"),
    ("training.cli_export", "register"),
    ("training.cli_finetune", "register"),
    ("training.cli_demo", "register"),
    ("training.isaaclab_parity", "register"),
    ("deploy.cli_models", "register"),
    ("deploy.cli_keys", "register"),
    ("deploy.cli_run", "register"),
    ("deploy.sim2sim.cli", "register"),
    ("deploy.cli_preflight", "register"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sac2real", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module, func in STAGES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in ("torch", "tensorboard", "tqdm", "onnx"):
                continue  # training extra not installed: its commands are simply absent
            if exc.name == module:
                continue
            raise
        getattr(mod, func)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from deploy.config import ConfigError
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"sac2real: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
