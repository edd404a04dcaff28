"""The policy<->MJCF index map, derived from joint names, and the spec-vs-model consistency check.

The MJCF may come from this project (`models/robots/`) or from elsewhere (MuJoCo Menagerie): the
map is always rebuilt from names, so a model with another joint order still lines up."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from deploy.config import ConfigError
from deploy.spec import RobotSpec

LIMIT_TOLERANCE = 1e-3  # rad; MJCF ranges are often written with fewer digits


@dataclass(frozen=True)
class MjcfMap:
    """Addresses of the spec's joints, bodies and actuators in one compiled MuJoCo model."""

    qpos_adr: np.ndarray      # (J,) qpos address of policy joint i
    dof_adr: np.ndarray       # (J,) qvel address of policy joint i
    actuator: np.ndarray      # (J,) actuator driving policy joint i
    base_body: int
    free_qpos: int            # qpos address of the floating base (x, y, z, qw, qx, qy, qz)
    free_dof: int
    foot_bodies: np.ndarray
    contact_bodies: np.ndarray    # bodies whose ground contact terminates an episode
    penalized_bodies: np.ndarray  # bodies whose contact is penalized (undesired contacts)

    @classmethod
    def build(cls, spec: RobotSpec, model: mujoco.MjModel, prefix: str = "") -> "MjcfMap":
        """`prefix` selects one copy in a world of several (see deploy.sim_world)."""
        src = spec.mjcf
        joint_ids = [_id(model, mujoco.mjtObj.mjOBJ_JOINT, n, src, "joints", spec, prefix)
                     for n in spec.joint_names]
        actuators = []
        for name, jid in zip(spec.joint_names, joint_ids):
            acts = np.flatnonzero((model.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT)
                                  & (model.actuator_trnid[:, 0] == jid))
            if len(acts) != 1:
                raise ConfigError(src, f"actuator for joint '{name}'",
                                  f"expected exactly one joint actuator, found {len(acts)}")
            actuators.append(int(acts[0]))
        base = _id(model, mujoco.mjtObj.mjOBJ_BODY, spec.base_body, src, "bodies.base", spec, prefix)
        free = [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE
                and model.jnt_bodyid[j] == base]
        if not free:
            raise ConfigError(src, f"body '{spec.base_body}'", "the base body needs a free joint")
        body = lambda names, key: np.array(
            [_id(model, mujoco.mjtObj.mjOBJ_BODY, n, src, key, spec, prefix) for n in names],
            dtype=np.int64)
        return cls(qpos_adr=model.jnt_qposadr[joint_ids].astype(np.int64),
                   dof_adr=model.jnt_dofadr[joint_ids].astype(np.int64),
                   actuator=np.array(actuators, dtype=np.int64), base_body=base,
                   free_qpos=int(model.jnt_qposadr[free[0]]), free_dof=int(model.jnt_dofadr[free[0]]),
                   foot_bodies=body(spec.foot_bodies, "bodies.feet"),
                   contact_bodies=body(spec.termination.contacts, "termination.contacts"),
                   penalized_bodies=body(spec.penalized_contacts, "bodies.penalized_contacts"))


def pose_at_origin(model: mujoco.MjModel, data: mujoco.MjData, mapping: MjcfMap,
                   base_quat: np.ndarray, joint_pos: np.ndarray) -> None:
    """Forward kinematics of one measured pose with the base at the world origin: what a robot's
    IMU orientation and joint encoders fix, and all that relative foot positions need."""
    data.qpos[mapping.free_qpos:mapping.free_qpos + 3] = 0.0
    data.qpos[mapping.free_qpos + 3:mapping.free_qpos + 7] = base_quat
    data.qpos[mapping.qpos_adr] = joint_pos
    mujoco.mj_kinematics(model, data)


def _id(model: mujoco.MjModel, kind: mujoco.mjtObj, name: str, src: str, key: str,
        spec: RobotSpec, prefix: str = "") -> int:
    idx = mujoco.mj_name2id(model, kind, prefix + name)
    if idx < 0:
        raise ConfigError(spec.source, key, f"'{name}' is not in the MJCF {src}")
    return idx


def load_model(spec: RobotSpec) -> mujoco.MjModel:
    """Compile the spec's MJCF and set its timestep from the spec (the spec owns timing)."""
    if not Path(spec.mjcf).is_file():
        raise ConfigError(spec.source, "mjcf", f"file not found: {spec.mjcf}")
    try:
        model = mujoco.MjModel.from_xml_path(spec.mjcf)
    except ValueError as exc:
        raise ConfigError(spec.mjcf, "<mjcf>", f"MuJoCo could not compile it: {exc}") from exc
    model.opt.timestep = spec.sim_dt
    return model


def check_against_mjcf(spec: RobotSpec) -> MjcfMap:
    """Refuse a spec whose joints, bodies or limits disagree with its MJCF."""
    return check_model(spec, load_model(spec))


def check_model(spec: RobotSpec, model: mujoco.MjModel) -> MjcfMap:
    """The checks of `check_against_mjcf` on an already compiled model (so a caller loads it once)."""
    mapping = MjcfMap.build(spec, model)
    jids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in spec.joint_names]
    for i, (j, jid) in enumerate(zip(spec.joints, jids)):
        if model.jnt_type[jid] != mujoco.mjtJoint.mjJNT_HINGE:
            raise ConfigError(spec.source, f"joints[{i}]", f"'{j.name}' is not a hinge in {spec.mjcf}")
        lo, hi = model.jnt_range[jid]
        if not model.jnt_limited[jid] or abs(lo - j.lower) > LIMIT_TOLERANCE \
                or abs(hi - j.upper) > LIMIT_TOLERANCE:
            raise ConfigError(spec.source, f"joints[{i}].limits",
                              f"'{j.name}' limits [{j.lower}, {j.upper}] differ from the MJCF range "
                              f"[{lo:.4f}, {hi:.4f}] in {spec.mjcf}")
        dof = model.jnt_dofadr[jid]
        for attr, value in (("armature", model.dof_armature[dof]), ("damping", model.dof_damping[dof])):
            if abs(value - getattr(j, attr)) > 1e-6 + 1e-3 * abs(getattr(j, attr)):
                raise ConfigError(spec.source, f"joints[{i}].{attr}",
                                  f"'{j.name}' {attr} {getattr(j, attr)} differs from the MJCF's "
                                  f"{value:g} in {spec.mjcf}")
    return mapping


def load_robot(spec: RobotSpec) -> tuple[mujoco.MjModel, MjcfMap]:
    """Compile the spec's MJCF, check it against the spec and make its actuators the spec's PD law.

    This is the one way simulation code should get a robot: the model it returns can only disagree
    with the robot's spec in what MuJoCo cannot express (the motor's velocity limit)."""
    model = load_model(spec)
    mapping = check_model(spec, model)
    apply_spec_actuators(model, spec, mapping)
    return model, mapping


def apply_spec_actuators(model: mujoco.MjModel, spec: RobotSpec, mapping: MjcfMap,
                         kp: np.ndarray | None = None, kd: np.ndarray | None = None) -> None:
    """Turn each policy joint's actuator into torque = clip(kp (ctrl - q) - kd qd, +-effort).

    The gains and effort limits are read from the spec only (the policy's gains unless others, such
    as the spec's stand gains, are passed): an MJCF carries zero-gain placeholders, so there is no
    second copy of the gains to drift from the one the robot uses."""
    for i, joint in enumerate(spec.joints):
        _refuse_stateful_actuator(model, spec, int(mapping.actuator[i]), joint.name)
    write_pd_actuators(model, mapping.actuator, spec.kp if kp is None else kp,
                       spec.kd if kd is None else kd, spec.effort_limit)


def write_pd_actuators(model: mujoco.MjModel, actuators: np.ndarray, kp: np.ndarray, kd: np.ndarray,
                       effort: np.ndarray) -> None:
    """With ctrl set to the joint target, MuJoCo's affine actuator computes exactly the PD law the
    robot's motor driver runs, and the implicitfast integrator treats its kd term implicitly.
    Arrays broadcast against `actuators`, so one call serves a world of many robots."""
    act = np.asarray(actuators)
    kp, kd, effort = (np.broadcast_to(x, act.shape) for x in (kp, kd, effort))
    model.actuator_gaintype[act] = mujoco.mjtGain.mjGAIN_FIXED
    model.actuator_biastype[act] = mujoco.mjtBias.mjBIAS_AFFINE
    model.actuator_gainprm[act] = 0.0
    model.actuator_gainprm[act, 0] = kp
    model.actuator_biasprm[act] = 0.0
    model.actuator_biasprm[act, 1] = -kp
    model.actuator_biasprm[act, 2] = -kd
    model.actuator_gear[act] = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    model.actuator_forcelimited[act] = 1
    model.actuator_ctrllimited[act] = 0
    model.actuator_forcerange[act, 0] = -effort
    model.actuator_forcerange[act, 1] = effort


def _refuse_stateful_actuator(model: mujoco.MjModel, spec: RobotSpec, act: int, joint: str) -> None:
    """An actuator with its own dynamics (a filter, an integrator) would delay the PD law; its state
    is part of the compiled model's layout, so it cannot be switched off here: refuse it instead."""
    if model.actuator_dyntype[act] != mujoco.mjtDyn.mjDYN_NONE:
        raise ConfigError(spec.mjcf, f"actuator for joint '{joint}'",
                          "has activation dynamics (dyntype); the spec's PD law needs dyntype none")
