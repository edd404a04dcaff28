"""`isaaclab-parity`: on a GPU workstation with IsaacLab, build a robot's IsaacLab task and report
whether it matches the robot spec (joint order read from the live articulation, action scale,
policy observation terms and sizes), before any training time is spent on it. A mismatch exits 2
with the message that names the first difference (training/envs/isaaclab.py `check_contract`).

    python -m training.isaaclab_parity --robot g1 [--task velocity_flat] [--device cuda:0]

Prints one JSON object: the task id, the IsaacLab version, and what the task was checked on."""
from __future__ import annotations

import argparse
import json
import sys

from deploy.config import ConfigError
from deploy.spec import RobotSpec


def parity_report(env, task_name: str, isaaclab_version: str) -> dict:
    """What an IsaacLabVecEnv that passed its contract check was checked on."""
    return {"robot": env.spec.name, "spec_hash": env.spec.hash, "task": task_name,
            "isaaclab": isaaclab_version, **env.describe(), "parity": True}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("isaaclab-parity", help="check a robot's IsaacLab task against its spec (GPU)")
    p.add_argument("--robot", required=True, help="robot spec name (configs/robots) or YAML path")
    p.add_argument("--task", default="velocity_flat", help="velocity_flat | velocity_rough")
    p.add_argument("--device", default="cuda:0")
    p.set_defaults(func=run_parity)


def run_parity(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    from training.envs.isaaclab import make_isaaclab_env, task_id

    spec = RobotSpec.load(args.robot)
    env = make_isaaclab_env(spec, args.task, num_envs=1, device=args.device)
    try:
        isaaclab_version = version("isaaclab")
        task_name = task_id(spec, args.task, isaaclab_version.split(".")[0])
        report = parity_report(env, task_name, isaaclab_version)
    finally:
        env.close()
    print(json.dumps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="isaaclab-parity")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["isaaclab-parity", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"isaaclab-parity: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
