"""Reward terms of rsl_rl_sac.md Appendix B, vectorized over envs, keyed by IsaacLab's term names:
the one reward module of the training env and of the robot (deploy/robot_rewards.py).

A task config lists terms by name with a weight and optional parameters (a joint-name regex for
grouped terms, an air-time threshold); unknown names are refused when the task loads."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from deploy.config import ConfigError, Section, load_yaml
from deploy.spec import REPO_ROOT, RobotSpec, available_robots


@dataclass
class RewardInputs:
    command: np.ndarray          # (N, 3)
    lin_vel: np.ndarray          # (N, 3) body frame
    ang_vel: np.ndarray          # (N, 3) body frame
    gravity: np.ndarray          # (N, 3) projected gravity
    joint_pos: np.ndarray        # (N, J)
    joint_vel: np.ndarray        # (N, J)
    joint_torque: np.ndarray     # (N, J)
    joint_acc: np.ndarray        # (N, J)
    action: np.ndarray           # (N, J)
    last_action: np.ndarray      # (N, J)
    foot_contact: np.ndarray     # (N, F)
    first_contact: np.ndarray    # (N, F) touched down this step
    last_air_time: np.ndarray    # (N, F) air time that ended at the touchdown
    air_time: np.ndarray         # (N, F) current air time (0 in contact)
    contact_time: np.ndarray     # (N, F) current contact time (0 in the air)
    foot_speed_xy: np.ndarray    # (N, F)
    penalized_contacts: np.ndarray  # (N,)
    terminated: np.ndarray       # (N,) failure (not timeout)
    spec: RobotSpec
    sigma: float
    foot_phase: np.ndarray | None = None   # (N, F) gait phase of each foot (spec gait), if it has one
    foot_height: np.ndarray | None = None  # (N, F) height of each foot body's origin, any common datum
    pd_torque: np.ndarray | None = None    # (N, J) the PD law's torque for the step's target at the
                                           # step's start, unclipped: kp (q* - q) - kd qd, with q
                                           # and qd as the policy's observation held them


MOVING_SPEED = 0.1   # m/s: the air-time terms only pay while the command asks to move


def _exp(x):
    """exp for numpy arrays and torch tensors alike: the command terms run in the env (numpy) and
    again in the learner when it relabels commands (torch)."""
    return x.exp() if hasattr(x, "exp") else np.exp(x)


def track_lin_vel_xy(command, lin_vel_xy, sigma: float):
    return _exp(-((command[..., :2] - lin_vel_xy) ** 2).sum(-1) / sigma ** 2)


def track_ang_vel_z(command, ang_vel_z, sigma: float):
    return _exp(-(command[..., 2] - ang_vel_z) ** 2 / sigma ** 2)


def moving(command):
    return (command[..., :2] ** 2).sum(-1) > MOVING_SPEED ** 2


def _feet_air_time(x: RewardInputs, threshold: float) -> np.ndarray:
    """Quadruped: reward each touchdown by how much the swing outlasted the threshold (before the
    moving-command gate)."""
    return ((x.last_air_time - threshold) * x.first_contact).sum(1)


def _feet_air_time_biped(x: RewardInputs, threshold: float) -> np.ndarray:
    """Biped: reward time in single stance, capped at the threshold (before the gate)."""
    in_mode = np.where(x.foot_contact, x.contact_time, x.air_time)
    single = x.foot_contact.sum(1) == 1
    return np.where(single, in_mode.min(1), 0.0).clip(max=threshold)


def _gait_contact(x: RewardInputs) -> np.ndarray:
    """Feet whose contact matches the gait clock: on the ground in the stance part of their cycle,
    in the air in the swing part (unitree_rl_gym's G1 `contact` reward)."""
    if x.foot_phase is None:
        raise ValueError("reward term gait_contact needs the feet's gait phases; this caller "
                         "passes none")
    return (x.foot_contact == (x.foot_phase < x.spec.gait.stance)).sum(1).astype(np.float64)


def _feet_swing_height(x: RewardInputs, apex: float, width: float) -> np.ndarray:
    """Feet in their swing tracking the clock's swing trajectory (GaitSpec.swing_height), each paying
    exp(-(error / width)^2): unlike gait_contact's yes-or-no, a foot lifted a little in its swing
    already earns more than one left down, so stepping can be found by small changes. Stance pays
    nothing here (gait_contact covers it): paid there too, a G1 standing still earned 74% of the
    term. Clearance is measured over the lowest foot, which stands on the ground, so no datum is
    needed."""
    if x.foot_phase is None or x.foot_height is None:
        raise ValueError("reward term feet_swing_height needs the feet's gait phases and heights; "
                         "this caller passes none")
    clearance = x.foot_height - x.foot_height.min(1, keepdims=True)
    error = clearance - x.spec.gait.swing_height(x.foot_phase, apex)
    return (np.exp(-(error / width) ** 2) * (x.foot_phase >= x.spec.gait.stance)).sum(1)


def _gait_joint_reference(x: RewardInputs, width: float) -> np.ndarray:
    """The legs' flexions following the spec's swing pattern (GaitSpec.swing: each leg bent by its
    half sine in its swing), measured against the other legs (each leg's flexion and wanted bend
    less their means over the legs), so a policy that stands in another posture than the default
    is paid for stepping from it too. A leg's flexion is its flex joints' offsets from the default
    pose projected onto their shares. Joint space: the actor, whose actions are joint targets, is
    shown per joint which way stepping lies."""
    if x.foot_phase is None:
        raise ValueError("reward term gait_joint_reference needs the feet's gait phases; this caller "
                         "passes none")
    swing = x.spec.gait.swing
    joints, shares = list(swing.joints), np.asarray(swing.shares)
    owner = np.eye(x.foot_phase.shape[1])[list(swing.feet)]                # (M, F)
    offsets = (x.joint_pos[:, joints] - x.spec.default_pos[joints]) * shares
    flexion = offsets @ owner / (shares ** 2 @ owner)
    bend = x.spec.gait.leg_bend(x.foot_phase)
    error = (flexion - flexion.mean(1, keepdims=True)) - (bend - bend.mean(1, keepdims=True))
    return np.exp(-(error ** 2).sum(1) / width ** 2)


AIR_TIME = {"feet_air_time": _feet_air_time, "feet_air_time_biped": _feet_air_time_biped}


def _torque_excess(x: RewardInputs, j: np.ndarray) -> np.ndarray:
    """Torque asked beyond each motor's effort limit (N m, summed over the joints): the motor cannot
    give it, and on the robot the safety filter clamps such a target (deploy/safety.py). A policy
    loses nothing by asking only what its motors have, so this teaches it to; IsaacLab's
    applied_torque_limits (computed minus applied torque) measures the same."""
    if x.pd_torque is None:
        raise ValueError("reward term applied_torque_limits needs RewardInputs.pd_torque")
    return np.maximum(np.abs(x.pd_torque[:, j]) - x.spec.effort_limit[j], 0.0).sum(1)


def _soft_limit_violation(x: RewardInputs, j: np.ndarray) -> np.ndarray:
    lo, hi = x.spec.soft_lower[j], x.spec.soft_upper[j]
    q = x.joint_pos[:, j]
    return (np.clip(q - hi, 0, None) + np.clip(lo - q, 0, None)).sum(1)


# name -> f(inputs, joint index array, params) -> (N,)
TERMS: dict[str, Callable[[RewardInputs, np.ndarray, dict], np.ndarray]] = {
    "track_lin_vel_xy_exp": lambda x, j, p: track_lin_vel_xy(x.command, x.lin_vel[:, :2], x.sigma),
    "track_ang_vel_z_exp": lambda x, j, p: track_ang_vel_z(x.command, x.ang_vel[:, 2], x.sigma),
    "lin_vel_z_l2": lambda x, j, p: x.lin_vel[:, 2] ** 2,
    "ang_vel_xy_l2": lambda x, j, p: np.sum(x.ang_vel[:, :2] ** 2, 1),
    "dof_torques_l2": lambda x, j, p: np.sum(x.joint_torque[:, j] ** 2, 1),
    "applied_torque_limits": lambda x, j, p: _torque_excess(x, j),
    "dof_acc_l2": lambda x, j, p: np.sum(x.joint_acc[:, j] ** 2, 1),
    "joint_vel_l2": lambda x, j, p: np.sum(x.joint_vel[:, j] ** 2, 1),
    "action_rate_l2": lambda x, j, p: np.sum((x.action - x.last_action) ** 2, 1),
    "feet_air_time": lambda x, j, p: _feet_air_time(x, p["threshold"]) * moving(x.command),
    "feet_air_time_biped": lambda x, j, p: _feet_air_time_biped(x, p["threshold"]) * moving(x.command),
    "undesired_contacts": lambda x, j, p: x.penalized_contacts.astype(np.float64),
    "flat_orientation_l2": lambda x, j, p: np.sum(x.gravity[:, :2] ** 2, 1),
    "dof_pos_limits": lambda x, j, p: _soft_limit_violation(x, j),
    "joint_deviation_l1": lambda x, j, p: np.abs(x.joint_pos[:, j] - x.spec.default_pos[j]).sum(1),
    "feet_slide": lambda x, j, p: (x.foot_speed_xy * x.foot_contact).sum(1),
    "termination_penalty": lambda x, j, p: x.terminated.astype(np.float64),
    "gait_contact": lambda x, j, p: _gait_contact(x),
    "feet_swing_height": lambda x, j, p: _feet_swing_height(x, p["apex"], p["width"]),
    "gait_joint_reference": lambda x, j, p: _gait_joint_reference(x, p["width"]),
}
PARAMS = {"feet_air_time": {"threshold": 0.5}, "feet_air_time_biped": {"threshold": 0.4},
          "feet_swing_height": {"apex": 0.08, "width": 0.05},
          "gait_joint_reference": {"width": 0.3}}
# each parameter's allowed range (low, high, whether low itself is excluded)
PARAM_LIMITS = {"threshold": (0.0, 10.0, False), "apex": (0.0, 1.5, True), "width": (0.0, 1.5, True)}
# the terms that sum over joints, and so take a row's `joints` (the others would ignore it)
JOINT_TERMS = ("dof_torques_l2", "applied_torque_limits", "dof_acc_l2", "joint_vel_l2", "dof_pos_limits",
               "joint_deviation_l1")
# the terms that read the spec's gait clock
CLOCK_TERMS = ("gait_contact", "feet_swing_height", "gait_joint_reference")
MAX_WEIGHT = 1e4   # |weight| on load: the largest here is G1's termination_penalty, 200


@dataclass(frozen=True)
class RewardTerm:
    name: str
    term: str
    weight: float
    joints: np.ndarray
    params: dict


def parse_rewards(section: Section, spec: RobotSpec) -> list[RewardTerm]:
    """`name: weight` or `name: {term, weight, joints, threshold}` rows of a task config."""
    terms = []
    for name, value in section.data.items():
        short = not isinstance(value, dict)     # `name: weight`, read under the name's own key
        row = Section({} if short else value, section.file, section.key(name))
        if not short:
            row.allow(["weight"], ["term", "joints", *PARAM_LIMITS])
        term = row.choice("term", sorted(TERMS)) if "term" in row.data else name
        if term not in TERMS:
            raise section.error(name, f"unknown reward term '{name}' (known: {', '.join(sorted(TERMS))})")
        if term in CLOCK_TERMS and spec.gait is None:
            raise section.error(name, f"reward term {term} needs a gait clock: {spec.name}'s "
                                f"spec has no 'gait' section ({spec.source})")
        if term == "gait_joint_reference" and spec.gait.swing is None:
            raise section.error(name, f"reward term {term} follows the spec's swing pattern: "
                                f"{spec.name}'s spec has no 'gait.swing' section ({spec.source})")
        joints = np.arange(spec.num_joints)
        if "joints" in row.data:
            if term not in JOINT_TERMS:
                raise row.error("joints", f"term {term} does not sum over joints; 'joints' applies to "
                                f"{', '.join(JOINT_TERMS)}")
            joints = np.array(spec.joints_named_by(row, "joints", row.get("joints", str)), dtype=np.int64)
        params = _params(row, term)
        weight = section.number(name, low=-MAX_WEIGHT, high=MAX_WEIGHT) if short else \
            row.number("weight", low=-MAX_WEIGHT, high=MAX_WEIGHT)
        terms.append(RewardTerm(name, term, weight, joints, params))
    return terms


def _params(row: Section, term: str) -> dict:
    """The term's parameters: its defaults, overridden by the row's, each checked."""
    params = dict(PARAMS.get(term, {}))
    for key in [k for k in PARAM_LIMITS if k in row.data]:
        if key not in params:
            raise row.error(key, f"term {term} takes no '{key}' (its parameters: "
                            f"{', '.join(params) or 'none'})")
        low, high, open_low = PARAM_LIMITS[key]
        params[key] = row.number(key, low=low, high=high, open_low=open_low)
    return params


def compute_rewards(terms: list[RewardTerm], x: RewardInputs, scale: float) -> tuple[np.ndarray, dict]:
    """Weighted sum times `scale` (the policy dt), and each term's contribution for logging."""
    total = np.zeros(x.command.shape[0])
    parts = {}
    for t in terms:
        value = t.weight * TERMS[t.term](x, t.joints, t.params) * scale
        parts[t.name] = value
        total += value
    return total, parts


@dataclass(frozen=True)
class CommandReward:
    """The command-dependent part of a task's reward, so a learner can ask what a stored step would
    have earned under another command (training.relabel). Everything else in the reward depends on
    the robot's motion only and is stored as it was."""
    lin_weight: float       # summed weights of track_lin_vel_xy_exp terms, times the reward scale
    ang_weight: float
    sigma: float

    @classmethod
    def of(cls, terms: list[RewardTerm], sigma: float, scale: float) -> "CommandReward":
        w = lambda name: scale * sum(t.weight for t in terms if t.term == name)  # noqa: E731
        return cls(w("track_lin_vel_xy_exp"), w("track_ang_vel_z_exp"), sigma)

    def pieces(self, terms: list[RewardTerm], parts: dict, x: RewardInputs, scale: float,
               total: np.ndarray) -> dict[str, np.ndarray]:
        """What a step stores for relabeling: body velocity (vx, vy, wz), the weighted air-time
        reward before its moving gate, and the rest of the reward."""
        air = sum((t.weight * scale * AIR_TIME[t.term](x, t.params["threshold"])
                   for t in terms if t.term in AIR_TIME), np.zeros(len(total)))
        command_part = sum((parts[t.name] for t in terms if t.term in COMMAND_TERMS), np.zeros(len(total)))
        return {"velocity": np.c_[x.lin_vel[:, :2], x.ang_vel[:, 2]], "air": air,
                "base": total - command_part}

    def __call__(self, command, velocity, air, base):
        """The reward under `command` of steps stored as `pieces` (numpy or torch, any batch shape)."""
        return (base + self.lin_weight * track_lin_vel_xy(command, velocity[..., :2], self.sigma)
                + self.ang_weight * track_ang_vel_z(command, velocity[..., 2], self.sigma)
                + air * moving(command))


COMMAND_TERMS = ("track_lin_vel_xy_exp", "track_ang_vel_z_exp", *AIR_TIME)


# ---- one task's reward, shared by the training env and the robot --------------------------------
TASKS_DIR = REPO_ROOT / "configs" / "tasks"


def task_section(task: str) -> Section:
    """configs/tasks/<task>.yaml as a Section (the training env validates the rest of it)."""
    path = TASKS_DIR / f"{task}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TASKS_DIR.glob("*.yaml")))
        raise ConfigError(path, "task", f"unknown task '{task}' (known: {known})")
    return Section(load_yaml(path), path)


def robot_overrides(root: Section, spec: RobotSpec) -> Section:
    """The task's `robot_overrides` entry for this robot (or its family), empty if none: one robot's
    values in place of the shared ones, key by key."""
    overrides = root.sub("robot_overrides", {})
    overrides.allow([], available_robots())
    mine = overrides.sub(spec.settings_key(overrides.data), {})
    mine.allow([], ["domain_randomization", "reset", "tracking_sigma", "commands"])
    return mine


@dataclass(frozen=True)
class TaskRewards:
    """A task's reward terms for one robot, with what turns them into one step's reward."""
    terms: tuple[RewardTerm, ...]
    sigma: float
    scale: float                    # the policy dt when the task scales rewards by it, else 1

    @classmethod
    def from_section(cls, root: Section, spec: RobotSpec) -> "TaskRewards":
        per_robot = root.sub("rewards")
        per_robot.allow([], available_robots())
        key = spec.settings_key(per_robot.data)
        if key not in per_robot.data:
            raise per_robot.error(spec.name, f"no reward weights for robot '{spec.name}' "
                                  + (f"or its family '{key}' " if key != spec.name else "")
                                  + f"(robots here: {', '.join(per_robot.data)})")
        scaled = root.get("reward_dt_scaling", bool)
        mine = robot_overrides(root, spec)
        sigma = (mine if "tracking_sigma" in mine.data else root).number(
            "tracking_sigma", low=0.0, high=100.0, open_low=True)
        return cls(tuple(parse_rewards(per_robot.sub(key), spec)), sigma,
                   spec.policy_dt if scaled else 1.0)

    @classmethod
    def load(cls, task: str, spec: RobotSpec) -> "TaskRewards":
        return cls.from_section(task_section(task), spec)

    @cached_property
    def reads_foot_height(self) -> bool:
        """Whether a term needs RewardInputs.foot_height (kinematics a caller can skip otherwise)."""
        return any(t.term == "feet_swing_height" for t in self.terms)

    @cached_property
    def reads_pd_torque(self) -> bool:
        """Whether a term needs RewardInputs.pd_torque."""
        return any(t.term == "applied_torque_limits" for t in self.terms)

    @cached_property
    def command_reward(self) -> CommandReward:
        return CommandReward.of(list(self.terms), self.sigma, self.scale)

    def step(self, x: RewardInputs) -> tuple[np.ndarray, dict, dict]:
        """(reward, each term's weighted part, the relabeling pieces) of one step."""
        terms = list(self.terms)
        reward, parts = compute_rewards(terms, x, self.scale)
        return reward, parts, self.command_reward.pieces(terms, parts, x, self.scale, reward)


def pd_torque(spec: RobotSpec, target: np.ndarray, joint_pos: np.ndarray,
              joint_vel: np.ndarray) -> np.ndarray:
    """The PD law's torque at the spec's gains (what the deploy safety filter estimates)."""
    return spec.kp * (target - joint_pos) - spec.kd * joint_vel


def foot_timers(feet: np.ndarray, air_time: np.ndarray, contact_time: np.ndarray,
                dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first_contact, last_air_time, air_time, contact_time) after a step with contacts `feet`:
    the bookkeeping of the air-time terms, as IsaacLab's contact sensor keeps it."""
    first_contact = feet & (air_time > 0)
    last_air = np.where(first_contact, air_time + dt, 0.0)
    return (first_contact, last_air, np.where(feet, 0.0, air_time + dt),
            np.where(feet, contact_time + dt, 0.0))
