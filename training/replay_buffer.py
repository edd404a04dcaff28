"""Replay buffer for vectorized envs with n-step returns built at sample time.

Storage is time-major, one column per env (capacity, num_envs), written in lockstep, so an n-step
window is a run of consecutive rows in one column. Each row stores (s, a, r, s~', d, b) as in
rsl_rl_sac.md Sec. 3.4: s~' is the pre-reset observation when the step timed out, d is "episode
ended" (failure or timeout) and b is "timed out".

Sampling builds Eq. 11 with masks: the window is cut at the first ended step and at the write
position, the return sums gamma^k r over the surviving steps, and the bootstrap weight is
gamma^(k+1) at the last step, times 0 for a failure and 1 for a timeout or an uncut window.

Extra per-step fields (`extras`) ride along for a `rewrite` that recomputes a window's rewards at
sample time (training.relabel: what the step would have earned under another command)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Batch:
    obs: torch.Tensor
    actions: torch.Tensor
    returns: torch.Tensor       # sum_k gamma^k S_k r_{t+k}
    bootstrap: torch.Tensor     # gamma^(k+1) * m at the window's last step
    next_obs: torch.Tensor      # s~ after the window's last step


# (window extras {name: (B, n, dim)}, rewards (B, n), alive (B, n)) -> (rewards, alive, batch edit):
# a rewrite may also shorten windows (alive False from some step on) and the target follows
Rewrite = Callable[[dict, torch.Tensor, torch.Tensor],
                   tuple[torch.Tensor, torch.Tensor, Callable[[Batch], Batch]]]


class ReplayBuffer:
    def __init__(self, capacity: int, num_envs: int, obs_dim: int, act_dim: int,
                 device: str | torch.device = "cpu", extras: dict[str, int] | None = None):
        self.rows = max(1, capacity // num_envs)
        self.num_envs = num_envs
        self.device = torch.device(device)
        shape = (self.rows, num_envs)
        f32 = dict(dtype=torch.float32, device=self.device)
        self.obs = torch.zeros(*shape, obs_dim, **f32)
        self.next_obs = torch.zeros(*shape, obs_dim, **f32)
        self.actions = torch.zeros(*shape, act_dim, **f32)
        self.rewards = torch.zeros(*shape, **f32)
        self.dones = torch.zeros(*shape, dtype=torch.bool, device=self.device)
        self.timeouts = torch.zeros(*shape, dtype=torch.bool, device=self.device)
        self.extras = {name: torch.zeros(*shape, dim, **f32) for name, dim in (extras or {}).items()}
        self.ptr = 0      # next row to write
        self.size = 0     # filled rows

    def __len__(self) -> int:
        return self.size * self.num_envs

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
            next_obs: torch.Tensor, dones: torch.Tensor, timeouts: torch.Tensor,
            extras: dict[str, torch.Tensor] | None = None) -> None:
        """One row: a step of every env. `next_obs` must already be the corrected s~ (Eq. 9)."""
        extras = extras or {}
        if set(extras) != set(self.extras):
            raise ValueError(f"replay extras: got {sorted(extras)}, the buffer holds {sorted(self.extras)}")
        if bool((timeouts & ~dones).any()):
            raise ValueError("a timed-out env must also be flagged done (d includes timeouts)")
        i = self.ptr
        self.obs[i] = obs
        self.actions[i] = actions
        self.rewards[i] = rewards
        self.next_obs[i] = next_obs
        self.dones[i] = dones
        self.timeouts[i] = timeouts
        for name, value in extras.items():
            self.extras[name][i] = value.reshape(self.num_envs, -1)
        self.ptr = (self.ptr + 1) % self.rows
        self.size = min(self.size + 1, self.rows)

    def cut_last(self) -> None:
        """End the newest row's window as a time limit does (bootstrap from its next_obs): the row
        that follows it in storage is not its successor (robot data after a gap or a pause)."""
        if self.size == 0:
            return
        last = (self.ptr - 1) % self.rows
        failed = self.dones[last] & ~self.timeouts[last]      # a fall stays a fall: no bootstrap
        self.timeouts[last] |= ~failed
        self.dones[last] = True

    def sample(self, batch_size: int, n_step: int, gamma: float,
               generator: torch.Generator | None = None, rewrite: Rewrite | None = None) -> Batch:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        dev = self.device
        age = torch.randint(0, self.size, (batch_size,), device=dev, generator=generator)
        env = torch.randint(0, self.num_envs, (batch_size,), device=dev, generator=generator)
        oldest = (self.ptr - self.size) % self.rows
        return self.gather((oldest + age) % self.rows, env, n_step, gamma, rewrite)

    def gather(self, rows: torch.Tensor, env: torch.Tensor, n_step: int, gamma: float,
               rewrite: Rewrite | None = None) -> Batch:
        """n-step samples starting at (row, env); rows must be filled."""
        dev = self.device
        k = torch.arange(n_step, device=dev)
        idx = (rows.unsqueeze(1) + k) % self.rows                       # (B, n)
        age = (rows - (self.ptr - self.size)) % self.rows               # 0 = oldest row
        in_buffer = (age.unsqueeze(1) + k) < self.size                  # never past the write head
        envs = env.unsqueeze(1).expand_as(idx)
        done = self.dones[idx, envs] & in_buffer
        # S_k: no step before k ended the episode, and step k exists.
        ended_before = torch.cumsum(done.int(), 1) - done.int()
        alive = (ended_before == 0) & in_buffer
        discounts = gamma ** k.float()
        rewards, edit = self.rewards[idx, envs], None
        if rewrite is not None:
            window = {name: x[idx, envs] for name, x in self.extras.items()}
            rewards, alive, edit = rewrite(window, rewards, alive)
        returns = (rewards * alive * discounts).sum(1)
        last = alive.sum(1) - 1                                          # effective n - 1
        last_row = idx.gather(1, last.unsqueeze(1)).squeeze(1)
        failed = self.dones[last_row, env] & ~self.timeouts[last_row, env]
        bootstrap = gamma ** (last + 1).float() * (~failed).float()
        batch = Batch(obs=self.obs[rows, env], actions=self.actions[rows, env], returns=returns,
                      bootstrap=bootstrap, next_obs=self.next_obs[last_row, env])
        return batch if edit is None else edit(batch)

    def state_dict(self) -> dict:
        keep = self.size
        order = (torch.arange(keep) + (self.ptr - keep)) % self.rows  # oldest first
        return {"rows": self.rows, "num_envs": self.num_envs,
                **{name: getattr(self, name)[order].cpu() for name in self._fields()},
                "extras": {name: x[order].cpu() for name, x in self.extras.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["num_envs"] != self.num_envs:
            raise ValueError(f"replay buffer was saved with {state['num_envs']} envs, "
                             f"this run has {self.num_envs}")
        saved = state.get("extras", {})
        if set(saved) != set(self.extras):
            raise ValueError(f"replay buffer was saved with extra fields {sorted(saved)}, this run "
                             f"needs {sorted(self.extras)} (command_relabel changed?): resume from "
                             f"the model checkpoint without its replay.pt")
        n = min(len(state["rewards"]), self.rows)
        for name in self._fields():
            getattr(self, name)[:n] = state[name][-n:].to(self.device)
        for name, x in self.extras.items():
            x[:n] = saved[name][-n:].to(self.device)
        self.size, self.ptr = n, n % self.rows

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("obs", "next_obs", "actions", "rewards", "dones", "timeouts")
