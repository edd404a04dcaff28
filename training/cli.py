"""`sac2real train`: pretrain a policy in simulation (MuJoCo on the CPU by default)."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
import time
from pathlib import Path

from deploy.cli_types import count, number, seed

BACKENDS = ("mujoco", "isaaclab")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a SAC policy in simulation")
    p.add_argument("--robot", required=True, help="robot spec name (configs/robots) or YAML path")
    p.add_argument("--task", default="velocity_flat", help="task config name (configs/tasks)")
    p.add_argument("--backend", default="mujoco", choices=BACKENDS)
    p.add_argument("--algo", help="learning algorithm: sac (default) | fastdsac | dsac_e "
                                  "(configs/train/<algo>*.yaml); with --config, it must be the "
                                  "profile's own")
    p.add_argument("--config", help="training config YAML (default: the GPU profile where CUDA is "
                                    "present, else the CPU profile)")
    p.add_argument("--steps", type=count(1), help="total env steps (overrides max_iterations)")
    p.add_argument("--out", help="run folder (default runs/<robot>_<task>_<time>)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", help="checkpoint to continue from (a run's checkpoints/latest.pt)")
    start.add_argument("--init-from", metavar="CHECKPOINT",
                       help="start a new run from this checkpoint's networks, trained on an earlier "
                            "observation layout of the same robot: kept terms keep their weights, "
                            "added terms start at zero weight (training/warm_start.py)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=run_train)

    e = sub.add_parser("evaluate", help="deterministic evaluation of a checkpoint on the MuJoCo task")
    e.add_argument("checkpoint", help="a model_*.pt / best.pt, or a run's checkpoints/latest.pt")
    e.add_argument("--task", default="velocity_flat")
    e.add_argument("--episodes", type=count(1), default=64,
                   help="20 s episodes, one per env (default 64; with --command: per command)")
    e.add_argument("--seed", type=seed, default=12345)
    e.add_argument("--command", nargs=3, type=number(), action="append", metavar=("VX", "VY", "WZ"),
                   help="hold this command for whole episodes instead of drawing from the spec's "
                        "ranges (repeatable); reports what the policy does for each")
    e.set_defaults(func=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from deploy.spec import RobotSpec
    from training.checkpoint import CheckpointError
    from training.config import load_train_config, resolve_config
    from training.envs.velocity import TaskConfig, VelocityEnv
    from training.relabel import RelabelError
    from training.runner import Trainer
    from training.warm_start import warm_start
    from training import distributed
    from training.console import guard_console
    from training.sac import NonFiniteError

    guard_console()
    cuda = torch.cuda.is_available()
    device = ("cuda" if cuda else "cpu") if args.device == "auto" else args.device
    group = distributed.init_process_group(torch.device(device).type)   # one process: a no-op
    if group.world_size > 1:
        device = str(group.device(torch.device(device).type))
    spec = RobotSpec.load(args.robot)
    task = TaskConfig.load(args.task, spec)
    cfg = load_train_config(resolve_config(args.config, args.algo or "sac", cuda))
    if args.algo and cfg.algo != args.algo:
        print(f"sac2real train: error: --algo {args.algo}, but {cfg.source} is a {cfg.algo} profile "
              f"(algo: {cfg.algo}); drop --algo, or give a {args.algo} profile", file=sys.stderr)
        return 2
    if args.steps:
        per_iter = cfg.num_envs * cfg.steps_per_env
        cfg = load_train_config(cfg.source, {"max_iterations": max(1, math.ceil(args.steps / per_iter))})
    try:
        cfg = dataclasses.replace(cfg, batch_size=distributed.per_rank_batch(cfg.batch_size, group))
    except ValueError as exc:
        print(f"sac2real train: error: {cfg.source}: {exc}", file=sys.stderr)
        return 2
    seed = args.seed + group.rank
    if args.backend == "isaaclab":
        if cfg.start_at_command:
            print(f"sac2real train: error: {cfg.source}: start_at_command: the IsaacLab backend resets "
                  f"with its own events; set it to false there", file=sys.stderr)
            return 2
        if cfg.upright_assist is not None:
            print(f"sac2real train: error: {cfg.source}: upright_assist: the MuJoCo training env's "
                  f"aid; the IsaacLab backend has none, leave it out there", file=sys.stderr)
            return 2
        from training.envs.isaaclab import make_isaaclab_env
        env = make_isaaclab_env(spec, args.task, cfg.num_envs, device)
        eval_env = None
    else:
        threads = cfg.sim_threads or os.cpu_count() or 1
        env = VelocityEnv(spec, task, cfg.num_envs, seed=seed, threads=threads,
                          start_at_command=cfg.start_at_command)
        eval_env = VelocityEnv(spec, task, cfg.eval_episodes, seed=seed + 1, threads=threads,
                               randomize=False, obs_noise=False) if group.is_main else None
    out = Path(args.out or f"runs/{spec.name}_{args.task}_{time.strftime('%Y%m%d_%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(cfg, spec, env, eval_env, out, args.task, seed=seed, device=device,
                          is_main=group.is_main)
        if args.resume:
            trainer.resume(Path(args.resume))
        elif args.init_from:
            privileged = env.privileged.layout if getattr(env, "privileged", None) else None
            print("initialised from " + warm_start(trainer.agent, spec, env.pipeline.layout,
                                                   args.init_from, privileged), flush=True)
        distributed.attach(trainer.agent)        # rank 0's weights everywhere, gradients averaged
    except (CheckpointError, RelabelError) as exc:
        print(f"sac2real train: error: {exc}", file=sys.stderr)
        return 2
    print(f"training {spec.name} on {args.task} with {cfg.algo} ({cfg.source}) on {device}: "
          f"{cfg.num_envs} envs x {cfg.steps_per_env} steps, {cfg.updates_per_iteration} updates "
          f"of {cfg.batch_size} per iteration, {cfg.max_iterations} iterations -> {out}", flush=True)
    try:
        trainer.train(show_progress=not args.no_progress)
    except NonFiniteError as exc:
        print(f"sac2real train: stopped: {exc}", file=sys.stderr)
        return 3
    p = trainer.progress
    if p.stopped_by:
        print(f"stopped by {p.stopped_by} at iteration {p.iteration} ({p.env_steps} env steps); "
              f"continue with --resume {out / 'checkpoints' / 'latest.pt'}")
        return 128 + signal.Signals[p.stopped_by].value
    print(f"done: {p.env_steps} env steps, {p.updates} updates; checkpoints in {out / 'checkpoints'}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Whole episodes with commands drawn from the spec's ranges, nominal physics, no observation
    noise, the deterministic policy: the numbers the "it walks" criterion is judged on."""
    import json

    import numpy as np
    import torch

    from training.envs.velocity import TaskConfig, VelocityEnv
    from training.export import load_agent
    from training.runner import evaluate

    _, spec, agent, _ = load_agent(args.checkpoint)
    for held in args.command or []:
        problem = spec.commands.out_of_range(held)
        if problem:
            print(f"sac2real evaluate: error: --command {' '.join(f'{c:g}' for c in held)} is outside "
                  f"{spec.name}'s command ranges ({problem}, {spec.source}): the robot is never "
                  f"given it", file=sys.stderr)
            return 2
    # --episodes per held command, else episodes with commands drawn from the spec's ranges
    commands = np.repeat(np.array(args.command), args.episodes, axis=0) if args.command else None
    num_envs = args.episodes if commands is None else len(commands)
    env = VelocityEnv(spec, TaskConfig.load(args.task, spec), num_envs, seed=args.seed,
                      threads=os.cpu_count() or 1, randomize=False, obs_noise=False, commands=commands)
    metrics = evaluate(agent, env, torch.device("cpu"), seed=args.seed, per_env=commands is not None)
    if commands is not None:
        metrics["commands"] = per_command(args.command, metrics.pop("envs"), args.episodes)
    print(json.dumps({"checkpoint": str(args.checkpoint), "robot": spec.name, "task": args.task,
                      "episodes": env.num_envs, **metrics}))
    return 0


def per_command(commands: list, envs: dict, repeats: int) -> list[dict]:
    """Each held command with what the policy made of it, averaged over its episodes."""
    import numpy as np

    out = []
    for i, command in enumerate(commands):
        at = slice(i * repeats, (i + 1) * repeats)
        out.append({"command": command,
                    "mean_velocity": [round(float(v), 3) for v in envs["mean_velocity"][at].mean(0)],
                    "lin_vel_error": round(float(envs["lin_vel_error"][at].mean()), 3),
                    "falls": int(envs["fell"][at].sum()),
                    **{k: round(float(np.nanmean(envs[k][at])), 3)
                       for k in ("lin_vel_error_stride", "clock_match", "single_stance") if k in envs}})
    return out
