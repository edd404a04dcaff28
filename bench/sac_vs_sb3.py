"""This project's SAC against Stable-Baselines3 SAC on Gymnasium MuJoCo, and the MuJoCo velocity
task's throughput against raw mj_step on the same model, all measured in one run.

Both learners get the same tasks, seeds, networks, batch, learning rates, discount, target rate,
entropy target and step budget (one update per env step after the same warm-up). Prints one JSON
object.

    python3 bench/sac_vs_sb3.py [--steps 30000] [--seeds 0 1] [--tasks Hopper-v5 HalfCheetah-v5]
                                [--amp none|bf16]

Our learner runs in float32 as the training profiles do; `--amp bf16` runs its learning and update
rates with bf16 matrix products instead, which pays only on a CPU with native bf16 (AVX-512 BF16 or
AMX): on an AVX2-only CPU it is about 20x slower than float32.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.envs.gym_adapter import GymVecEnv  # noqa: E402
from training.replay_buffer import ReplayBuffer  # noqa: E402
from training.sac import SAC, SACConfig  # noqa: E402

HIDDEN = (256, 256)
SHARED = dict(lr=3e-4, gamma=0.99, tau=0.005, batch=256, warmup=5000, ent_scale=1.0)


def ours_config(amp: str) -> SACConfig:
    """Our learner with SB3's hyperparameters; `amp` as in the training profiles."""
    s = SHARED
    return SACConfig(actor_hidden=HIDDEN, critic_hidden=HIDDEN, activation="relu", actor_lr=s["lr"],
                     critic_lr=s["lr"], alpha_lr=s["lr"], gamma=s["gamma"], tau=s["tau"],
                     init_alpha=1.0, target_entropy_scale=s["ent_scale"], n_step=1,
                     max_grad_norm=0.0, normalize_actor_obs=False, normalize_critic_obs=False,
                     init_std=1.0, amp=amp)


def train_ours(task: str, seed: int, steps: int, amp: str,
               cfg: SACConfig | None = None) -> tuple[SAC, float]:
    """`cfg` replaces ours_config(amp) (bench/algo_ablation.py: the same loop with switches on)."""
    torch.manual_seed(seed)
    env = GymVecEnv(task, 1, seed=seed)
    agent = SAC(env.obs_dim, env.action_low, env.action_high, cfg or ours_config(amp))
    buf = ReplayBuffer(steps, 1, env.obs_dim, len(env.action_low))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    obs = torch.as_tensor(env.reset())
    t0 = time.perf_counter()
    for step in range(steps):
        if step < SHARED["warmup"]:
            act = torch.as_tensor(rng.uniform(env.action_low, env.action_high, (1, len(env.action_low))),
                                  dtype=torch.float32)
        else:
            act = agent.act(obs)
        r = env.step(act.numpy())
        nxt = torch.as_tensor(np.where((r.terminated | r.truncated)[:, None], r.final_obs, r.obs))
        buf.add(obs, act, torch.as_tensor(r.reward, dtype=torch.float32), nxt,
                torch.as_tensor(r.terminated | r.truncated), torch.as_tensor(r.truncated))
        obs = torch.as_tensor(r.obs)
        if step >= SHARED["warmup"]:
            agent.update(buf.sample(SHARED["batch"], 1, SHARED["gamma"], gen))
    return agent, time.perf_counter() - t0


def train_sb3(task: str, seed: int, steps: int):
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC

    s = SHARED
    model = SB3SAC("MlpPolicy", gym.make(task), learning_rate=s["lr"], buffer_size=steps,
                   learning_starts=s["warmup"], batch_size=s["batch"], tau=s["tau"], gamma=s["gamma"],
                   train_freq=1, gradient_steps=1, ent_coef="auto_1.0", target_entropy="auto",
                   policy_kwargs=dict(net_arch=list(HIDDEN)), seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model, time.perf_counter() - t0


def evaluate(act_fn, task: str, seed: int, episodes: int = 10) -> float:
    import gymnasium as gym

    env = gym.make(task)
    total = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + ep)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(act_fn(obs))
            ret += r
            done = term or trunc
        total.append(ret)
    return float(np.mean(total))


def update_rate_ours(task: str, amp: str, n: int = 300) -> float:
    env = GymVecEnv(task, 1)
    agent = SAC(env.obs_dim, env.action_low, env.action_high, ours_config(amp))
    buf = ReplayBuffer(20_000, 1, env.obs_dim, len(env.action_low))
    for _ in range(2000):
        buf.add(torch.randn(1, env.obs_dim), torch.rand(1, len(env.action_low)) * 2 - 1, torch.randn(1),
                torch.randn(1, env.obs_dim), torch.zeros(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool))
    for _ in range(20):
        agent.update(buf.sample(SHARED["batch"], 1, SHARED["gamma"]))
    t0 = time.perf_counter()
    for _ in range(n):
        agent.update(buf.sample(SHARED["batch"], 1, SHARED["gamma"]))
    return n / (time.perf_counter() - t0)


def update_rate_sb3(task: str, n: int = 300) -> float:
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC

    s = SHARED
    model = SB3SAC("MlpPolicy", gym.make(task), learning_rate=s["lr"], learning_starts=0,
                   batch_size=s["batch"], policy_kwargs=dict(net_arch=list(HIDDEN)), device="cpu",
                   ent_coef="auto_1.0", train_freq=1, gradient_steps=1, verbose=0)
    model.learn(total_timesteps=2000)       # fills the buffer
    model.train(gradient_steps=20, batch_size=s["batch"])
    t0 = time.perf_counter()
    model.train(gradient_steps=n, batch_size=s["batch"])
    return n / (time.perf_counter() - t0)


def update_rates(task: str, amp: str) -> dict:
    """Gradient updates per second on a filled buffer, same networks and batch, measured back to
    back: ours in float32, ours with `amp` where that is not float32, and SB3's (float32)."""
    rates = {"ours_fp32": update_rate_ours(task, "none"), "sb3": update_rate_sb3(task)}
    rates["speedup_fp32"] = rates["ours_fp32"] / rates["sb3"]
    if amp != "none":
        rates[f"ours_{amp}"] = update_rate_ours(task, amp)
        rates[f"speedup_{amp}"] = rates[f"ours_{amp}"] / rates["sb3"]
    return rates


def env_throughput(robot: str = "go2", num_envs: int = 64, steps: int = 200) -> dict:
    """The velocity task's physics steps per second against raw mj_step on the same world model."""
    import mujoco

    from deploy.spec import RobotSpec
    from training.envs.velocity import TaskConfig, VelocityEnv

    spec = RobotSpec.load(robot)
    threads = os.cpu_count() or 1
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), num_envs, threads=threads)
    env.reset()
    actions = np.zeros((num_envs, spec.num_joints))
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    task_rate = steps * num_envs * spec.decimation / (time.perf_counter() - t0)
    rates = {}
    for name, world_threads in (("raw_one_thread", 1), ("raw_all_threads", threads)):
        from deploy.sim_world import SimWorld
        world = SimWorld(spec, num_envs, world_threads)
        world.set_targets(np.tile(spec.default_pos, (num_envs, 1)))
        t0 = time.perf_counter()
        for _ in range(steps):
            world.step(spec.decimation)
        rates[name] = steps * num_envs * spec.decimation / (time.perf_counter() - t0)
        world.close()
    one = mujoco.MjModel.from_xml_path(spec.mjcf)
    data = mujoco.MjData(one)
    t0 = time.perf_counter()
    mujoco.mj_step(one, data, nstep=steps * spec.decimation)
    single = steps * spec.decimation / (time.perf_counter() - t0)
    rates["rollout_all_threads"] = _rollout_rate(one, num_envs, steps, spec.decimation, threads)
    return {"robot": robot, "num_envs": num_envs, "threads": threads,
            "task_env_steps_per_s": task_rate / spec.decimation,
            "task_physics_steps_per_s": task_rate,
            "raw_mj_step_same_world_one_thread": rates["raw_one_thread"],
            "raw_mj_step_same_world_all_threads": rates["raw_all_threads"],
            "raw_mj_step_single_robot_model": single,
            "mujoco_rollout_single_robot_models_all_threads": rates["rollout_all_threads"],
            "task_vs_raw_same_threads": task_rate / rates["raw_all_threads"]}


def _rollout_rate(model, num_envs: int, steps: int, decimation: int, threads: int) -> float:
    """The alternative design: one single-robot model per env, advanced one policy step at a time
    by mujoco.rollout across threads (state read back and handed in every call)."""
    import mujoco
    from mujoco import rollout

    datas = [mujoco.MjData(model) for _ in range(threads)]
    state_spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.empty(mujoco.mj_stateSize(model, state_spec))
    mujoco.mj_getState(model, datas[0], state, state_spec)
    states = np.tile(state, (num_envs, 1))
    control = np.zeros((num_envs, decimation, model.nu))
    with rollout.Rollout(nthread=threads) as r:
        t0 = time.perf_counter()
        for _ in range(steps):
            out, _ = r.rollout(model, datas, states, control)
            states = out[:, -1]
        elapsed = time.perf_counter() - t0
    return steps * num_envs * decimation / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tasks", nargs="+", default=["Hopper-v5", "HalfCheetah-v5"])
    parser.add_argument("--updates-only", action="store_true",
                        help="only the update-throughput comparison (no learning runs)")
    parser.add_argument("--amp", choices=["none", "bf16"], default="none",
                        help="our learner's matrix products: none = float32 (default), bf16 only "
                             "on a CPU with native bf16")
    args = parser.parse_args()
    if args.updates_only:
        print(json.dumps({task: update_rates(task, args.amp) for task in args.tasks}))
        return
    result = {"settings": {"steps": args.steps, "seeds": args.seeds, "hidden": HIDDEN, **SHARED,
                           "amp": args.amp,
                           "torch_threads": torch.get_num_threads()}, "tasks": {}}
    for task in args.tasks:
        row = {"ours": {"returns": [], "wall_s": []}, "sb3": {"returns": [], "wall_s": []}}
        for seed in args.seeds:
            agent, wall = train_ours(task, seed, args.steps, args.amp)
            act = lambda o: agent.act(torch.as_tensor(o, dtype=torch.float32)[None], True)[0].numpy()
            row["ours"]["returns"].append(evaluate(act, task, seed))
            row["ours"]["wall_s"].append(wall)
            model, wall = train_sb3(task, seed, args.steps)
            row["sb3"]["returns"].append(evaluate(lambda o: model.predict(o, deterministic=True)[0], task, seed))
            row["sb3"]["wall_s"].append(wall)
            print(f"{task} seed {seed}: ours {row['ours']['returns'][-1]:.0f}, "
                  f"sb3 {row['sb3']['returns'][-1]:.0f}", file=sys.stderr, flush=True)
        for who in ("ours", "sb3"):
            row[who]["mean_return"] = float(np.mean(row[who]["returns"]))
        rates = update_rates(task, args.amp)
        key = "fp32" if args.amp == "none" else args.amp
        row["ours"]["updates_per_s"] = rates[f"ours_{key}"]
        row["sb3"]["updates_per_s"] = rates["sb3"]
        row["update_speedup"] = rates[f"speedup_{key}"]
        row["update_rates"] = rates
        row["return_ratio"] = row["ours"]["mean_return"] / max(abs(row["sb3"]["mean_return"]), 1e-9)
        result["tasks"][task] = row
    result["env_throughput"] = env_throughput()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
