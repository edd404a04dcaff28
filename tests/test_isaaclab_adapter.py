"""The IsaacLab adapter against a stand-in that follows ManagerBasedRLEnv's API and step order
(IsaacLab cannot run here: no GPU, and 3.x needs Python 3.12)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from deploy.config import ConfigError
from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec
from training.envs.base import corrected_next_obs
from training.envs.isaaclab import IsaacLabVecEnv, with_pre_reset_obs


class StandInManagerBasedRLEnv:
    """The parts of isaaclab.envs.ManagerBasedRLEnv the adapter touches, in IsaacLab's step order:
    physics -> episode_length += 1 -> terminations -> rewards -> _reset_idx(finished) -> obs."""

    def __init__(self, spec: RobotSpec, num_envs: int = 3, max_len: int = 4):
        layout = ObservationPipeline(spec).layout
        self.num_envs, self.max_len, self.dim = num_envs, max_len, layout.dim
        self.state = torch.zeros(num_envs)
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        self.scene = {"robot": SimpleNamespace(data=SimpleNamespace(joint_names=list(spec.joint_names)))}
        self.action_manager = SimpleNamespace(get_term=lambda name: SimpleNamespace(
            cfg=SimpleNamespace(scale=spec.action_scale)))
        self.observation_manager = SimpleNamespace(
            active_terms={"policy": layout.names},
            group_obs_term_dim={"policy": [(e.dim,) for e in layout.entries]},
            compute=lambda: {"policy": self.state[:, None].repeat(1, self.dim)})

    def reset(self):
        self._reset_idx(torch.arange(self.num_envs))
        return self.observation_manager.compute(), {}

    def step(self, action):
        self.state += 1.0
        self.episode_length_buf += 1
        terminated = self.state == 2.0                              # env-specific failure
        time_outs = self.episode_length_buf >= self.max_len
        reward = torch.ones(self.num_envs)
        done = torch.nonzero(terminated | time_outs).flatten()
        if len(done):
            self._reset_idx(done)
        return self.observation_manager.compute(), reward, terminated, time_outs, {"log": {}}

    def _reset_idx(self, env_ids):
        self.state[env_ids] = torch.tensor([-10.0, 0.0, 0.0])[env_ids]   # env 0 never fails
        self.episode_length_buf[env_ids] = 0

    def close(self):
        pass


def test_pre_reset_observation_is_returned_for_timed_out_envs():
    spec = RobotSpec.load("go2", check_mjcf=False)
    env = IsaacLabVecEnv(with_pre_reset_obs(StandInManagerBasedRLEnv)(spec), spec)
    env.reset()
    results = [env.step(torch.zeros(3, 12)) for _ in range(4)]
    r = results[1]                          # envs 1, 2 reach state 2 -> failure at step 2
    assert r.terminated.tolist() == [False, True, True]
    last = results[3]                       # env 0 times out at step 4 with state -6
    assert last.truncated.tolist() == [True, False, False]
    assert float(last.final_obs[0, 0]) == -6.0     # the state it reached, not the reset one
    assert float(last.obs[0, 0]) == -10.0
    assert float(corrected_next_obs(last)[0, 0]) == -6.0


def test_joint_order_mismatch_is_refused_by_name():
    spec = RobotSpec.load("go2", check_mjcf=False)
    raw = with_pre_reset_obs(StandInManagerBasedRLEnv)(spec)
    names = raw.scene["robot"].data.joint_names
    names[0], names[1] = names[1], names[0]
    with pytest.raises(ConfigError, match=r"joint order differs at index 0: IsaacLab \['FR_hip_joint'\]"):
        IsaacLabVecEnv(raw, spec)


def test_observation_layout_mismatch_is_refused():
    spec = RobotSpec.load("go2", check_mjcf=False)
    raw = with_pre_reset_obs(StandInManagerBasedRLEnv)(spec)
    raw.observation_manager.active_terms["policy"] = raw.observation_manager.active_terms["policy"][1:]
    with pytest.raises(ConfigError, match="IsaacLab policy observations"):
        IsaacLabVecEnv(raw, spec)


def test_action_scale_mismatch_is_refused():
    spec = RobotSpec.load("go2", check_mjcf=False)
    raw = with_pre_reset_obs(StandInManagerBasedRLEnv)(spec)
    raw.action_manager = SimpleNamespace(get_term=lambda n: SimpleNamespace(cfg=SimpleNamespace(scale=0.5)))
    with pytest.raises(ConfigError, match="IsaacLab scales actions by 0.5"):
        IsaacLabVecEnv(raw, spec)
