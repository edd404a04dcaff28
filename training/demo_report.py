"""What `sac2real demo` measures and shows: held-out episodes of the shifted robot (before and after
fine-tuning, and the nominal robot for what the shift cost), and the run itself read back from
its own records (the robot's replay, the runner's episode and swap events, the fine-tuner's
promotions).

Tracking return: the task's velocity-tracking terms (track_lin_vel_xy_exp, track_ang_vel_z_exp,
with the task's weights and sigma: deploy.rewards.CommandReward) summed over an episode's policy
ticks; an episode that ends early (a fall, a safety stop) earns nothing for the rest."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy.rewards import TaskRewards
from deploy.sim2sim.scenarios import Episode
from deploy.spec import RobotSpec


def heldout_episodes(spec: RobotSpec, physics: dict, seeds: list[int], per_seed: int,
                     duration_s: float) -> list[Episode]:
    """Episodes whose commands change every resampling_time as the training draws them, from
    seeds the runner never uses (its own seed draws its commands)."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(10_000 + seed)
        for k in range(per_seed):
            times = np.arange(0.0, duration_s, spec.commands.resampling_time)
            cmds = spec.commands.draw(rng, len(times))
            out.append(Episode(name=f"heldout-s{seed}-{k}", scenario="heldout", duration_s=duration_s,
                               settle_s=1.0, passive_s=0.0, seed=seed * 1000 + k,
                               commands=tuple((float(t), *map(float, c)) for t, c in zip(times, cmds)),
                               gate_seed=seed, **physics))
    return out


def evaluate(spec: RobotSpec, bundle_path: Path, episodes: list[Episode], task: str) -> dict:
    """Tracking return and how each episode ended, per seed and overall."""
    from deploy.bundle import PolicyBundle
    from deploy.sim2sim.runner import run_episodes

    reward = TaskRewards.load(task, spec).command_reward
    results = run_episodes(spec, PolicyBundle.load(bundle_path, spec), episodes)
    rows = []
    for r in results:
        a = r.arrays
        pol = a["policy"].astype(bool) if len(a["t"]) else np.zeros(0, bool)
        c, v, w = a["command"][pol], a["lin_vel"][pol], a["ang_vel"][pol]
        velocity = np.concatenate([v[:, :2], w[:, 2:3]], 1) if len(c) else np.zeros((0, 3))
        ret = float(reward(c, velocity, 0.0, 0.0).sum()) if len(c) else 0.0
        rows.append({"episode": r.episode.name, "seed": r.episode.gate_seed, "return": ret,
                     "fell": bool(r.metrics.get("falls", 0) > 0),
                     "completed": r.end_reason == "completed", "end": r.end_reason})
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    returns = np.array([r["return"] for r in rows])
    per_seed = {}
    for s in sorted({r["seed"] for r in rows}):
        mine = [r["return"] for r in rows if r["seed"] == s]
        per_seed[str(s)] = round(float(np.mean(mine)), 3)
    return {"tracking_return": round(float(returns.mean()), 3),
            "sem": round(float(returns.std(ddof=1) / np.sqrt(len(returns))), 3) if len(rows) > 1 else 0.0,
            "per_seed": per_seed, "episodes": len(rows),
            "falls": sum(r["fell"] for r in rows),
            "completed": sum(r["completed"] for r in rows), "rows": rows}


def recovery(nominal: float, before: float, after: float) -> float | None:
    """The share of the tracking return the shift cost that fine-tuning won back."""
    cost = nominal - before
    return None if cost <= 0 else (after - before) / cost


def run_timeline(replay_dir: Path, spec: RobotSpec, task: str, mono_to_wall: float,
                 t0: float) -> dict:
    """Per minute of the run (wall clock from t0): the tracking reward per policy second the robot
    was paid, the robot transitions, and which bundle drove each minute (the most ticks)."""
    from deploy.replay import ReplayReader

    data = ReplayReader(replay_dir).load()
    if len(data) == 0:
        return {"minutes": [], "reward_per_s": [], "transitions": [], "policy": []}
    f = data.fields
    reward = TaskRewards.load(task, spec).command_reward
    tracking = reward(f["command"], f["reward_velocity"], 0.0, 0.0) / spec.policy_dt
    minute = ((f["time_ns"] * 1e-9 + mono_to_wall - t0) // 60).astype(int)
    out = {"minutes": [], "reward_per_s": [], "transitions": [], "policy": []}
    for m in range(int(minute.max()) + 1):
        sel = minute == m
        if sel.sum() * spec.policy_dt < 15:     # under a quarter of a minute (the last one)
            continue
        ids, counts = np.unique(f["policy_id"][sel].astype(str), return_counts=True)
        out["minutes"].append(m)
        out["reward_per_s"].append(round(float(np.nanmean(tracking[sel])), 4))
        out["transitions"].append(int(sel.sum()))
        out["policy"].append(str(ids[np.argmax(counts)]))
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    tl, t0 = report["timeline"], report["started"]
    ax[0, 0].plot(tl["minutes"], tl["reward_per_s"], "o-")
    for p in report["promotions"]:
        m = (p["time"] - t0) / 60
        ax[0, 0].axvline(m, color="g" if p["promoted"] else "r", ls="--", lw=1)
    ax[0, 0].set(title="robot: tracking reward per policy second (green: promoted, red: refused)",
                 xlabel="minute", ylabel="reward / s")
    ids = sorted(set(tl["policy"]), key=tl["policy"].index)
    ax[0, 1].step(tl["minutes"], [ids.index(i) for i in tl["policy"]], where="post")
    ax[0, 1].set_yticks(range(len(ids)), [i[-8:] for i in ids])
    ax[0, 1].set(title="bundle driving the robot (most ticks of each minute)", xlabel="minute")
    eps = report["episodes"]
    falls = [(e["start"] - t0) / 60 for e in eps if e["end"] in ("fall", "fault")]
    ax[1, 0].hist(falls, bins=max(1, int(report["minutes"])), range=(0, max(1, report["minutes"])))
    ax[1, 0].set(title=f"robot: falls and safety stops per minute ({len(falls)} in "
                       f"{len(eps)} episodes)", xlabel="minute")
    ev = report["evaluation"]
    names = [k for k in ("nominal", "before", "after", "last_candidate") if k in ev]
    means = [ev[k]["tracking_return"] for k in names]
    ax[1, 1].bar(names, means, yerr=[ev[k]["sem"] for k in names], capsize=4)
    for i, k in enumerate(names):
        seeds = list(ev[k]["per_seed"].values())
        ax[1, 1].plot([i] * len(seeds), seeds, "k.")
    ax[1, 1].set(title="held-out episodes: tracking return (dots: seeds)", ylabel="return")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
