"""Every robot spec's MJCF loads, passes the spec check, matches published figures and stands on the
actuators the spec gives it (real MuJoCo, no mocks).

Robots come from `configs/robots/`; each needs an entry in PUBLISHED below, where every number names
its source. A robot without one fails, so a new model cannot slip in unchecked."""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
import pytest

from deploy.mjcf import MjcfMap, apply_spec_actuators, load_robot
from deploy.spec import RobotSpec, available_robots

RELATIVE_TOLERANCE = 0.05   # model vs published mass and segment lengths
STAND_SECONDS = 10.0


@dataclass(frozen=True)
class Leg:
    hip: str        # hip-pitch (HFE) joint
    knee: str       # knee (KFE) joint
    foot: str       # foot body
    thigh: float    # m, hip-pitch joint axis point to knee joint axis point
    shank: float    # m, knee joint axis point to the foot body's origin


@dataclass(frozen=True)
class Figures:
    mass: float                  # kg, whole robot
    legs: tuple[Leg, ...]


def _quadruped(legs: tuple[str, ...], hip: str, knee: str, foot: str, thigh: float,
               shank: float) -> tuple[Leg, ...]:
    return tuple(Leg(hip.format(leg), knee.format(leg), foot.format(leg), thigh, shank) for leg in legs)


PUBLISHED: dict[str, Figures] = {
    "go2": Figures(
        # Unitree Go2 product specification: weight with battery about 15 kg (the go2_description
        # URDF's links sum to 15.017 kg).
        mass=15.0,
        legs=_quadruped(
            ("FL", "FR", "RL", "RR"), "{}_thigh_joint", "{}_calf_joint", "{}_foot",
            # Unitree go2_description URDF: <joint FL_calf_joint> origin xyz="0 0 -0.213"
            thigh=0.213,
            # Unitree go2_description URDF: <joint FL_foot_joint> origin xyz="0 0 -0.213"
            shank=0.213),
    ),
    "anymal_d": Figures(
        # ANYbotics ANYmal D product specification: about 50 kg (the anymal_d_simple_description URDF's
        # links sum to 51.54 kg).
        mass=50.0,
        legs=_quadruped(
            ("LF", "LH", "RF", "RH"), "{}_HFE", "{}_KFE", "{}_FOOT",
            # ANYbotics anymal_d_simple_description URDF: <joint LF_thigh_fixed_LF_KFE_drive>
            # origin xyz="0.0 0.1805 -0.285" (HFE and thigh_fixed frames coincide)
            thigh=float(np.hypot(0.1805, 0.285)),
            # same URDF: <joint LF_shank_fixed_LF_FOOT> origin xyz="0.1 0.02225 -0.39246"
            # (KFE and shank_fixed frames coincide)
            shank=float(np.linalg.norm([0.1, 0.02225, -0.39246]))),
    ),
    "g1": Figures(
        # Unitree G1 product page: weight about 35 kg. (The g1_29dof_rev_1_0 URDF's links, from which
        # the model is written, sum to 33.34 kg, 4.7 % below.)
        mass=35.0,
        legs=tuple(
            Leg(f"{side}_hip_pitch_joint", f"{side}_knee_joint", f"{side}_ankle_roll_link",
                # Unitree unitree_ros g1_29dof_rev_1_0.urdf joint origins: hip_roll (0, 0.052, -0.030465)
                # rpy (0, -0.1749, 0), hip_yaw (0.025001, 0, -0.12412), knee (-0.078273, 0.0021489,
                # -0.17734): |(0, 0.052, -0.030465) + Ry(-0.1749) (hip_yaw + knee)| = 0.3409 m
                thigh=0.3409,
                # same URDF: ankle_pitch (0, -9.4445e-05, -0.30001) + ankle_roll (0, 0, -0.017558)
                shank=float(np.linalg.norm([0.0, 9.4445e-05, 0.30001 + 0.017558])))
            for side in ("left", "right")),
    ),
}


def _figures(robot: str) -> Figures:
    if robot not in PUBLISHED:
        pytest.fail(f"robot '{robot}' has no published figures: add an entry to PUBLISHED in "
                    f"{__file__} (total mass and leg segment lengths, each with its source)")
    return PUBLISHED[robot]


def _close(measured: float, published: float) -> bool:
    return abs(measured - published) <= RELATIVE_TOLERANCE * abs(published)


@pytest.fixture(params=available_robots())
def robot(request) -> str:
    return request.param


def test_mjcf_loads_and_matches_its_spec(robot):
    spec = RobotSpec.load(robot, check_mjcf=True)
    model, mapping = load_robot(spec)
    assert model.opt.timestep == spec.sim_dt
    assert len(mapping.actuator) == spec.num_joints


def test_total_mass_matches_published(robot):
    figures = _figures(robot)
    model, _ = load_robot(RobotSpec.load(robot))
    mass = mujoco.mj_getTotalmass(model)
    assert _close(mass, figures.mass), \
        f"{robot}: model mass {mass:.2f} kg vs published {figures.mass} kg (tolerance 5%)"


def test_leg_segments_match_published(robot):
    figures = _figures(robot)
    model, _ = load_robot(RobotSpec.load(robot))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)   # zero pose
    for leg in figures.legs:
        hip = data.xanchor[_joint(model, leg.hip)]
        knee = data.xanchor[_joint(model, leg.knee)]
        foot = data.xpos[_body(model, leg.foot)]
        thigh, shank = np.linalg.norm(knee - hip), np.linalg.norm(foot - knee)
        assert _close(thigh, leg.thigh), \
            f"{robot}: {leg.hip} -> {leg.knee} is {thigh:.4f} m, published {leg.thigh:.4f} m"
        assert _close(shank, leg.shank), \
            f"{robot}: {leg.knee} -> {leg.foot} is {shank:.4f} m, published {leg.shank:.4f} m"


def test_actuators_are_the_spec_pd_law(robot):
    """With ctrl = joint target, each actuator's torque is clip(kp (target - q) - kd qd, +-effort)."""
    spec = RobotSpec.load(robot)
    model, mapping = load_robot(spec)
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    q = spec.default_pos + rng.uniform(-0.2, 0.2, spec.num_joints)
    qd = rng.uniform(-3.0, 3.0, spec.num_joints)
    target = spec.default_pos + rng.uniform(-2.0, 2.0, spec.num_joints)   # large enough to saturate
    data.qpos[mapping.qpos_adr], data.qvel[mapping.dof_adr] = q, qd
    data.ctrl[mapping.actuator] = target
    mujoco.mj_forward(model, data)
    expected = np.clip(spec.kp * (target - q) - spec.kd * qd, -spec.effort_limit, spec.effort_limit)
    np.testing.assert_allclose(data.actuator_force[mapping.actuator], expected, atol=1e-9)
    np.testing.assert_allclose(data.qfrc_actuator[mapping.dof_adr], expected, atol=1e-9)


STAND_DROP = 0.05        # m, the most the base may sink while standing
STAND_TILT_DEG = 10.0


def test_stands_on_its_actuators_at_the_default_pose(robot):
    """PD at the spec's STAND gains towards the default pose holds the robot up for 10 s."""
    spec = RobotSpec.load(robot)
    model, mapping = load_robot(spec)
    apply_spec_actuators(model, spec, mapping, spec.stand_kp, spec.stand_kd)
    data = _placed_at_default_pose(model, mapping, spec)
    start = data.qpos[mapping.free_qpos + 2]
    data.ctrl[mapping.actuator] = spec.default_pos
    lowest, tilt = start, 0.0
    for _ in range(int(round(STAND_SECONDS / model.opt.timestep))):
        mujoco.mj_step(model, data)
        lowest = min(lowest, data.qpos[mapping.free_qpos + 2])
        tilt = max(tilt, _tilt_deg(data, mapping))
    assert start - lowest <= STAND_DROP, \
        f"{robot}: base sank {100 * (start - lowest):.1f} cm (limit {100 * STAND_DROP:.0f} cm)"
    assert tilt <= STAND_TILT_DEG, f"{robot}: base tilted {tilt:.1f} deg (limit {STAND_TILT_DEG:.0f} deg)"
    speed = np.linalg.norm(data.qvel[mapping.free_dof:mapping.free_dof + 3])
    assert speed < 0.01, f"{robot}: base still moving at {speed:.3f} m/s after {STAND_SECONDS} s"
    touching = _bodies_touching_floor(model, data)
    assert touching <= set(mapping.foot_bodies.tolist()), \
        f"{robot}: non-foot bodies touch the floor: " \
        f"{sorted(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in touching)}"


# ---- helpers -------------------------------------------------------------------------------------

def _joint(model: mujoco.MjModel, name: str) -> int:
    idx = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    assert idx >= 0, f"joint '{name}' from PUBLISHED is not in the model"
    return idx


def _body(model: mujoco.MjModel, name: str) -> int:
    idx = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
    assert idx >= 0, f"body '{name}' from PUBLISHED is not in the model"
    return idx


def _placed_at_default_pose(model: mujoco.MjModel, mapping: MjcfMap, spec: RobotSpec) -> mujoco.MjData:
    """Joints at the default pose, base level, lowered until its lowest foot point touches z = 0."""
    data = mujoco.MjData(model)
    data.qpos[mapping.qpos_adr] = spec.default_pos
    data.qpos[mapping.free_qpos:mapping.free_qpos + 7] = (0, 0, 0, 1, 0, 0, 0)
    mujoco.mj_forward(model, data)
    data.qpos[mapping.free_qpos + 2] = -_lowest_point(model, data, mapping.foot_bodies)
    mujoco.mj_forward(model, data)
    return data


def _lowest_point(model: mujoco.MjModel, data: mujoco.MjData, bodies: np.ndarray) -> float:
    """World z of the lowest surface point of the geoms on `bodies` (spheres, capsules, boxes exact;
    other shapes by their bounding sphere)."""
    lowest = np.inf
    for g in np.flatnonzero(np.isin(model.geom_bodyid, bodies)):
        centre, frame, size = data.geom_xpos[g], data.geom_xmat[g].reshape(3, 3), model.geom_size[g]
        kind = model.geom_type[g]
        if kind == mujoco.mjtGeom.mjGEOM_SPHERE:
            z = centre[2] - size[0]
        elif kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
            z = centre[2] - abs(frame[2, 2]) * size[1] - size[0]
        elif kind == mujoco.mjtGeom.mjGEOM_BOX:
            z = centre[2] - np.abs(frame[2, :]) @ size
        else:
            z = centre[2] - model.geom_rbound[g]
        lowest = min(lowest, z)
    assert np.isfinite(lowest), "the spec's foot bodies carry no geoms"
    return float(lowest)


def _tilt_deg(data: mujoco.MjData, mapping: MjcfMap) -> float:
    """Angle between the base's z axis and the world's."""
    return float(np.degrees(np.arccos(np.clip(data.xmat[mapping.base_body][8], -1.0, 1.0))))


def _bodies_touching_floor(model: mujoco.MjModel, data: mujoco.MjData) -> set[int]:
    """Robot bodies in contact with a world (terrain) geom."""
    touching = set()
    for c in data.contact[:data.ncon]:
        b1, b2 = model.geom_bodyid[c.geom1], model.geom_bodyid[c.geom2]
        if b1 == 0 and b2 != 0:
            touching.add(int(b2))
        elif b2 == 0 and b1 != 0:
            touching.add(int(b1))
    return touching
