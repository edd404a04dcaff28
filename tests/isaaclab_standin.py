"""A stand-in for the parts of IsaacLab's ManagerBasedRLEnv the adapter touches (IsaacLab cannot
run here: no GPU, no Isaac Sim). Each class stands for the IsaacLab class of the same name, with its
parameter names; tests/test_isaaclab_source.py checks every member against the USES that
IsaacLab's own source is checked against, so the stand-in cannot drift from IsaacLab.

Step order as in IsaacLab: physics -> episode_length += 1 -> terminations -> rewards ->
_reset_idx(finished) -> observations."""
from __future__ import annotations

import torch

from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec
from training.envs.isaaclab import TERM_TO_LAYOUT

LAYOUT_TO_TERM = {v: k for k, v in TERM_TO_LAYOUT.items()}


class ArticulationData:
    def __init__(self, joint_names: list[str]):
        self.joint_names = joint_names


class Articulation:
    def __init__(self, joint_names: list[str]):
        self.data = ArticulationData(joint_names)


class InteractiveScene:
    def __init__(self, assets: dict):
        self._assets = assets

    def __getitem__(self, key: str):
        return self._assets[key]


class JointPositionActionCfg:
    def __init__(self, scale: float):
        self.scale = scale


class ActionTerm:
    def __init__(self, cfg: JointPositionActionCfg):
        self.cfg = cfg


class ActionManager:
    def __init__(self, terms: dict[str, ActionTerm]):
        self._terms = terms

    def get_term(self, name: str) -> ActionTerm:
        return self._terms[name]


class ObservationManager:
    def __init__(self, env: "ManagerBasedRLEnv", terms: list[str], dims: list[tuple[int, ...]]):
        self._env, self.active_terms, self.group_obs_term_dim = env, {"policy": terms}, {"policy": dims}

    def compute(self, update_history: bool = False) -> dict[str, torch.Tensor]:
        dim = sum(d[0] for d in self.group_obs_term_dim["policy"])
        return {"policy": self._env.state[:, None].repeat(1, dim)}


class ManagerBasedRLEnv:
    """Three envs: env 0 never fails (reset to state -10), envs 1 and 2 fail on reaching state 2."""

    def __init__(self, cfg: RobotSpec, num_envs: int = 3, max_len: int = 4):
        layout = ObservationPipeline(cfg).layout
        self.num_envs, self.max_len = num_envs, max_len
        self.state = torch.zeros(num_envs)
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        self.extras: dict = {}
        self.scene = InteractiveScene({"robot": Articulation(list(cfg.joint_names))})
        term = ActionTerm(JointPositionActionCfg(cfg.action_scale))
        self.action_manager = ActionManager({"joint_pos": term})
        terms = [LAYOUT_TO_TERM.get(n, n) for n in layout.names]       # IsaacLab's term names
        self.observation_manager = ObservationManager(self, terms, [(e.dim,) for e in layout.entries])

    def reset(self, seed: int | None = None, env_ids=None, options=None):
        self._reset_idx(torch.arange(self.num_envs))
        return self.observation_manager.compute(), self.extras

    def step(self, action: torch.Tensor):
        self.state += 1.0
        self.episode_length_buf += 1
        terminated = self.state == 2.0                              # env-specific failure
        time_outs = self.episode_length_buf >= self.max_len
        reward = torch.ones(self.num_envs)
        done = torch.nonzero(terminated | time_outs).flatten()
        if len(done):
            self._reset_idx(done)
        return self.observation_manager.compute(), reward, terminated, time_outs, self.extras

    def _reset_idx(self, env_ids: torch.Tensor):
        self.state[env_ids] = torch.tensor([-10.0, 0.0, 0.0])[env_ids]
        self.episode_length_buf[env_ids] = 0
        self.extras["log"] = {"Episode_Termination/base_contact": float(len(env_ids))}

    def close(self):
        pass
