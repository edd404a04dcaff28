"""The vectorized environment protocol every simulation backend implements (MuJoCo here,
IsaacLab on a GPU, Gymnasium for benchmarks).

Timeouts are part of the contract (rsl_rl_sac.md Sec. 3.4): `step` returns the observation after
any reset *and* the pre-reset observation of every env that finished, so the learner can bootstrap
a truncated episode from the state it really reached."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class StepResult:
    obs: np.ndarray          # (N, D) next observation; first of a new episode where one ended
    reward: np.ndarray       # (N,)
    terminated: np.ndarray   # (N,) bool, the episode failed (no bootstrap)
    truncated: np.ndarray    # (N,) bool, the episode hit its time limit (bootstrap)
    final_obs: np.ndarray    # (N, D) pre-reset observation where an episode ended, else == obs
    info: dict = field(default_factory=dict)  # episode statistics, reward terms


class VecEnv(Protocol):
    num_envs: int
    obs_dim: int
    action_low: np.ndarray    # (A,) bounds of the env action the actor is squashed into
    action_high: np.ndarray

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> StepResult: ...

    def close(self) -> None: ...


def corrected_next_obs(result: StepResult):
    """Eq. 9: the pre-reset observation where an episode ended, the plain next one elsewhere
    (numpy arrays from CPU backends, torch tensors from GPU ones)."""
    ended = (result.terminated | result.truncated)[:, None]
    if isinstance(result.obs, np.ndarray):
        return np.where(ended, result.final_obs, result.obs)
    import torch
    return torch.where(ended, result.final_obs, result.obs)
