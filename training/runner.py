"""The pretraining loop (rsl_rl_sac.md Algorithm 1): collect N_s steps in N_e envs, store corrected
transitions, run the update step, evaluate, log and checkpoint. Resuming restores every piece of
state (networks, optimizers, normalizers, replay, env physics, RNGs), so an interrupted run
continues exactly as if it had not stopped."""
from __future__ import annotations

import csv
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deploy.spec import RobotSpec
from training.checkpoint import FORMAT, CheckpointError, atomic_save, load_checkpoint, resolve_checkpoint
from training.config import TrainConfig
from training.envs.base import VecEnv, corrected_next_obs
from training.exploration import EnvNoiseScales, PinkNoise
from training.learner import Learner, Source
from training.relabel import FIELDS as RELABEL_FIELDS, CommandRelabel
from training.replay_buffer import ReplayBuffer
from training.sac import SAC, NonFiniteError
from training.symmetry import Mirror


LOG_EVERY = 50  # iterations between log lines when there is no progress bar


@dataclass
class Progress:
    iteration: int = 0
    env_steps: int = 0
    updates: int = 0
    wall_time: float = 0.0
    best_eval: float = -math.inf
    recent_returns: list = field(default_factory=list)
    stopped_by: str | None = None     # the signal that ended the run early (checkpointed)


class StopRequest:
    """SIGINT or SIGTERM while training: finish the iteration, checkpoint and return, so that a
    job killed by a scheduler, a session's end or Ctrl-C loses nothing. A second SIGINT
    interrupts at once. Only the main thread can receive signals; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"{self.signal}: stopping after this iteration and writing a checkpoint", flush=True)

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class _Silent:
    """TensorBoard's writer for a data-parallel process that is not the main one."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    """`is_main`: false on every process of a torchrun group but rank 0 (training/distributed.py):
    they collect and update, and leave checkpoints, evaluation and logs to rank 0."""

    def __init__(self, cfg: TrainConfig, spec: RobotSpec, env: VecEnv, eval_env: VecEnv | None,
                 out_dir: Path, task: str, seed: int = 0, device: str = "cpu", is_main: bool = True):
        self.cfg, self.spec, self.env = cfg, spec, env
        self.eval_env = eval_env if is_main else None
        self.is_main = is_main
        self.out = Path(out_dir)
        self.task, self.seed, self.device = task, seed, torch.device(device)
        torch.manual_seed(seed)
        privileged = getattr(env, "privileged_dim", 0)
        pipeline = getattr(env, "pipeline", None)
        self.agent = SAC(env.obs_dim - privileged, env.action_low, env.action_high, cfg.sac,
                         privileged, None if pipeline is None else pipeline.observed_noise).to(self.device)
        self.sample_rng = torch.Generator(device=self.device).manual_seed(seed)
        self.relabel = None
        if cfg.command_relabel > 0:
            self.relabel = CommandRelabel.build(env, cfg.command_relabel, self.sample_rng, self.device)
        self.buffer = ReplayBuffer(cfg.buffer_size, env.num_envs, env.obs_dim, len(env.action_low),
                                   self.device, RELABEL_FIELDS if self.relabel else None)
        self.noise = None
        if cfg.exploration_noise == "pink":
            self.noise = PinkNoise(env.num_envs, len(env.action_low),
                                   torch.Generator().manual_seed(seed + 1))
        self.noise_scale = None
        if cfg.exploration_scale != (1.0, 1.0):
            self.noise_scale = EnvNoiseScales(env.num_envs, *cfg.exploration_scale,
                                              torch.Generator().manual_seed(seed + 2))
        self.mirror = None
        if cfg.symmetry == "mirror":      # both robot envs build observations with deploy's pipeline
            self.mirror = Mirror.build(spec, critic_layout(env)).to(self.device)
        self.learner = Learner(self.agent, [Source("sim", self._sample_sim)], cfg.batch_size,
                               self.sample_rng, None if self.mirror is None else self.mirror.augment)
        self.progress = Progress()
        self.obs = torch.as_tensor(env.reset(seed=seed), device=self.device)

    # ---- the loop --------------------------------------------------------------------------
    def train(self, max_iterations: int | None = None, show_progress: bool = True) -> Progress:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg, p = self.cfg, self.progress
        end = max_iterations if max_iterations is not None else cfg.max_iterations
        writer = SummaryWriter(str(self.out / "tb"), purge_step=p.iteration) if self.is_main else _Silent()
        bar = tqdm(total=end, initial=p.iteration, disable=not (show_progress and self.is_main),
                   unit="it", dynamic_ncols=True)
        try:
            with StopRequest() as stop:
                while p.iteration < end and stop.signal is None:
                    t0 = time.perf_counter()
                    env_logs = self._collect()
                    t1 = time.perf_counter()
                    logs = self._learn()
                    t2 = time.perf_counter()
                    p.iteration += 1
                    p.wall_time += t2 - t0
                    self._log(writer, bar, logs, env_logs, t1 - t0, t2 - t1)
                    if self.eval_env is not None and p.iteration % cfg.eval_interval == 0:
                        self._evaluate(writer)
                    if self.is_main and (p.iteration % cfg.checkpoint_interval == 0
                                         or p.iteration == end or stop.signal):
                        self.save()
                p.stopped_by = stop.signal
        finally:
            bar.close()
            writer.close()
        return p

    def _collect(self) -> dict:
        """N_s steps of every env into the buffer; returns the iteration's mean reward terms and
        episode statistics for the logs."""
        cfg, p = self.cfg, self.progress
        if cfg.upright_assist is not None:          # the MuJoCo training env's (training/cli.py)
            self.env.world.set_upright_assist(cfg.upright_assist.at(p.iteration))
        terms: dict[str, float] = {}
        lengths, falls = [], []
        for _ in range(cfg.steps_per_env):
            obs = self.obs
            self._check_obs(obs)
            self.agent.observe(obs)
            action = self.agent.act(obs, noise=self._exploration_noise(obs), logit_scale=self._logit_scale())
            native = getattr(self.env, "torch_native", False)
            result = self.env.step(action if native else action.cpu().numpy())
            done = torch.as_tensor(result.terminated | result.truncated, device=self.device)
            if self.noise_scale is not None:
                self.noise_scale.redraw(done)
            timeout = torch.as_tensor(result.truncated, device=self.device)
            next_obs = torch.as_tensor(corrected_next_obs(result), device=self.device)
            extras = None if self.relabel is None else \
                CommandRelabel.step_extras(result.info, self.device)
            self.buffer.add(obs, action, torch.as_tensor(result.reward, dtype=torch.float32,
                                                         device=self.device),
                            next_obs, done, timeout, extras)
            self.obs = torch.as_tensor(result.obs, device=self.device)
            p.env_steps += self.env.num_envs
            for k, v in result.info.get("reward_terms", {}).items():
                terms[k] = terms.get(k, 0.0) + v / cfg.steps_per_env
            if "episode" in result.info:
                ep = result.info["episode"]
                p.recent_returns = (p.recent_returns + list(ep["return"]))[-200:]
                lengths += list(ep["length"])
                falls += list(ep.get("fell", []))
        stats = {f"reward/{k}": v for k, v in terms.items()}
        if lengths:
            stats["train/episode_length"] = float(np.mean(lengths))
            stats["train/fall_fraction"] = float(np.mean(falls)) if falls else 0.0
        return stats

    def _exploration_noise(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The eps of this step's actions; None lets the actor draw white noise itself."""
        noise = None if self.noise is None else self.noise.next().to(self.device)
        if self.noise_scale is None or self.cfg.sac.actor == "dem":
            return noise
        if noise is None:
            noise = torch.randn(obs.shape[0], len(self.env.action_low), device=self.device)
        return noise * self.noise_scale.scale.to(self.device)[:, None]

    def _logit_scale(self) -> torch.Tensor | None:
        """With `actor: dem` the per-env factors scale the modulation logits instead of the noise
        (fastdsac.txt Eq. 7): they vary the shape of exploration, not its size."""
        if self.noise_scale is None or self.cfg.sac.actor != "dem":
            return None
        return self.noise_scale.scale.to(self.device)

    def _sample_sim(self, size: int, generator: torch.Generator):
        return self.buffer.sample(size, self.cfg.sac.n_step, self.cfg.sac.gamma, generator, self.relabel)

    def _learn(self) -> dict:
        cfg = self.cfg
        if self.progress.iteration < cfg.learning_starts:
            return {}
        logs = self.learner.update(cfg.updates_per_iteration)
        self.progress.updates += cfg.updates_per_iteration
        return logs

    def _check_obs(self, obs: torch.Tensor) -> None:
        bad = ~torch.isfinite(obs)
        if bool(bad.any()):
            env, col = [int(i) for i in bad.nonzero()[0]]
            raise NonFiniteError(f"non-finite observation at env step {self.progress.env_steps} "
                                 f"(env {env}, observation index {col}); last good checkpoint kept "
                                 f"in {self.out}")

    # ---- reporting -------------------------------------------------------------------------
    def _log(self, writer, bar, logs: dict, env_logs: dict, t_collect: float, t_learn: float) -> None:
        p, cfg = self.progress, self.cfg
        sps = cfg.steps_per_env * self.env.num_envs / max(t_collect, 1e-9)
        ups = cfg.updates_per_iteration / max(t_learn, 1e-9) if logs else 0.0
        for k, v in {**logs, **env_logs}.items():
            writer.add_scalar(k, v, p.env_steps)
        writer.add_scalar("perf/env_steps_per_s", sps, p.env_steps)
        writer.add_scalar("perf/updates_per_s", ups, p.env_steps)
        ret = float(np.mean(p.recent_returns)) if p.recent_returns else float("nan")
        if p.recent_returns:
            writer.add_scalar("train/episode_return", ret, p.env_steps)
        alpha = logs.get("policy/alpha", float("nan"))
        bar.set_postfix(ret=f"{ret:.2f}", sps=f"{sps:.0f}", ups=f"{ups:.0f}", alpha=f"{alpha:.2g}",
                        refresh=False)
        bar.update(1)
        if bar.disable and self.is_main and p.iteration % LOG_EVERY == 0:
            print(f"it {p.iteration} env_steps {p.env_steps} updates {p.updates} return {ret:.3f} "
                  f"env_steps/s {sps:.0f} updates/s {ups:.0f} alpha {alpha:.3g} "
                  f"wall {p.wall_time / 60:.1f} min", flush=True)

    def _evaluate(self, writer) -> dict:
        metrics = evaluate(self.agent, self.eval_env, self.device)
        p = self.progress
        for k, v in metrics.items():
            writer.add_scalar(f"eval/{k}", v, p.env_steps)
        row = {"iteration": p.iteration, "env_steps": p.env_steps, "updates": p.updates,
               "wall_time": round(p.wall_time, 1), **{k: round(v, 5) for k, v in metrics.items()}}
        log = self.out / "eval.csv"
        new = not log.exists()
        fields = list(row) if new else next(csv.reader(open(log)))   # a resumed run keeps its columns
        with open(log, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        plot_eval_curve(log, self.out / "reward_curve.png")
        if metrics["return"] > p.best_eval:
            p.best_eval = metrics["return"]
            self.save(self.out / "best.pt", with_replay=False)
        return metrics

    # ---- persistence -----------------------------------------------------------------------
    def checkpoint(self) -> dict:
        env = self.env
        return {
            "format": FORMAT,
            "robot": {"name": self.spec.name, "hash": self.spec.hash, "spec": self.spec.to_dict()},
            "task": self.task,
            "config": self.cfg.to_dict(),
            "obs_layout": env.pipeline.layout.to_list() if hasattr(env, "pipeline") else None,
            "privileged_layout": env.privileged.layout.to_list()
            if getattr(env, "privileged", None) is not None else None,
            "action_bounds": {"low": np.asarray(env.action_low).tolist(),
                              "high": np.asarray(env.action_high).tolist()},
            "agent": self.agent.full_state(),
            "progress": vars(self.progress).copy(),
            "rng": {"torch": torch.get_rng_state(), "sample": self.sample_rng.get_state()},
            "noise": None if self.noise is None else self.noise.state_dict(),
            "noise_scale": None if self.noise_scale is None else self.noise_scale.state_dict(),
            "env": env.state_dict() if hasattr(env, "state_dict") else None,
            "obs": self.obs.cpu(),
            "seed": self.seed,
        }

    def save(self, path: Path | None = None, with_replay: bool = True) -> Path:
        path = path or self.out / "checkpoints" / f"model_{self.progress.iteration:07d}.pt"
        atomic_save(self.checkpoint(), path)
        if with_replay:
            atomic_save(self.buffer.state_dict(), self.out / "checkpoints" / "replay.pt")
            atomic_save({"checkpoint": path.name}, self.out / "checkpoints" / "latest.pt")
            self._prune(path.parent)
        return path

    def _prune(self, folder: Path) -> None:
        models = sorted(folder.glob("model_*.pt"))
        for old in models[:-self.cfg.checkpoint_keep]:
            old.unlink()

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint: a run folder's `latest.pt` or a model file beside replay.pt."""
        path = resolve_checkpoint(path)
        ckpt = load_checkpoint(path, self.spec)
        self.agent.load_full_state(ckpt["agent"])
        self.progress = Progress(**ckpt["progress"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.sample_rng.set_state(ckpt["rng"]["sample"])
        if self.noise is not None and ckpt.get("noise") is not None:  # white -> pink starts afresh
            self.noise.load_state_dict(ckpt["noise"])
        if self.noise_scale is not None and ckpt.get("noise_scale") is not None:
            self.noise_scale.load_state_dict(ckpt["noise_scale"])
        if self.is_main:                  # other ranks of a group keep their own envs' seeds
            if ckpt["env"] is not None:
                self.env.load_state_dict(ckpt["env"])
            self.obs = ckpt["obs"].to(self.device)
        replay = path.parent / "replay.pt"
        if replay.is_file():
            try:
                self.buffer.load_state_dict(torch.load(replay, weights_only=False))
            except ValueError as exc:
                raise CheckpointError(f"{replay}: {exc}") from exc


def critic_layout(env):
    """What the stored observations hold: the policy's layout, then the critic's extra terms."""
    return getattr(env, "critic_layout", env.pipeline.layout)


@torch.no_grad()
def evaluate(agent: SAC, env, device: torch.device, seed: int = 12345, per_env: bool = False) -> dict:
    """One whole episode per env with the deterministic policy; first episode of each env counts.
    `per_env` adds each env's falls, tracking error and mean (vx, vy, wz) under "envs". Robots with
    a gait clock get `lin_vel_error_stride` besides: the error of the velocity averaged over each
    stride, which a biped's sway within the stride does not add to."""
    obs = torch.as_tensor(env.reset(seed=seed, stagger=False), device=device)
    n = env.num_envs
    ret, fell, err, length = np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros(n)
    stride_err = np.full(n, np.nan)
    velocity = np.zeros((n, 3))
    seen = np.zeros(n, bool)
    gait = GaitTally(n) if per_env and env.spec.gait is not None else None
    for _ in range(env.max_steps):
        result = env.step(agent.act(obs, deterministic=True).cpu().numpy())
        if gait is not None:
            gait.add(env, ~seen & ~result.terminated & ~result.truncated)
        ep = result.info.get("episode")
        if ep is not None:
            first = ~seen[ep["envs"]]
            idx = ep["envs"][first]
            ret[idx], fell[idx] = ep["return"][first], ep["fell"][first]
            err[idx], length[idx] = ep["lin_vel_error"][first], ep["length"][first]
            if "lin_vel_error_stride" in ep:
                stride_err[idx] = ep["lin_vel_error_stride"][first]
            velocity[idx] = ep["mean_velocity"][first]
            seen[idx] = True
        obs = torch.as_tensor(result.obs, device=device)
        if seen.all():
            break
    metrics = {"return": float(ret.mean()), "fall_rate": float(fell.mean()), "falls": int(fell.sum()),
               "lin_vel_error": float(err.mean()), "lin_vel_error_worst_episode": float(err.max()),
               "episode_length_s": float(length.mean() * env.spec.policy_dt)}
    strides = {} if np.isnan(stride_err).all() else {"lin_vel_error_stride": stride_err}
    metrics.update({k: float(np.nanmean(v)) for k, v in strides.items()})
    if per_env:
        metrics["envs"] = {"fell": fell, "lin_vel_error": err, "mean_velocity": velocity, **strides,
                           **({} if gait is None else gait.shares())}
    return metrics


class GaitTally:
    """Per env, the share of steps whose foot contacts matched the gait clock (a robot standing
    still on a clock with stance s matches about s of the time: stepping is what raises it) and
    the share spent on exactly one foot: whether a policy steps, not only whether it moves."""

    def __init__(self, n: int):
        self.match, self.single, self.count = np.zeros(n), np.zeros(n), np.zeros(n)

    def add(self, env, envs: np.ndarray) -> None:
        _, _, feet = env.world.contacts()
        wanted = env.spec.gait.foot_phases(env.clock) < env.spec.gait.stance
        self.match += envs * (feet == wanted).mean(1)
        self.single += envs * (feet.sum(1) == 1)
        self.count += envs

    def shares(self) -> dict[str, np.ndarray]:
        count = np.maximum(self.count, 1)
        return {"clock_match": self.match / count, "single_stance": self.single / count}


def plot_eval_curve(csv_path: Path, png_path: Path) -> None:
    """The reward curve a person looks at: eval return and tracking error against env steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["env_steps"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(steps, [float(r["return"]) for r in rows], marker="o")
    a.set_xlabel("env steps"), a.set_ylabel("eval return (20 s episode)"), a.grid(alpha=0.3)
    b.plot(steps, [float(r["lin_vel_error"]) for r in rows], marker="o", color="C1", label="lin vel error")
    b.plot(steps, [float(r["fall_rate"]) for r in rows], marker="x", color="C3", label="fall rate")
    b.axhline(0.2, ls="--", color="gray", lw=0.8)
    b.set_xlabel("env steps"), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
