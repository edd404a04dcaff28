"""Fine-tuning on robot data: the pretrained agent continues the same SAC updates (training.learner)
on transitions the robot logged (deploy.replay), mixed with prior simulation data on a schedule.

What it keeps from pretraining, and why:
- everything the update needs (actor, critics, targets, temperature, optimizer moments): a cold
  optimizer or temperature would take large steps away from a policy that already walks;
- the observation normalizers, frozen: the running bundle bakes them in, and a moving normalizer
  would change what every stored observation means to the networks.

The robot replay is read from a persisted cursor. A checkpoint holds the agent, the cursor and the
ranges of robot records consumed, written atomically in one file, so after a SIGKILL the learner
resumes at its last checkpoint: the records after its cursor are read again and counted once, the
buffer is rebuilt from the records up to it (not counted again), and no record is skipped."""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from deploy.observations import ObservationPipeline, critic_pipeline
from deploy.replay import Cursor, ReplayReader
from training.checkpoint import atomic_save, load_checkpoint, resolve_checkpoint
from training.learner import Learner, Source
from training.replay_buffer import ReplayBuffer
from training.sac import SAC


PRIORS = ("nominal", "training", "none")


class FinetuneError(ValueError):
    """Bad fine-tuning input: the message names the argument, record or file."""


# ---- the prior-data schedule -----------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """A fraction that moves linearly from `start` to `end` over the first `steps` robot steps."""
    start: float
    end: float
    steps: int

    @classmethod
    def parse(cls, text: str, name: str = "--prior-fraction") -> "Schedule":
        """`F` (constant) or `F0->F1@STEPS` (linear over that many robot transitions)."""
        m = re.fullmatch(r"\s*([^-@>\s]+)\s*(?:->\s*([^@\s]+)\s*@\s*(\S+))?\s*", text)
        allowed = "F (a constant fraction in [0, 1]) or F0->F1@STEPS, e.g. 0.5->0@20000"
        if not m:
            raise FinetuneError(f"{name}: '{text}' is not {allowed}")
        try:
            start = float(m.group(1))
            end = float(m.group(2)) if m.group(2) is not None else start
            steps = int(m.group(3)) if m.group(3) is not None else 0
        except ValueError as exc:
            raise FinetuneError(f"{name}: '{text}' is not {allowed}") from exc
        if not all(math.isfinite(f) and 0.0 <= f <= 1.0 for f in (start, end)):
            raise FinetuneError(f"{name}: fractions must be in [0, 1], got '{text}'")
        if steps < 0 or (m.group(2) is not None and steps == 0):
            raise FinetuneError(f"{name}: STEPS must be a positive integer, got '{text}'")
        return cls(start, end, steps)

    def __call__(self, robot_steps: int) -> float:
        if self.steps == 0 or robot_steps >= self.steps:
            return self.end
        return self.start + (self.end - self.start) * robot_steps / self.steps

    def __str__(self) -> str:
        return f"{self.start:g}" if self.steps == 0 else f"{self.start:g}->{self.end:g}@{self.steps}"


# ---- robot data ---------------------------------------------------------------------------------
@dataclass
class Consumed:
    """Robot records taken as new data: merged [session, first_seq, last_seq] ranges."""
    ranges: list[list[int]] = field(default_factory=list)

    def add(self, session: np.ndarray, seq: np.ndarray) -> None:
        for s, q in zip(session.tolist(), seq.tolist()):
            last = self.ranges[-1] if self.ranges else None
            if last is not None and last[0] == s and last[2] + 1 == q:
                last[2] = q
            elif last is not None and (s, q) <= (last[0], last[2]):
                raise FinetuneError(f"record (session {s}, seq {q}) consumed again after "
                                    f"(session {last[0]}, seq {last[2]})")
            else:
                self.ranges.append([s, q, q])

    @property
    def count(self) -> int:
        return sum(last - first + 1 for _, first, last in self.ranges)


LOGGED_CRITIC_TERMS = ("base_lin_vel",)     # critic terms a robot record holds, by field name


class RobotData:
    """The robot replay directory as one single-column ReplayBuffer, tailed from a cursor.

    The learner trains on the action the robot applied (after the safety filter), which is what
    produced the next state; records written before that field existed fall back to the action
    the policy chose. A gap (another session, a sequence jump, a dropped record) cuts the n-step
    window as a time limit does: bootstrap from the last record's own next observation.

    A critic with its own terms (the spec's critic_observations, `privileged`) gets them from the
    records: base_lin_vel is each record's velocity estimate, taken after its step, so it goes with
    next_obs, and the record before it (when contiguous) gives the one for obs; a segment's first
    record has no record before it and uses its own (one policy tick apart)."""

    def __init__(self, directory: str | Path, layout_hash: str | None, capacity: int, obs_dim: int,
                 act_dim: int, device: torch.device, privileged: ObservationPipeline | None = None):
        self.reader = ReplayReader(Path(directory), layout_hash=layout_hash)
        self.privileged = privileged
        for name in privileged.layout.names if privileged else ():
            if name not in LOGGED_CRITIC_TERMS:
                raise FinetuneError(f"critic observation term '{name}' is not in robot replay "
                                    f"logs (they hold {', '.join(LOGGED_CRITIC_TERMS)})")
        self.obs_dim = obs_dim
        extra = 0 if self.privileged is None else self.privileged.dim
        self.buffer = ReplayBuffer(capacity, 1, obs_dim + extra, act_dim, device)
        self.cursor = Cursor()
        self.consumed = Consumed()
        self._tail: tuple[int, int, int] | None = None    # (session, seq, dropped) of the newest row
        self._tail_terms: np.ndarray | None = None        # the newest row's critic terms (next_obs)

    def poll(self, until: Cursor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Add the records after the cursor (up to `until` when rebuilding after a restart); the
        (session, seq) of each record added."""
        data = self.reader.load(after=self.cursor)
        if until is not None:
            data = _rows(data, int(((data.session < until.session) | (
                (data.session == until.session) & (data.seq <= until.seq))).sum()))
        if len(data) == 0:
            return data.session, data.seq
        self._check(data)
        actions = data.fields.get("applied_action", data.actions)
        dropped = data.fields["dropped"]
        first = (int(data.session[0]), int(data.seq[0]), int(dropped[0]))
        if self._tail is not None and first != (self._tail[0], self._tail[1] + 1, self._tail[2]):
            self.buffer.cut_last()
        cut = ~np.r_[data.contiguous[1:], True]          # row i's successor is not row i + 1
        cut[-1] = False                                  # not known yet: judged by the next poll
        # a copy: a one-record field view keeps the packed record's stride, which torch refuses
        tensor = lambda x: torch.as_tensor(np.array(x), device=self.buffer.device)  # noqa: E731
        obs, nxt = data.obs, data.next_obs
        if self.privileged is not None:
            obs, nxt = self._with_critic_terms(data, first)
        obs, act, rew, nxt = (tensor(x) for x in (obs, actions, data.rewards, nxt))
        truncated = (data.truncated | cut) & ~data.terminated
        done, timeout = tensor(data.terminated | truncated), tensor(truncated)
        for i in range(len(data)):
            self.buffer.add(obs[i:i + 1], act[i:i + 1], rew[i:i + 1], nxt[i:i + 1], done[i:i + 1],
                            timeout[i:i + 1])
        self._tail = (int(data.session[-1]), int(data.seq[-1]), int(dropped[-1]))
        self.cursor = Cursor(*self._tail[:2])
        return data.session, data.seq

    def _with_critic_terms(self, data, first: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """obs and next_obs with the critic's terms appended (see the class docstring)."""
        after = self.privileged.from_values(data.fields)
        before = np.concatenate([after[:1], after[:-1]])
        follows = np.r_[False, data.contiguous[1:]]
        before[~follows] = after[~follows]
        if self._tail is not None and first == (self._tail[0], self._tail[1] + 1, self._tail[2]):
            before[0] = self._tail_terms
        self._tail_terms = after[-1].copy()
        return np.concatenate([data.obs, before], 1), np.concatenate([data.next_obs, after], 1)

    def take_new(self) -> int:
        """poll(), counting what it added as consumed; the number of new transitions."""
        session, seq = self.poll()
        self.consumed.add(session, seq)
        return len(seq)

    def _check(self, data) -> None:
        want = self.obs_dim
        if data.obs.shape[1] != want:
            raise FinetuneError(f"{self.reader.directory}: session {data.session[0]} logs "
                                f"{data.obs.shape[1]}-dim observations, the policy takes {want} "
                                f"(robot {data.layout.robot}, another observation layout)")
        bad = ~np.isfinite(data.rewards)
        if bad.any():
            i = int(np.argmax(bad))
            raise FinetuneError(
                f"{self.reader.directory}: record (session {data.session[i]}, seq {data.seq[i]}) has "
                f"no finite reward: it was logged without the task's reward pieces (a recording "
                f"from before the robot-side reward, or a controller without a task)")
        for name in ("obs", "next_obs"):
            finite = np.isfinite(data.fields[name]).all(1)
            if not finite.all():
                i = int(np.argmin(finite))
                raise FinetuneError(f"{self.reader.directory}: record (session {data.session[i]}, "
                                    f"seq {data.seq[i]}): non-finite {name}")

    def sample(self, size: int, generator: torch.Generator, n_step: int, gamma: float):
        return self.buffer.sample(size, n_step, gamma, generator)


def _rows(data, n: int):
    """The first n rows of a ReplayArrays (records come in cursor order)."""
    return replace(data, obs=data.obs[:n], actions=data.actions[:n], rewards=data.rewards[:n],
                   next_obs=data.next_obs[:n], terminated=data.terminated[:n],
                   truncated=data.truncated[:n], session=data.session[:n], seq=data.seq[:n],
                   contiguous=data.contiguous[:n], fields={k: v[:n] for k, v in data.fields.items()})


# ---- prior simulation data ---------------------------------------------------------------------
@torch.no_grad()
def prior_rollout(agent: SAC, spec, task: str, steps: int, seed: int, device: torch.device,
                  num_envs: int = 16, randomize: bool = False) -> ReplayBuffer:
    """`steps` transitions of the pretrained policy, exploring as in training, in MuJoCo: nominal,
    or with `randomize` the training's domain randomization and pushes. Data from where the policy
    is known to work, which keeps the updates on a few minutes of one robot from unlearning what
    the parent could do: with the randomized prior also the robustness it was trained for.
    Deterministic for its seed, so a resumed learner regenerates the same prior instead of
    storing it."""
    from training.envs.base import corrected_next_obs
    from training.envs.velocity import TaskConfig, VelocityEnv

    env = VelocityEnv(spec, TaskConfig.load(task, spec), num_envs, seed=seed, threads=1,
                      randomize=randomize)
    buffer = ReplayBuffer(max(steps, num_envs), num_envs, env.obs_dim, spec.num_joints, device)
    obs = torch.as_tensor(env.reset(seed=seed), device=device)
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    for _ in range(max(1, steps // num_envs)):
        action = agent.act(obs)
        r = env.step(action.cpu().numpy())
        done = torch.as_tensor(r.terminated | r.truncated, device=device)
        buffer.add(obs, action, torch.as_tensor(r.reward, dtype=torch.float32, device=device),
                   torch.as_tensor(corrected_next_obs(r), device=device), done,
                   torch.as_tensor(r.truncated, device=device))
        obs = torch.as_tensor(r.obs, device=device)
    torch.set_rng_state(state)
    env.close()
    return buffer


# ---- the fine-tuner ------------------------------------------------------------------------------
@dataclass
class FinetuneOptions:
    checkpoint: Path                 # the pretrained parent (model file or a run's latest.pt)
    replay: Path                     # the robot's replay directory
    out: Path
    utd: float = 1.0                 # updates per new robot transition
    every: int = 1000                # updates between checkpoints
    prior: str = "nominal"           # the parent rolled out in MuJoCo: nominal, or training (its
                                     # domain randomization); none
    prior_steps: int = 20_000
    prior_fraction: Schedule = Schedule(0.5, 0.0, 20_000)
    seed: int = 0
    max_updates: int | None = None   # stop after this many fine-tuning updates
    idle_exit_s: float | None = None  # stop when no new robot data came for this long
    poll_s: float = 0.5
    chunk: int = 50                  # updates between polls of the replay
    device: str = "cpu"
    lr_scale: float = 1.0            # x every learning rate of the parent's config
    critic_warmup: int = 0           # first updates that move only the critics
    promote_every: int | None = None  # updates between promotion attempts (export, gate, promote)
    gate_seeds: tuple[int, ...] = (0, 1, 2)
    gate_scenarios: Path | None = None
    sign_key: str | None = None

    def check(self) -> None:
        if not (math.isfinite(self.utd) and self.utd > 0):
            raise FinetuneError(f"--utd {self.utd}: must be finite and > 0")
        if self.critic_warmup < 0:
            raise FinetuneError(f"--critic-warmup {self.critic_warmup}: must be >= 0")
        if not (math.isfinite(self.lr_scale) and 0 <= self.lr_scale <= 10):
            raise FinetuneError(f"--lr-scale {self.lr_scale}: must be a number in [0, 10]")
        for name in ("every", "chunk", "promote_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise FinetuneError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.promote_every is not None and len(self.gate_seeds) < 3:
            raise FinetuneError(f"--gate-seeds {','.join(map(str, self.gate_seeds))}: a promotion "
                                f"needs a verdict over 3 or more seeds")
        if self.prior not in PRIORS:
            raise FinetuneError(f"--prior '{self.prior}': allowed: {', '.join(PRIORS)}")
        if self.prior_steps < 1 and self.prior != "none":
            raise FinetuneError(f"--prior-steps {self.prior_steps}: must be >= 1")
        if not Path(self.replay).is_dir():
            raise FinetuneError(f"--replay {self.replay}: not a directory")



class FineTuner:
    """Warm-starts from the parent checkpoint (or resumes its own run in `out`), tails the robot
    replay and updates at the ratio the data allows; checkpoints carry their lineage."""

    KEEP = 3    # model files kept besides latest.pt

    def __init__(self, opts: FinetuneOptions, log=print):
        from training.export import load_agent

        opts.check()
        self.opts, self.log = opts, log
        self.device = torch.device(opts.device)
        self.parent_path = resolve_checkpoint(opts.checkpoint)
        self.parent, self.spec, self.agent, _ = load_agent(self.parent_path)
        self.agent.load_full_state(self.parent["agent"])      # optimizer moments, targets, alpha
        self.agent.train().to(self.device)
        self.parent_sha = _sha256(self.parent_path)
        cfg = self.parent["config"]
        self.n_step, self.gamma = int(cfg["sac"]["n_step"]), float(cfg["sac"]["gamma"])
        obs_dim = int(self.parent["agent"]["model"]["actor.trunk.0.weight"].shape[1])
        layout_hash = None   # the reader refuses mixed layouts; the obs dim is checked on load
        self.robot = RobotData(opts.replay, layout_hash, int(cfg["buffer_size"]), obs_dim,
                               self.spec.num_joints, self.device, critic_pipeline(self.spec))
        self.generator = torch.Generator(device=self.device).manual_seed(opts.seed)
        sources = [Source("robot", self._sample_robot, lambda: 1.0 - self._prior_weight())]
        self.prior = None
        if opts.prior != "none":
            self.log(f"prior: rolling the parent out in {opts.prior} MuJoCo for {opts.prior_steps} steps")
            self.prior = prior_rollout(self.agent, self.spec, self.parent["task"], opts.prior_steps,
                                       opts.seed, self.device, randomize=opts.prior == "training")
            sources.insert(0, Source("prior", self._sample_prior, self._prior_weight))
        self.learner = Learner(self.agent, sources, int(cfg["batch_size"]), self.generator,
                               utd=opts.utd)
        self.min_robot = int(cfg["batch_size"])
        self.ckpt_dir = Path(opts.out) / "checkpoints"
        self.promoter = None
        if opts.promote_every is not None:
            from training.promote import Promoter
            self.promoter = Promoter(self.spec.name, opts.out, seeds=opts.gate_seeds,
                                     scenarios=opts.gate_scenarios, sign_key=opts.sign_key, log=log)
        latest = self.ckpt_dir / "latest.pt"
        if latest.is_file():
            self._resume(latest)
        self._set_rates()

    def _set_rates(self) -> None:
        """The parent's learning rates times lr_scale (loading a state set the config's own); the
        actor's and the temperature's at 0 during the critic warm-up: the critics, fitted to the
        simulator's rewards and states, first fit the robot's before the actor follows them."""
        warm = self.learner.updates < self.opts.critic_warmup
        for key, (opt, lr) in self.agent.optimizers().items():
            frozen = warm and key in ("actor_opt", "alpha_opt")
            for group in opt.param_groups:
                group["lr"] = 0.0 if frozen else lr * self.opts.lr_scale

    # ---- data ---------------------------------------------------------------------------------
    def _prior_weight(self) -> float:
        return 0.0 if self.prior is None else self.opts.prior_fraction(self.robot.consumed.count)

    def _sample_robot(self, size: int, generator: torch.Generator):
        return self.robot.sample(size, generator, self.n_step, self.gamma)

    def _sample_prior(self, size: int, generator: torch.Generator):
        return self.prior.sample(size, self.n_step, self.gamma, generator)

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> str:
        """Until a stop signal, max_updates or idle_exit_s; returns why it stopped."""
        from torch.utils.tensorboard import SummaryWriter

        from training.runner import StopRequest

        opts = self.opts
        tb = SummaryWriter(str(Path(opts.out) / "tb"))
        last_data = time.monotonic()
        why = "stopped"
        try:
            with StopRequest() as stop:
                while stop.signal is None:
                    if self.robot.take_new():
                        last_data = time.monotonic()
                    due = self._due()
                    if opts.max_updates is not None:
                        due = min(due, opts.max_updates - self.learner.updates)
                        if due <= 0 and self.learner.updates >= opts.max_updates:
                            why = "max_updates"
                            break
                    if due == 0:
                        if opts.idle_exit_s is not None and time.monotonic() - last_data > opts.idle_exit_s:
                            why = "idle"
                            break
                        time.sleep(opts.poll_s)
                        continue
                    self._update(min(due, opts.chunk), tb)
                why = stop.signal or why
        finally:
            self.save()
            tb.close()
        self.log(f"finetune: {why} after {self.learner.updates} updates on "
                 f"{self.robot.consumed.count} robot transitions; checkpoint {self.ckpt_dir / 'latest.pt'}")
        return why

    def _due(self) -> int:
        if self.robot.consumed.count < self.min_robot:
            return 0
        return self.learner.due(self.robot.consumed.count)

    def _update(self, n: int, tb) -> None:
        before = self.learner.updates
        if before < self.opts.critic_warmup:
            n = min(n, self.opts.critic_warmup - before)     # the rates change at its end
        self._set_rates()
        t = time.perf_counter()
        logs = self.learner.update(n)
        rate = n / max(time.perf_counter() - t, 1e-9)
        u = self.learner.updates
        for k, v in logs.items():
            tb.add_scalar(k, v, u)
        tb.add_scalar("finetune/robot_transitions", self.robot.consumed.count, u)
        tb.add_scalar("finetune/prior_fraction", self._prior_weight(), u)
        tb.add_scalar("perf/updates_per_s", rate, u)
        promote = self.promoter is not None and \
            u // self.opts.promote_every > before // self.opts.promote_every
        if promote:
            self.promoter(self.save(), u)
        if u // self.opts.every > before // self.opts.every:
            if not promote:
                self.save()
            self.log(f"finetune: updates {u} robot transitions {self.robot.consumed.count} prior "
                     f"{self._prior_weight():.2f} updates/s {rate:.0f} critic loss "
                     f"{logs.get('loss/critic', float('nan')):.4g}")

    # ---- persistence --------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        p = self.parent
        progress = dict(p.get("progress", {}))
        progress["updates"] = int(progress.get("updates", 0)) + self.learner.updates
        return {
            **{k: p[k] for k in ("format", "robot", "task", "config", "obs_layout", "action_bounds")},
            "seed": p.get("seed"),
            "agent": self.agent.full_state(),
            "progress": progress,
            "lineage": {
                "parent": {"checkpoint": str(self.parent_path.resolve()), "sha256": self.parent_sha,
                           "lineage": p.get("lineage")},
                "robot_data": {"replay": str(Path(self.opts.replay).resolve()),
                               "ranges": [list(r) for r in self.robot.consumed.ranges],
                               "transitions": self.robot.consumed.count},
                "prior": {"source": self.opts.prior, "steps": self.opts.prior_steps,
                          "seed": self.opts.seed, "fraction": str(self.opts.prior_fraction),
                          "drawn": self.learner.drawn.get("prior", 0)},
                "updates": self.learner.updates, "utd": self.opts.utd,
                "lr_scale": self.opts.lr_scale, "critic_warmup": self.opts.critic_warmup,
            },
            "finetune": {"cursor": list(self.robot.cursor), "learner": self.learner.state_dict(),
                         "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()},
        }

    def save(self) -> Path:
        path = self.ckpt_dir / f"model_{self.learner.updates:09d}.pt"
        atomic_save(self.checkpoint(), path)
        atomic_save({"checkpoint": path.name}, self.ckpt_dir / "latest.pt")
        for old in sorted(self.ckpt_dir.glob("model_*.pt"))[:-self.KEEP]:
            old.unlink()
        return path

    def _resume(self, latest: Path) -> None:
        path = resolve_checkpoint(latest)
        ckpt = load_checkpoint(path, self.spec)
        lineage = ckpt.get("lineage") or {}
        if lineage.get("parent", {}).get("sha256") != self.parent_sha:
            raise FinetuneError(f"{path}: this fine-tuning run descends from another parent "
                                f"checkpoint than {self.parent_path}; use another --out")
        self.agent.load_full_state(ckpt["agent"])
        state = ckpt["finetune"]
        self.learner.load_state_dict(state["learner"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        cursor = Cursor(*state["cursor"])
        self.robot.poll(until=cursor)               # the buffer as it was; not counted again
        self.robot.cursor = cursor
        self.robot.consumed = Consumed([list(r) for r in lineage["robot_data"]["ranges"]])
        self.log(f"finetune: resumed {path} at {self.learner.updates} updates, robot cursor "
                 f"(session {cursor.session}, seq {cursor.seq})")


def _sha256(path: Path) -> str:
    from deploy.bundle import sha256_file
    return sha256_file(path)
