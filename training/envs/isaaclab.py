"""IsaacLab behind the VecEnv protocol (GPU workstation only; an optional extra).

Thin on purpose: IsaacLab's manager-based velocity tasks already implement the task. This adapter
adds the one thing the learner needs that IsaacLab 2.x does not expose, the pre-reset observation of
finished envs (rsl_rl_sac.md Sec. 3.4), by computing observations in `_reset_idx` before the reset;
and it refuses an env whose joint order, action scale or observation layout differs from the
robot spec, so a policy trained there deploys through the same contracts as one trained in MuJoCo.

API used (IsaacLab 2.x `isaaclab.envs.ManagerBasedRLEnv`): `step(action)` returns
(obs dict, reward, terminated, time_outs, extras); `_reset_idx(env_ids)`;
`observation_manager.compute()` -> {group: tensor}; `observation_manager.active_terms[group]` and
`.group_obs_term_dim[group]`; `action_manager.get_term(name).cfg.scale`;
`scene["robot"].data.joint_names`."""
from __future__ import annotations

import numpy as np

from deploy.action_map import ActionMap
from deploy.config import ConfigError
from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec
from training.envs.base import StepResult

# (robot, task) -> gym task id registered by isaaclab_tasks (2.x names; 3.0 drops "Isaac-"/"-v0",
# see REFERENCE-FIGURES). The 29-DoF G1 task is registered by unitree_rl_lab, not IsaacLab.
TASK_IDS = {
    ("go2", "velocity_flat"): "Isaac-Velocity-Flat-Unitree-Go2-v0",
    ("go2", "velocity_rough"): "Isaac-Velocity-Rough-Unitree-Go2-v0",
    ("anymal_d", "velocity_flat"): "Isaac-Velocity-Flat-Anymal-D-v0",
    ("anymal_d", "velocity_rough"): "Isaac-Velocity-Rough-Anymal-D-v0",
    ("g1", "velocity_flat"): "Unitree-G1-29dof-Velocity",
}
POLICY_GROUP, ACTION_TERM, ROBOT = "policy", "joint_pos", "robot"


def with_pre_reset_obs(env_cls: type) -> type:
    """A subclass of a ManagerBasedRLEnv class that keeps each finished env's last observation."""

    class PreResetObsEnv(env_cls):
        def _reset_idx(self, env_ids):
            obs = self.observation_manager.compute()[POLICY_GROUP]
            if not hasattr(self, "pre_reset_obs"):
                self.pre_reset_obs = obs.clone()
            self.pre_reset_obs[env_ids] = obs[env_ids]
            super()._reset_idx(env_ids)

    PreResetObsEnv.__name__ = f"PreResetObs{env_cls.__name__}"
    return PreResetObsEnv


class IsaacLabVecEnv:
    """Torch-native: observations and actions stay on the env's device."""

    torch_native = True

    def __init__(self, env, spec: RobotSpec):
        self.env, self.spec = env, spec
        check_contract(env, spec)
        self.num_envs = env.num_envs
        self.pipeline = ObservationPipeline(spec, height_scan="height_scan" in env.observation_manager.active_terms[POLICY_GROUP])
        self.obs_dim = self.pipeline.dim
        amap = ActionMap(spec)
        self.action_low, self.action_high = amap.low, amap.high

    def reset(self, seed: int | None = None):
        if seed is not None:
            self.env.seed(seed)
        obs, _ = self.env.reset()
        return obs[POLICY_GROUP]

    def step(self, actions) -> StepResult:
        import torch

        obs, reward, terminated, time_outs, extras = self.env.step(actions)
        terminated, truncated = terminated.bool(), time_outs.bool() & ~terminated.bool()
        ended = (terminated | truncated).unsqueeze(-1)
        final = torch.where(ended, self.env.pre_reset_obs, obs[POLICY_GROUP]) \
            if bool(ended.any()) else obs[POLICY_GROUP]
        return StepResult(obs=obs[POLICY_GROUP], reward=reward, terminated=terminated,
                          truncated=truncated, final_obs=final, info={"log": extras.get("log", {})})

    def close(self) -> None:
        self.env.close()


def check_contract(env, spec: RobotSpec) -> None:
    """Joint order, action scale and observation layout must be the spec's, or nothing trains."""
    where = f"IsaacLab task for {spec.name}"
    names = list(env.scene[ROBOT].data.joint_names)
    if names != spec.joint_names:
        diff = next((i for i, (a, b) in enumerate(zip(names, spec.joint_names)) if a != b), len(names))
        raise ConfigError(spec.source, "joints", f"{where}: joint order differs at index {diff}: "
                          f"IsaacLab {names[diff:diff + 1]}, spec {spec.joint_names[diff:diff + 1]} "
                          f"(IsaacLab order: {names})")
    scale = env.action_manager.get_term(ACTION_TERM).cfg.scale
    if not np.allclose(scale, spec.action_scale):
        raise ConfigError(spec.source, "action.scale", f"{where}: IsaacLab scales actions by {scale}, "
                          f"the spec by {spec.action_scale}")
    terms = list(env.observation_manager.active_terms[POLICY_GROUP])
    dims = [int(np.prod(d)) for d in env.observation_manager.group_obs_term_dim[POLICY_GROUP]]
    layout = ObservationPipeline(spec, height_scan="height_scan" in terms).layout
    if terms != layout.names or dims != [e.dim for e in layout.entries]:
        raise ConfigError(spec.source, "observations", f"{where}: IsaacLab policy observations "
                          f"{list(zip(terms, dims))} differ from the spec's "
                          f"{[(e.name, e.dim) for e in layout.entries]}")


def make_isaaclab_env(spec: RobotSpec, task: str, num_envs: int, device: str) -> IsaacLabVecEnv:
    """Launch Isaac Sim headless and build the task (needs the `isaaclab` install and a GPU)."""
    if (spec.name, task) not in TASK_IDS:
        known = ", ".join(f"{r}/{t}" for r, t in TASK_IDS)
        raise ConfigError(spec.source, "task", f"no IsaacLab task for {spec.name}/{task} (known: {known})")
    try:
        from isaaclab.app import AppLauncher
    except ModuleNotFoundError as exc:
        raise ConfigError(spec.source, "backend", "IsaacLab is not installed here; it needs an "
                          "NVIDIA GPU workstation (see README, IsaacLab backend)") from exc
    AppLauncher(headless=True)
    import isaaclab_tasks  # noqa: F401  registers the velocity tasks
    from isaaclab.envs import ManagerBasedRLEnv
    from isaaclab_tasks.utils import parse_env_cfg

    task_id = TASK_IDS[(spec.name, task)]
    cfg = parse_env_cfg(task_id, device=device, num_envs=num_envs)
    env = with_pre_reset_obs(ManagerBasedRLEnv)(cfg=cfg)
    return IsaacLabVecEnv(env, spec)
