"""The velocity-tracking task on MuJoCo for any RobotSpec, following IsaacLab's step order:
actions -> decimation x physics -> terminations -> rewards -> pre-reset observation of finished envs
-> reset -> command resampling and pushes -> observations.

Observations come from deploy's ObservationPipeline and actions go through deploy's ActionMap, so
training, sim2sim and the robot read and write the robot identically."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.action_map import ActionMap
from deploy.backends.mujoco_backend import Randomization
from deploy.config import ConfigError, Section
from deploy.observations import ObservationPipeline, appended, critic_pipeline, projected_gravity
from deploy.sim_world import SimWorld
from deploy.robot_rewards import ObservedJointState
from deploy.spec import RobotSpec
from training.envs.base import StepResult
from deploy.rewards import (TASKS_DIR, RewardInputs, RewardTerm, TaskRewards, foot_timers, pd_torque,
                            robot_overrides, task_section)


@dataclass(frozen=True)
class TaskConfig:
    name: str
    height_scan: bool
    episode_length_s: float
    reward_dt_scaling: bool
    tracking_sigma: float
    rewards: tuple[RewardTerm, ...]
    randomization: Randomization
    reset_joint_scale: tuple[float, float]
    reset_base_velocity: float
    reset_yaw: float
    single_axis_fraction: float = 0.0

    @classmethod
    def load(cls, task: str, spec: RobotSpec) -> "TaskConfig":
        root = task_section(task)
        root.allow(["episode_length_s", "reward_dt_scaling", "tracking_sigma", "rewards",
                    "domain_randomization", "reset"], ["height_scan", "robot_overrides", "commands"])
        rewards = TaskRewards.from_section(root, spec)
        mine = robot_overrides(root, spec)
        dr = _Overlay(root.sub("domain_randomization"), mine.sub("domain_randomization", {}))
        dr.allow(["friction", "added_base_mass", "motor_strength", "push_interval_s", "push_velocity"],
                 ["action_latency_s"])
        reset = _Overlay(root.sub("reset"), mine.sub("reset", {}))
        reset.allow(["joint_pos_scale", "base_velocity", "yaw"])
        commands = _Overlay(root.sub("commands", {}), mine.sub("commands", {}))
        commands.allow([], ["single_axis_fraction"])
        return cls(
            name=task, height_scan=root.get("height_scan", bool, False),
            episode_length_s=root.number("episode_length_s", low=0.1, high=3600.0),
            reward_dt_scaling=rewards.scale != 1.0,
            tracking_sigma=rewards.sigma,
            rewards=rewards.terms,
            randomization=Randomization.from_section(dr),
            reset_joint_scale=reset.pair("joint_pos_scale", low=0.0, high=10.0),
            reset_base_velocity=reset.number("base_velocity", low=0.0, high=10.0),
            reset_yaw=reset.number("yaw", low=0.0, high=3.1416),
            single_axis_fraction=commands.number("single_axis_fraction", 0.0, low=0.0, high=1.0))


class _Overlay(Section):
    """A task section with one robot's `robot_overrides` keys in place of the shared ones; each key
    is read, and named in errors, where it was given."""

    def __init__(self, shared: Section, robot: Section):
        super().__init__({**shared.data, **robot.data}, shared.file, shared.path)
        self._robot = robot

    def key(self, name: str | int) -> str:
        return self._robot.key(name) if name in self._robot.data else super().key(name)


def keep_one_axis(command: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """`command` (n, 3) with a `fraction` of its rows cut to one axis, drawn evenly among vx, vy and
    wz, the others zeroed. A uniform draw in the command box seldom asks for a pure turn or a pure
    sidestep (the other two axes within 0.1 of zero: 2.6% and 1.3% of a G1's draws), yet those are
    what an operator's joystick gives most."""
    n = len(command)
    cut = rng.random(n) < fraction
    keep = np.eye(3, dtype=bool)[rng.integers(0, 3, n)]
    return np.where(cut[:, None] & ~keep, 0.0, command)


def available_tasks() -> list[str]:
    return sorted(p.stem for p in Path(TASKS_DIR).glob("*.yaml"))


# the joint state of the policy's last observation (VelocityEnv): absent from older checkpoints
_OBSERVED = ("observed_joint_pos", "observed_joint_vel")
# the action latency's state (VelocityEnv._actuate): absent from older checkpoints too
_LATENCY = ("targets", "latency_substeps")


class VelocityEnv:
    """N robots tracking random (vx, vy, wz) commands; implements training.envs.base.VecEnv."""

    def __init__(self, spec: RobotSpec, task: TaskConfig, num_envs: int, seed: int = 0,
                 threads: int = 1, randomize: bool = True, obs_noise: bool = True,
                 commands: np.ndarray | None = None, start_at_command: bool = False):
        """`commands`: (num_envs, 3) held fixed instead of drawn from the spec's ranges (to ask a
        policy what it does for one command at a time). `start_at_command` (training envs only):
        every episode starts already moving at its command, on top of the random reset velocity, so
        the policy practises keeping up a motion (walking backward) it cannot yet start by itself."""
        if task.height_scan:
            raise ConfigError(TASKS_DIR / f"{task.name}.yaml", "height_scan",
                              "the MuJoCo backend has flat ground only; rough terrain needs IsaacLab")
        self.spec, self.task = spec, task
        self.num_envs = num_envs
        self.world = SimWorld(spec, num_envs, threads)
        self.pipeline = ObservationPipeline(spec, height_scan=False)
        # the critic's extra terms, exact, after the policy's columns of every observation returned
        self.privileged = critic_pipeline(spec)
        self.privileged_dim = 0 if self.privileged is None else self.privileged.dim
        self.critic_layout = self.pipeline.layout if self.privileged is None else \
            appended(self.pipeline.layout, self.privileged.layout)
        self.action_map = ActionMap(spec)
        self.obs_dim = self.critic_layout.dim
        self.action_low, self.action_high = self.action_map.low, self.action_map.high
        self.randomize, self.obs_noise = randomize, obs_noise
        self.start_at_command = start_at_command
        self.fixed_commands = None if commands is None else np.broadcast_to(
            np.asarray(commands, dtype=np.float64), (num_envs, 3))
        self.max_steps = int(round(task.episode_length_s / spec.policy_dt))
        self.task_rewards = TaskRewards(task.rewards, task.tracking_sigma,
                                        spec.policy_dt if task.reward_dt_scaling else 1.0)
        self.rng = np.random.default_rng(seed)
        n, j, f = num_envs, spec.num_joints, len(spec.foot_bodies)
        self.episode_step = np.zeros(n, dtype=np.int64)
        self.command = np.zeros((n, 3))
        self.command_timer = np.zeros(n)
        self.push_timer = np.zeros(n)
        self.action = np.zeros((n, j))
        self.last_action = np.zeros((n, j))
        self.air_time = np.zeros((n, f))
        self.contact_time = np.zeros((n, f))
        self.episode_return = np.zeros(n)
        self.episode_track_err = np.zeros(n)
        self.episode_velocity = np.zeros((n, 3))
        # a walking biped's base sways within each stride: the error of the stride's mean velocity
        # tells walking at the wrong speed from swaying at the right one (robots with a gait clock)
        self.stride = 0 if spec.gait is None else int(round(spec.gait.period / spec.policy_dt))
        self.stride_velocity = np.zeros((max(self.stride, 1), n, 2))
        self.episode_stride_err = np.zeros(n)
        self.friction, self.added_mass, self.strength = np.ones(n), np.zeros(n), np.ones(n)
        # the joint state in the policy's last observation, noise included: the deploy safety filter
        # estimates a target's torque from the same measurement the policy acted on
        self.observed_joints = ObservedJointState(spec, self.pipeline.layout) \
            if self.task_rewards.reads_pd_torque else None
        self.observed_joint_pos, self.observed_joint_vel = np.zeros((n, j)), np.zeros((n, j))
        # physics steps each robot's new targets arrive late, drawn per episode; and the targets
        # its actuators hold until they do
        self.latency_substeps = np.zeros(n, dtype=np.int64)
        self.targets = np.tile(spec.default_pos, (n, 1))

    # ---- protocol --------------------------------------------------------------------------
    def reset(self, seed: int | None = None, stagger: bool = True) -> np.ndarray:
        """Reset every env; with `stagger`, episodes start at random steps so that timeouts do not
        arrive in one wave (evaluation turns it off to run whole episodes)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_envs(np.arange(self.num_envs))
        if stagger:
            self.episode_step[:] = self.rng.integers(0, self.max_steps, self.num_envs)
        return self._observe()

    def step(self, actions: np.ndarray) -> StepResult:
        spec = self.spec
        actions = np.array(actions, dtype=np.float64)   # a copy: load_state_dict writes into it
        self.last_action, self.action = self.action, actions
        targets = self.action_map.joint_targets(actions, self.clock + spec.policy_dt)
        torque = None if self.observed_joints is None else pd_torque(
            spec, targets, self.observed_joint_pos, self.observed_joint_vel)
        self._actuate(targets)
        self.episode_step += 1

        state = self.world.read_state()
        contact_term, penalized, feet = self.world.contacts()
        gravity = projected_gravity(state.base_quat)
        terminated = spec.fallen(contact_term, -gravity[:, 2], self.world.base_pos[:, 2],
                                 state.joint_pos)
        truncated = (self.episode_step >= self.max_steps) & ~terminated

        first_contact, last_air, self.air_time, self.contact_time = foot_timers(
            feet, self.air_time, self.contact_time, spec.policy_dt)
        foot_speed = np.linalg.norm(self.world.foot_velocity()[..., :2], axis=-1)
        inputs = RewardInputs(
            command=self.command, lin_vel=state.base_lin_vel, ang_vel=state.base_ang_vel,
            gravity=gravity, joint_pos=state.joint_pos, joint_vel=state.joint_vel,
            joint_torque=self.world.joint_torque,
            joint_acc=self.world.joint_acc, action=self.action, last_action=self.last_action,
            foot_contact=feet, first_contact=first_contact, last_air_time=last_air,
            air_time=self.air_time, contact_time=self.contact_time, foot_speed_xy=foot_speed,
            penalized_contacts=penalized, terminated=terminated, spec=spec,
            sigma=self.task.tracking_sigma,
            foot_phase=None if spec.gait is None else spec.gait.foot_phases(self.clock),
            foot_height=self.world.foot_height() if self.task_rewards.reads_foot_height else None,
            pd_torque=torque)
        reward, parts, pieces = self.task_rewards.step(inputs)
        self.episode_return += reward
        self.episode_track_err += np.linalg.norm(self.command[:, :2] - state.base_lin_vel[:, :2], axis=1)
        self.episode_velocity += pieces["velocity"]
        if self.stride:
            self._add_stride(state.base_lin_vel[:, :2])

        done = terminated | truncated
        # the pre-reset observation of the envs that ended (Eq. 9); the others' next observation
        # is taken below, after commands are resampled and pushes applied, so it shows the command
        # the next reward is computed with
        final = self._observe(state) if done.any() else None
        info = {"reward_terms": {k: float(v.mean()) for k, v in parts.items()}, "relabel": pieces}
        finished = np.flatnonzero(done)
        if len(finished):
            info["episode"] = {
                "envs": finished,
                "return": self.episode_return[finished].copy(),
                "length": self.episode_step[finished].copy(),
                "lin_vel_error": self.episode_track_err[finished] / self.episode_step[finished],
                "mean_velocity": self.episode_velocity[finished] / self.episode_step[finished, None],
                "lin_vel_error_stride": self._stride_error(finished),
                "fell": terminated[finished].copy()}
            self._reset_envs(finished)
        self._advance_command_and_pushes()
        obs = self._observe()
        final_obs = obs if final is None else np.where(done[:, None], final, obs)
        return StepResult(obs=obs, reward=reward, terminated=terminated, truncated=truncated,
                          final_obs=final_obs, info=info)

    def close(self) -> None:
        self.world.close()

    # ---- exact resume ----------------------------------------------------------------------
    _ARRAYS = ("episode_step", "command", "command_timer", "push_timer", "action", "last_action",
               "air_time", "contact_time", "episode_return", "episode_track_err", "episode_velocity",
               "stride_velocity", "episode_stride_err", "friction", "added_mass", "strength",
               *_OBSERVED, *_LATENCY)

    @property
    def command_reward(self):
        """The command-dependent part of the reward (training.relabel recomputes it)."""
        return self.task_rewards.command_reward

    def state_dict(self) -> dict:
        """Everything that decides the next transitions: physics, task state and the RNG."""
        return {"rng": self.rng.bit_generator.state, "physics": self.world.get_state(),
                **{k: getattr(self, k).copy() for k in self._ARRAYS}}

    def load_state_dict(self, state: dict) -> None:
        # statistics, not dynamics: absent from checkpoints of older versions
        state = {"episode_velocity": 0.0, "stride_velocity": 0.0, "episode_stride_err": 0.0, **state}
        self.rng.bit_generator.state = state["rng"]
        for k in self._ARRAYS:
            if k in state or k not in _OBSERVED + _LATENCY:
                getattr(self, k)[...] = state[k]
        if self.randomize:
            self.world.set_friction(self.friction)
            self.world.set_added_base_mass(self.added_mass)
            self.world.set_motor_strength(self.strength)
        self.world.set_state(state["physics"])
        if not set(_OBSERVED) <= set(state):     # older checkpoints: the exact state, for one step
            exact = self.world.read_state()
            self.observed_joint_pos[...], self.observed_joint_vel[...] = exact.joint_pos, exact.joint_vel
        if not set(_LATENCY) <= set(state):      # older checkpoints: no latency until a reset
            self.targets[...], self.latency_substeps[...] = self.world.targets, 0

    # ---- internals -------------------------------------------------------------------------
    @property
    def clock(self) -> np.ndarray:
        """(N,) seconds into each episode: the gait clock a robot's controller runs from POLICY on."""
        return self.episode_step * self.spec.policy_dt

    def _observe(self, state=None) -> np.ndarray:
        state = self.world.read_state() if state is None else state
        rng = self.rng if self.obs_noise else None
        obs = self.pipeline.compute(state, self.command, self.action, rng, clock=self.clock)
        if self.observed_joints is not None:
            self.observed_joint_pos, self.observed_joint_vel = self.observed_joints(obs)
        if self.privileged is None:
            return obs
        exact = self.privileged.compute(state, self.command, self.action, clock=self.clock)
        return np.concatenate([obs, exact], axis=1)

    def _actuate(self, targets: np.ndarray) -> None:
        """One policy step of physics in which each robot's actuators hold its previous targets
        for its first `latency_substeps` physics steps (the robot's bus delays every command), in
        as few calls as there are distinct latencies."""
        late, held = self.latency_substeps, self.targets
        done = 0
        for until in sorted(set(late[late > 0].tolist()) | {self.spec.decimation}):
            self.world.set_targets(np.where((late > done)[:, None], held, targets))
            self.world.step(until - done)
            done = until
        self.targets = targets

    def _add_stride(self, velocity: np.ndarray) -> None:
        """Keep each env's last stride of base velocities; from its first whole stride on, add the
        error of their mean against the command."""
        n = self.num_envs
        self.stride_velocity[(self.episode_step - 1) % self.stride, np.arange(n)] = velocity
        whole = self.episode_step >= self.stride
        error = np.linalg.norm(self.stride_velocity.mean(0) - self.command[:, :2], axis=1)
        self.episode_stride_err += np.where(whole, error, 0.0)

    def _stride_error(self, envs: np.ndarray) -> np.ndarray:
        """Mean stride error of finished episodes; NaN for one shorter than a stride or no clock."""
        if not self.stride:
            return np.full(len(envs), np.nan)
        strides = self.episode_step[envs] - self.stride + 1
        return np.where(strides > 0, self.episode_stride_err[envs] / np.maximum(strides, 1), np.nan)

    def _reset_envs(self, envs: np.ndarray) -> None:
        spec, task, rng, k = self.spec, self.task, self.rng, len(envs)
        lo, hi = task.reset_joint_scale
        q = np.clip(spec.default_pos * rng.uniform(lo, hi, (k, spec.num_joints)),
                    spec.soft_lower, spec.soft_upper)
        yaw = rng.uniform(-task.reset_yaw, task.reset_yaw, k)
        quat = np.stack([np.cos(yaw / 2), np.zeros(k), np.zeros(k), np.sin(yaw / 2)], 1)
        v = task.reset_base_velocity
        self.world.reset(envs, joint_pos=q, base_quat=quat, base_vel=rng.uniform(-v, v, (k, 6)))
        if self.randomize:
            self._randomize(envs)
        self.episode_step[envs] = 0
        self.targets[envs] = spec.default_pos
        self.action[envs] = 0.0
        self.last_action[envs] = 0.0
        self.air_time[envs] = 0.0
        self.contact_time[envs] = 0.0
        self.episode_return[envs] = 0.0
        self.episode_track_err[envs] = 0.0
        self.episode_velocity[envs] = 0.0
        self.episode_stride_err[envs] = 0.0
        self._resample_commands(envs)
        if self.start_at_command:
            self._start_at_command(envs, yaw)
        self.push_timer[envs] = rng.uniform(*task.randomization.push_interval_s, k)

    def _start_at_command(self, envs: np.ndarray, yaw: np.ndarray) -> None:
        """Add the command (body frame) to the reset velocity of the robots in `envs`."""
        c = self.command[envs]
        cos, sin = np.cos(yaw), np.sin(yaw)
        world_xy = np.stack([c[:, 0] * cos - c[:, 1] * sin, c[:, 0] * sin + c[:, 1] * cos], axis=1)
        self.world.push(envs, world_xy, c[:, 2])

    def _randomize(self, envs: np.ndarray) -> None:
        """Draw new physics for the envs being reset (others keep theirs)."""
        dr, rng, k = self.task.randomization, self.rng, len(envs)
        self.friction[envs] = rng.uniform(*dr.friction, k)
        self.added_mass[envs] = rng.uniform(*dr.added_base_mass, k)
        self.strength[envs] = rng.uniform(*dr.motor_strength, k)
        if dr.action_latency_s[1] > 0:      # drawn only when asked: other runs keep their streams
            substeps = rng.uniform(*dr.action_latency_s, k) / self.spec.sim_dt
            self.latency_substeps[envs] = np.clip(np.rint(substeps), 0, self.spec.decimation)
        self.world.set_friction(self.friction)
        self.world.set_added_base_mass(self.added_mass)
        self.world.set_motor_strength(self.strength)

    def _resample_commands(self, envs: np.ndarray) -> None:
        c = self.spec.commands
        self.command_timer[envs] = c.resampling_time
        if self.fixed_commands is not None:
            self.command[envs] = self.fixed_commands[envs]
            return
        command = c.draw(self.rng, len(envs))
        if self.task.single_axis_fraction > 0:     # drawn only when asked: other runs keep their streams
            command = keep_one_axis(command, self.task.single_axis_fraction, self.rng)
        self.command[envs] = command

    def _advance_command_and_pushes(self) -> None:
        dt = self.spec.policy_dt
        self.command_timer -= dt
        due = np.flatnonzero(self.command_timer <= 0)
        if len(due):
            self._resample_commands(due)
        if not self.randomize:
            return
        self.push_timer -= dt
        push = np.flatnonzero(self.push_timer <= 0)
        if len(push):
            v = self.task.randomization.push_velocity
            self.world.push(push, self.rng.uniform(-v, v, (len(push), 2)))
            self.push_timer[push] = self.rng.uniform(*self.task.randomization.push_interval_s, len(push))
