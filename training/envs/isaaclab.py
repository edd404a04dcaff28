"""IsaacLab behind the VecEnv protocol (GPU workstation only; an optional extra).

Thin on purpose: IsaacLab's manager-based velocity tasks already implement the task. This adapter
adds the one thing the learner needs that IsaacLab 2.x does not expose, the pre-reset observation of
finished envs (rsl_rl_sac.md Sec. 3.4), by computing observations in `_reset_idx` before the reset;
and it refuses an env whose joint order, action scale or observation layout differs from the
robot spec, so a policy trained there deploys through the same contracts as one trained in MuJoCo.

Every IsaacLab class, method, attribute, extras key and task id used here is listed in
`training/envs/isaaclab_api.py` (USES) and checked against the source of the IsaacLab 2.x and 3.x
wheels by tests/test_isaaclab_source.py. The articulation's joint order goes into checkpoints
(`state_dict`), and a resumed run refuses an env whose order changed."""
from __future__ import annotations

import numpy as np

from deploy.action_map import ActionMap
from deploy.config import ConfigError
from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec
from training.envs.base import StepResult
from training.envs.isaaclab_api import PHYSX_PRESET

# (robot, task) -> {IsaacLab major version: gym task id registered by isaaclab_tasks}; 3.0 renamed
# them (no "-v0", robot names without hyphens). IsaacLab's G1 tasks drive its 37-joint G1
# (G1_MINIMAL_CFG, with hands): the 29-DoF spec refuses it by joint order at construction.
TASK_IDS = {
    ("go2", "velocity_flat"): {"2": "Isaac-Velocity-Flat-Unitree-Go2-v0",
                               "3": "Isaac-Velocity-Flat-UnitreeGo2"},
    ("go2", "velocity_rough"): {"2": "Isaac-Velocity-Rough-Unitree-Go2-v0",
                                "3": "Isaac-Velocity-Rough-UnitreeGo2"},
    ("anymal_d", "velocity_flat"): {"2": "Isaac-Velocity-Flat-Anymal-D-v0",
                                    "3": "Isaac-Velocity-Flat-AnymalD"},
    ("anymal_d", "velocity_rough"): {"2": "Isaac-Velocity-Rough-Anymal-D-v0",
                                     "3": "Isaac-Velocity-Rough-AnymalD"},
    ("g1", "velocity_flat"): {"2": "Isaac-Velocity-Flat-G1-v0", "3": "Isaac-Velocity-Flat-G1"},
    ("g1", "velocity_rough"): {"2": "Isaac-Velocity-Rough-G1-v0", "3": "Isaac-Velocity-Rough-G1"},
}
POLICY_GROUP, ACTION_TERM, ROBOT = "policy", "joint_pos", "robot"
# IsaacLab's policy observation term names -> the observation layout's entry names (which follow
# IsaacLab's mdp function names); the other terms have the same name in both.
TERM_TO_LAYOUT = {"joint_pos": "joint_pos_rel", "joint_vel": "joint_vel_rel", "actions": "last_action"}


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
        obs, _ = self.env.reset(seed=seed)
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

    def state_dict(self) -> dict:
        """What a checkpoint records of this env: the articulation's joint order as IsaacLab built
        it (PhysX and Newton order joints differently), read from the live articulation."""
        return {"backend": "isaaclab", "joint_names": list(self.env.scene[ROBOT].data.joint_names)}

    def describe(self) -> dict:
        """What the contract check compared: joint order, action scale, policy observation terms."""
        terms = self.env.observation_manager.active_terms[POLICY_GROUP]
        dims = self.env.observation_manager.group_obs_term_dim[POLICY_GROUP]
        return {"joint_names": list(self.env.scene[ROBOT].data.joint_names),
                "action_scale": self.env.action_manager.get_term(ACTION_TERM).cfg.scale,
                "observations": [[t, list(d)] for t, d in zip(terms, dims)],
                "layout_hash": self.pipeline.layout.hash}

    def load_state_dict(self, state: dict) -> None:
        """A resumed run must see the joint order the checkpoint was trained with."""
        names = list(self.env.scene[ROBOT].data.joint_names)
        if state.get("backend") != "isaaclab" or state.get("joint_names") != names:
            raise ConfigError(self.spec.source, "joints", f"checkpoint env state {state.get('backend')!r} "
                              f"with joints {state.get('joint_names')} does not match this IsaacLab "
                              f"articulation's joints {names}")


def check_contract(env, spec: RobotSpec) -> None:
    """Joint order, action scale and observation layout must be the spec's, or nothing trains."""
    where = f"IsaacLab task for {spec.name}"
    if spec.swing_feedforward:
        raise ConfigError(spec.source, "gait.swing.feedforward", f"{where}: IsaacLab's joint position "
                          "action adds no swing pattern to the policy's; train this spec on MuJoCo")
    if spec.critic_observations:
        raise ConfigError(spec.source, "critic_observations", f"{where}: this adapter hands the "
                          "critic IsaacLab's policy group only; train this spec on MuJoCo")
    names = list(env.scene[ROBOT].data.joint_names)
    if names != spec.joint_names:
        diff = next((i for i, (a, b) in enumerate(zip(names, spec.joint_names)) if a != b), len(names))
        raise ConfigError(spec.source, "joints", f"{where}: joint order differs at index {diff}: "
                          f"IsaacLab {names[diff:diff + 1]}, spec {spec.joint_names[diff:diff + 1]} "
                          f"(IsaacLab order: {names})")
    scale = env.action_manager.get_term(ACTION_TERM).cfg.scale
    if isinstance(scale, dict):
        raise ConfigError(spec.source, "action.scale", f"{where}: IsaacLab scales actions per joint "
                          f"({scale}); the spec has one scale, {spec.action_scale}")
    if not np.allclose(scale, spec.action_scale):
        raise ConfigError(spec.source, "action.scale", f"{where}: IsaacLab scales actions by {scale}, "
                          f"the spec by {spec.action_scale}")
    terms = [TERM_TO_LAYOUT.get(t, t) for t in env.observation_manager.active_terms[POLICY_GROUP]]
    dims = [int(np.prod(d)) for d in env.observation_manager.group_obs_term_dim[POLICY_GROUP]]
    layout = ObservationPipeline(spec, height_scan="height_scan" in terms).layout
    if terms != layout.names or dims != [e.dim for e in layout.entries]:
        raise ConfigError(spec.source, "observations", f"{where}: IsaacLab policy observations "
                          f"{list(zip(terms, dims))} differ from the spec's "
                          f"{[(e.name, e.dim) for e in layout.entries]}")


def task_id(spec: RobotSpec, task: str, major: str) -> str:
    """The IsaacLab task id for this robot and task in IsaacLab `major` ("2" or "3")."""
    ids = TASK_IDS.get((spec.name, task))
    if ids is None:
        known = ", ".join(f"{r}/{t}" for r, t in TASK_IDS)
        raise ConfigError(spec.source, "task", f"no IsaacLab task for {spec.name}/{task} (known: {known})")
    if major not in ids:
        raise ConfigError(spec.source, "backend", f"IsaacLab {major}.x is not supported "
                          f"(supported majors: {', '.join(sorted(ids))})")
    return ids[major]


def make_isaaclab_env(spec: RobotSpec, task: str, num_envs: int, device: str) -> IsaacLabVecEnv:
    """Launch Isaac Sim headless and build the task (needs the `isaaclab` install and a GPU)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = version("isaaclab").split(".")[0]
    except PackageNotFoundError as exc:
        raise ConfigError(spec.source, "backend", "IsaacLab is not installed here; it needs an "
                          "NVIDIA GPU workstation (see README, IsaacLab backend)") from exc
    task_name = task_id(spec, task, major)
    from isaaclab.app import AppLauncher

    AppLauncher(headless=True)
    import isaaclab_tasks  # noqa: F401  registers the velocity tasks
    from isaaclab.envs import ManagerBasedRLEnv
    from isaaclab_tasks.utils import parse_env_cfg

    physics = {"overrides": [f"physics={PHYSX_PRESET}"]} if major == "3" else {}
    cfg = parse_env_cfg(task_name, device=device, num_envs=num_envs, **physics)
    env = with_pre_reset_obs(ManagerBasedRLEnv)(cfg=cfg)
    return IsaacLabVecEnv(env, spec)
