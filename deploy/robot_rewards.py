"""The training task's reward for a robot's own transitions, computed on the replay writer's thread.

The learner on robot data must be paid what the training env pays (rsl_rl_sac.md: the same algorithm
in simulation and on the robot), so the reward comes from deploy/rewards.py, the module the training
env uses, fed with what the robot measures:

| reward input        | training env (MuJoCo)          | robot path (this module)                       |
|---------------------|--------------------------------|------------------------------------------------|
| base linear velocity| simulator                      | the record's base_lin_vel (the estimator's;    |
|                     |                                | hardware backends run it for every robot)      |
| angular velocity    | simulator                      | IMU gyro                                       |
| gravity             | base orientation               | IMU orientation                                |
| joint velocity      | simulator                      | the record's joint_vel (the encoders')         |
| joint acceleration  | MuJoCo qacc                    | the change of joint velocity over one policy   |
|                     |                                | period (a simulator may hand `joint_acc`)      |
| foot contact        | simulator contacts             | foot_contact: the backend's (a foot sensor     |
|                     |                                | over the robot's configured threshold, else    |
|                     |                                | leg kinematics: deploy/contacts.py); without   |
|                     |                                | it a simulator's foot_force > CONTACT_FORCE_N  |
| foot heights        | simulator                      | leg kinematics of the measured pose (the spec's|
|                     |                                | MJCF posed by joint_pos and imu_quat): the     |
|                     |                                | feet's heights relative to each other, all the |
|                     |                                | feet_swing_height term reads                   |
| foot slip speed     | simulator                      | not measured: 0 (feet_slide pays nothing)      |
| penalized contacts  | simulator                      | not measured: 0 (undesired_contacts)           |
| action, last action | the policy's                   | the applied action (after the safety filter)   |

A reward that needs an unknown input (no velocity estimate, no contact information for a task with
air-time terms) stays NaN: the learner refuses NaN rewards with the record named, rather than
learning from a made-up number. The bookkeeping (air and contact times, last action, last joint
velocity) restarts at every episode end and every gap (a dropped transition)."""
from __future__ import annotations

from typing import Any, MutableMapping

import mujoco
import numpy as np

from deploy.contacts import force_contact
from deploy.mjcf import check_model, load_model, pose_at_origin
from deploy.observations import ObservationPipeline, projected_gravity
from deploy.rewards import AIR_TIME, CLOCK_TERMS, RewardInputs, TaskRewards, foot_timers, pd_torque
from deploy.spec import RobotSpec

# N: a record's foot_force above this is contact where the record carries no foot_contact, which
# only a simulator's does (MuJoCo's forces are in newtons; IsaacLab's contact sensors use 1 N). A
# robot's foot sensors are judged by its backend against the deploy config's threshold, in the
# sensor's own units (a Go2 reports raw counts), and arrive as foot_contact.
CONTACT_FORCE_N = 10.0


class ObservedJointState:
    """The joint positions and velocities an observation holds, as its sensors reported them: the
    deploy safety filter estimates a target's torque from that measurement, so applied_torque_limits
    is computed from it, on the robot and in training (where it carries training's noise)."""

    def __init__(self, spec: RobotSpec, layout):
        entries = {e.name: e for e in layout.entries}
        for name in ("joint_pos_rel", "joint_vel_rel"):
            e = entries.get(name)
            if e is None or e.clip is not None or e.scale == 0:
                raise ValueError(f"reward term applied_torque_limits reads the step's starting joint "
                                 f"state from the observation: {spec.name}'s layout ({spec.source}) "
                                 f"needs '{name}' unclipped with a non-zero scale")
        self.default = spec.default_pos.astype(np.float64)
        self._pos, self._vel = (layout.slice(n) for n in ("joint_pos_rel", "joint_vel_rel"))
        self._pos_scale, self._vel_scale = (entries[n].scale for n in ("joint_pos_rel", "joint_vel_rel"))

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(joint_pos, joint_vel), each (..., J), of observations (..., D)."""
        obs = np.asarray(obs, np.float64)
        return (obs[..., self._pos] / self._pos_scale + self.default,
                obs[..., self._vel] / self._vel_scale)


class RobotRewards:
    """Fills a transition's reward fields (reward, reward_velocity, reward_air, reward_base) and
    its applied action from its measured fields. Callable as a ReplayWriter `enrich` hook."""

    def __init__(self, spec: RobotSpec, task: TaskRewards):
        self.spec, self.task = spec, task
        self.default = spec.default_pos.astype(np.float64)
        self.scale = float(spec.action_scale)
        self.needs_contact = any(t.term in AIR_TIME or t.term in ("feet_slide", "gait_contact")
                                 for t in task.terms)
        self.needs_phase = any(t.term in CLOCK_TERMS for t in task.terms)
        self._kinematics = FootKinematics(spec) if task.reads_foot_height else None
        layout = ObservationPipeline(spec).layout
        self._phase_at = layout.slice("gait_phase") if "gait_phase" in layout.names else None
        self._joints_at = ObservedJointState(spec, layout) if task.reads_pd_torque else None
        self._dropped: int | None = None
        self._restart()

    def _restart(self) -> None:
        f = len(self.spec.foot_bodies)
        self.air_time, self.contact_time = np.zeros((1, f)), np.zeros((1, f))
        self.last_action: np.ndarray | None = None
        self.last_joint_vel: np.ndarray | None = None

    def __call__(self, fields: MutableMapping[str, Any]) -> None:
        """Complete `fields` in place; runs on the writer's thread, never in the control loop."""
        target = np.asarray(fields.get("joint_target", np.nan), np.float64)
        action = np.asarray(fields["action"], np.float64)
        clock = self._clock(fields)
        # the target holds the swing feed-forward of the step's end, the clock in next_obs
        feedforward = 0.0 if not self.spec.swing_feedforward else np.nan if clock is None \
            else self.spec.gait.joint_offsets(clock, len(self.default))[0]
        applied = (target - self.default - feedforward) / self.scale
        if np.isfinite(applied).all():
            fields["applied_action"] = applied
            fields["action_filtered"] = bool(np.abs(applied - action).max() > 1e-4)
        else:
            applied = action
        dropped = int(fields.get("dropped", 0))
        if dropped != self._dropped:
            self._restart()                       # a gap: this transition's predecessor is lost
        self._dropped = dropped
        self._pay(fields, applied, clock)
        if fields["terminated"] or fields["truncated"]:
            self._restart()

    def _pay(self, fields: MutableMapping[str, Any], applied: np.ndarray, clock: np.ndarray | None) -> None:
        dt = self.spec.policy_dt
        joint_vel = np.asarray(fields["joint_vel"], np.float64)[None]
        last_vel = joint_vel if self.last_joint_vel is None else self.last_joint_vel
        joint_acc = fields.get("joint_acc")
        joint_acc = (joint_vel - last_vel) / dt if joint_acc is None else np.asarray(joint_acc)[None]
        # an episode starts from a zero last action, as the training env and the observation do
        last_action = np.zeros((1, len(applied))) if self.last_action is None else self.last_action
        self.last_joint_vel, self.last_action = joint_vel, applied[None]
        feet = self._contacts(fields)
        first, last_air, self.air_time, self.contact_time = foot_timers(
            feet, self.air_time, self.contact_time, dt)
        lin_vel = np.asarray(fields.get("base_lin_vel", np.full(3, np.nan)), np.float64)[None]
        phase = None if clock is None else self.spec.gait.foot_phases(clock)
        torque = None if self._joints_at is None else self._pd_torque(fields)
        if not np.isfinite(lin_vel).all() or (self.needs_contact and not np.isfinite(
                np.asarray(fields.get("foot_contact", np.nan), np.float64)).all()) \
                or (self.needs_phase and phase is None) \
                or (torque is not None and not np.isfinite(torque).all()):
            return                                 # an unknown input: the reward stays NaN
        quat = np.asarray(fields["imu_quat"], np.float64)[None]
        joint_pos = np.asarray(fields["joint_pos"], np.float64)[None]
        f = len(self.spec.foot_bodies)
        inputs = RewardInputs(
            command=np.asarray(fields["command"], np.float64)[None], lin_vel=lin_vel,
            ang_vel=np.asarray(fields["imu_gyro"], np.float64)[None],
            gravity=projected_gravity(quat), joint_pos=joint_pos, joint_vel=joint_vel,
            joint_torque=np.asarray(fields["joint_torque"], np.float64)[None], joint_acc=joint_acc,
            action=applied[None], last_action=last_action, foot_contact=feet, first_contact=first,
            last_air_time=last_air, air_time=self.air_time, contact_time=self.contact_time,
            foot_speed_xy=np.zeros((1, f)), penalized_contacts=np.zeros(1),
            terminated=np.array([bool(fields["terminated"])]), spec=self.spec, sigma=self.task.sigma,
            foot_phase=phase,
            foot_height=None if self._kinematics is None else self._kinematics(quat[0], joint_pos[0]),
            pd_torque=torque)
        reward, _, pieces = self.task.step(inputs)
        fields["reward"] = float(reward[0])
        fields["reward_velocity"] = pieces["velocity"][0]
        fields["reward_air"] = float(pieces["air"][0])
        fields["reward_base"] = float(pieces["base"][0])

    def _pd_torque(self, fields: MutableMapping[str, Any]) -> np.ndarray:
        """(1, J) the torque the step's target (as sent: after the safety filter) asked at the step's
        start, from the joint state in the record's obs (measured, without training's noise)."""
        if "obs" not in fields:
            return np.full((1, len(self.default)), np.nan)
        q, qd = self._joints_at(fields["obs"])
        return pd_torque(self.spec, np.asarray(fields["joint_target"], np.float64), q, qd)[None]

    def _clock(self, fields: MutableMapping[str, Any]) -> np.ndarray | None:
        """(1,) the gait clock at the measurement (modulo the period), from next_obs; None where the
        layout has no clock or the record no finite observation."""
        if self._phase_at is None or "next_obs" not in fields:
            return None
        sin_cos = np.asarray(fields["next_obs"], np.float64)[self._phase_at][None]
        if not np.isfinite(sin_cos).all():
            return None
        dt = self.spec.policy_dt                  # the clock runs in whole ticks
        return np.round(self.spec.gait.clock_of(sin_cos) / dt) * dt

    def _contacts(self, fields: MutableMapping[str, Any]) -> np.ndarray:
        """(1, F) bool: the logged contact where known, else the foot force over a threshold;
        unknown feet count as in contact (the reward is then not paid, see _pay)."""
        f = len(self.spec.foot_bodies)
        contact = np.asarray(fields.get("foot_contact", np.full(f, np.nan)), np.float64)
        if not np.isfinite(contact).all():
            force = np.asarray(fields.get("foot_force", np.full(f, np.nan)), np.float64)
            if np.isfinite(force).all():
                contact = force_contact(force, CONTACT_FORCE_N)
                fields["foot_contact"] = contact
        return (np.nan_to_num(contact, nan=1.0) > 0.5)[None]


class FootKinematics:
    """(1, F) foot body heights of a measured pose, the base at the origin (deploy.mjcf.pose_at_origin):
    their differences are the simulator's for the same pose."""

    def __init__(self, spec: RobotSpec):
        self.model = load_model(spec)
        self.map = check_model(spec, self.model)
        self.data = mujoco.MjData(self.model)

    def __call__(self, base_quat: np.ndarray, joint_pos: np.ndarray) -> np.ndarray:
        pose_at_origin(self.model, self.data, self.map, base_quat, joint_pos)
        return self.data.xpos[self.map.foot_bodies, 2][None].copy()


def robot_replay_writer(directory, spec: RobotSpec, bundle=None, height_scan: bool = False):
    """The replay writer a robot's control loop logs into, with the reward of the task the bundle
    was trained on (its policy.json's training.task; velocity_flat without a bundle) filled in on
    the writer's thread. Not started."""
    from deploy.replay import ReplayWriter, TransitionLayout

    task = "velocity_flat"
    if bundle is not None:
        task = (bundle.meta.get("training") or {}).get("task") or task
    layout = TransitionLayout.from_spec(spec, ObservationPipeline(spec, height_scan=height_scan).layout)
    return ReplayWriter(directory, layout, enrich=RobotRewards(spec, TaskRewards.load(task, spec)),
                        header_extra={"task": task})


def simulated_fields(world, spec: RobotSpec, action: np.ndarray, command: np.ndarray,
                     robot: int = 0, next_obs: np.ndarray | None = None,
                     clock: float | None = None, obs: np.ndarray | None = None) -> dict:
    """The fields a MuJoCo robot's transition carries into the reward path (RobotRewards) for the
    step `world` just took: measured state, the target sent for `action` (at gait `clock`, the
    step's end, for a spec whose swing pattern is a feed-forward), the true velocity (a caller
    with an estimator puts its estimate in base_lin_vel) and the simulator's contacts; `next_obs`,
    the observation after the step, carries a gait clock to the reward, and `obs`, the one the
    action was computed from, the joint state the step started from."""
    from deploy.action_map import ActionMap

    st = world.read_state()
    _, _, feet = world.contacts()
    return {"action": action, "joint_target": ActionMap(spec).joint_targets(
                action[None], None if clock is None else np.array([clock]))[0],
            "command": np.asarray(command, dtype=np.float64).copy(),
            "base_lin_vel": st.base_lin_vel[robot], "imu_gyro": st.base_ang_vel[robot],
            "imu_quat": st.base_quat[robot], "joint_pos": st.joint_pos[robot],
            "joint_vel": st.joint_vel[robot], "joint_torque": world.joint_torque[robot],
            "foot_contact": feet[robot].astype(np.float64), "terminated": False,
            "truncated": False, "dropped": 0,
            **({} if next_obs is None else {"next_obs": np.asarray(next_obs, np.float64)}),
            **({} if obs is None else {"obs": np.asarray(obs, np.float64)})}
