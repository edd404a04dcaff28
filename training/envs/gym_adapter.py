"""Gymnasium environments behind the VecEnv protocol, for the learning test and the SB3 benchmark.

Envs are stepped one after another and reset by hand, so the pre-reset observation of a finished
episode is returned as `final_obs` exactly as the MuJoCo and IsaacLab backends return it."""
from __future__ import annotations

import pickle

import numpy as np

from training.envs.base import StepResult


class GymVecEnv:
    def __init__(self, env_id: str, num_envs: int, seed: int = 0, **kwargs):
        import gymnasium as gym

        self.envs = [gym.make(env_id, **kwargs) for _ in range(num_envs)]
        self.num_envs = num_envs
        space = self.envs[0].action_space
        self.obs_dim = int(np.prod(self.envs[0].observation_space.shape))
        self.action_low = np.asarray(space.low, dtype=np.float64)
        self.action_high = np.asarray(space.high, dtype=np.float64)
        self.seed = seed
        self.episode_return = np.zeros(num_envs)
        self.episode_length = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        base = self.seed if seed is None else seed
        self.episode_return[:] = 0
        self.episode_length[:] = 0
        return np.stack([e.reset(seed=base + i)[0] for i, e in enumerate(self.envs)]).astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        n = self.num_envs
        obs = np.zeros((n, self.obs_dim), dtype=np.float32)
        final = np.zeros_like(obs)
        reward, term, trunc = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        for i, env in enumerate(self.envs):
            o, r, te, tr, _ = env.step(actions[i])
            reward[i], term[i], trunc[i] = r, te, tr and not te
            final[i] = obs[i] = o
            if te or tr:
                obs[i] = env.reset()[0]
        self.episode_return += reward
        self.episode_length += 1
        info = {}
        done = np.flatnonzero(term | trunc)
        if len(done):
            info["episode"] = {"envs": done, "return": self.episode_return[done].copy(),
                               "length": self.episode_length[done].copy(), "fell": term[done].copy()}
            self.episode_return[done] = 0
            self.episode_length[done] = 0
        return StepResult(obs=obs, reward=reward, terminated=term, truncated=trunc, final_obs=final,
                          info=info)

    def state_dict(self) -> dict:
        """The envs themselves (simulator state, RNGs, step counters), pickled: enough for an exact
        resume of envs that pickle, such as the classic-control ones used in tests."""
        return {"envs": [pickle.dumps(e) for e in self.envs],
                "episode_return": self.episode_return.copy(), "episode_length": self.episode_length.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.envs = [pickle.loads(b) for b in state["envs"]]
        self.episode_return[:] = state["episode_return"]
        self.episode_length[:] = state["episode_length"]

    def close(self) -> None:
        for e in self.envs:
            e.close()
