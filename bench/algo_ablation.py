"""The presets (`--algo sac | fastdsac | dsac_e`) and single-switch ablations on the Gymnasium
tasks, seeds and budget of bench/sac_vs_sb3.py (its learner loop and hyperparameters, the switches
on top), and on the Go2 velocity task for a fixed number of iterations of each preset's CPU
profile. Prints one JSON object: per task and variant the returns of every seed, their mean and
standard deviation, and wall time.

    python3 bench/algo_ablation.py [--steps 30000] [--seeds 0 1] [--tasks Hopper-v5 HalfCheetah-v5]
                                   [--variants sac fastdsac dsac_e dem_only gaussian_only trajectory_only]
                                   [--go2-iterations 200]

`--go2-iterations 0` skips the Go2 runs. The switches' hyperparameters are the presets'
(configs/train/fastdsac_cpu.yaml, dsac_e_cpu.yaml). `trajectory_only` is DSAC-E's temperature and
entropy critic on the plain SAC critic (the paper's DSAC-E is on the DSAC-T critic: `dsac_e`)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sac_vs_sb3 import evaluate, ours_config, train_ours  # noqa: E402

from training.config import load_train_config, resolve_config  # noqa: E402

PRESET = load_train_config(resolve_config(None, "fastdsac", False)).sac
DEM = dict(actor="dem", dem_temperature=PRESET.dem_temperature)
GAUSSIAN = dict(critic="gaussian", critic_stabilizer=PRESET.critic_stabilizer,
                critic_stat_rate=PRESET.critic_stat_rate)
TRAJECTORY = dict(temperature="trajectory", entropy_budget_scale=load_train_config(
    resolve_config(None, "dsac_e", False)).sac.entropy_budget_scale)
VARIANTS = {"sac": {}, "fastdsac": {**DEM, **GAUSSIAN}, "dsac_e": {**GAUSSIAN, **TRAJECTORY},
            "dem_only": DEM, "gaussian_only": GAUSSIAN, "trajectory_only": TRAJECTORY}
GO2_PRESETS = ("sac", "fastdsac", "dsac_e")


def gym_row(task: str, variant: str, seeds: list[int], steps: int) -> dict:
    cfg = dataclasses.replace(ours_config("none"), **VARIANTS[variant])
    returns, walls = [], []
    for seed in seeds:
        agent, wall = train_ours(task, seed, steps, "none", cfg)
        returns.append(evaluate(lambda o: agent.act(torch.as_tensor(o, dtype=torch.float32)[None],
                                                    True)[0].numpy(), task, seed))
        walls.append(wall)
        print(f"{task} {variant} seed {seed}: {returns[-1]:.1f}", file=sys.stderr, flush=True)
    return {"returns": returns, "mean": float(np.mean(returns)), "std": float(np.std(returns)),
            "wall_s": walls}


def go2_row(algo: str, seeds: list[int], iterations: int) -> dict:
    from deploy.spec import RobotSpec
    from training.envs.velocity import TaskConfig, VelocityEnv
    from training.runner import Trainer, evaluate as evaluate_go2

    cfg = load_train_config(resolve_config(None, algo, False))
    spec = RobotSpec.load("go2")
    rows = []
    for seed in seeds:
        env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), cfg.num_envs, seed=seed,
                          threads=cfg.sim_threads, start_at_command=cfg.start_at_command)
        probe = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 16, seed=1000 + seed)
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(cfg, spec, env, None, Path(out), "velocity_flat", seed=seed)
            with contextlib.redirect_stdout(sys.stderr):    # its log lines: stdout is the JSON
                trainer.train(max_iterations=iterations, show_progress=False)
            metrics = evaluate_go2(trainer.agent, probe, trainer.device)
        rows.append({"return": metrics["return"], "lin_vel_error": metrics["lin_vel_error"],
                     "falls": metrics["falls"], "wall_s": trainer.progress.wall_time})
        print(f"go2 {algo} seed {seed}: {rows[-1]}", file=sys.stderr, flush=True)
        env.close()
        probe.close()
    out = {"runs": rows}
    for key in ("return", "lin_vel_error"):
        values = [r[key] for r in rows]
        out[f"{key}_mean"], out[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--tasks", nargs="+", default=["Hopper-v5", "HalfCheetah-v5"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--go2-iterations", type=int, default=200)
    args = ap.parse_args()
    result = {"settings": {"steps": args.steps, "seeds": args.seeds, "variants": VARIANTS,
                           "go2_iterations": args.go2_iterations,
                           "torch_threads": torch.get_num_threads()},
              "tasks": {t: {v: gym_row(t, v, args.seeds, args.steps) for v in args.variants}
                        for t in args.tasks}}
    if args.go2_iterations > 0:
        result["go2"] = {algo: go2_row(algo, args.seeds, args.go2_iterations) for algo in GO2_PRESETS}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
