"""Every robot spec's MJCF loads, passes the spec check, matches published figures, stands and stands
up on the actuators the spec gives it and is lowered without violence by its damping gains (real MuJoCo,
no mocks).

Robots come from `configs/robots/`; each needs an entry in PUBLISHED below, where every number names
its source. A robot without one fails, so a new model cannot slip in unchecked."""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
import pytest

from deploy.deploy_config import DeployConfig
from deploy.mjcf import MjcfMap, apply_spec_actuators, load_robot
from deploy.sim2sim.scenarios import ScenarioFile, start_pose
from deploy.sim_world import Gantry
from deploy.spec import REPO_ROOT, RobotSpec, available_robots

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


def _physical_robots() -> list[str]:
    """One spec per robot model: a variant (`base:`) shares its robot's MJCF and figures."""
    return [r for r in available_robots() if RobotSpec.load(r, check_mjcf=False).variant_of is None]


@pytest.fixture(params=_physical_robots())
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
GANTRY_SHARE = 0.10      # the most a gantry may push sideways on a standing robot, x its weight
FALLEN_TILT_DEG = 30.0
POSE_TOLERANCE = 0.1     # rad, joints vs the default pose once stood up
DAMPED_DESCENT = 0.5     # peak sinking speed under damping, x the free-fall speed from standing height


def test_stands_on_its_actuators_at_the_default_pose(robot):
    """PD at the spec's STAND gains towards the default pose holds the robot up for 10 s (a humanoid
    on a gantry that keeps it upright but carries none of its weight: its legs carry all of it)."""
    spec = RobotSpec.load(robot)
    model, mapping = load_robot(spec)
    apply_spec_actuators(model, spec, mapping, spec.stand_kp, spec.stand_kd)
    data = _placed_at_default_pose(model, mapping, spec)
    gantry = _hung(spec, model, data, mapping)
    start = data.qpos[mapping.free_qpos + 2]
    data.ctrl[mapping.actuator] = spec.default_pos
    lowest, tilt = start, 0.0
    for _ in range(int(round(STAND_SECONDS / model.opt.timestep))):
        _step(model, data, gantry)
        lowest = min(lowest, data.qpos[mapping.free_qpos + 2])
        tilt = max(tilt, _tilt_deg(data, mapping))
    assert start - lowest <= STAND_DROP, \
        f"{robot}: base sank {100 * (start - lowest):.1f} cm (limit {100 * STAND_DROP:.0f} cm)"
    _assert_standing_still(robot, model, data, mapping, tilt, gantry)


@pytest.mark.parametrize("robot", [r for r in _physical_robots() if RobotSpec.load(r).stand_gantry])
def test_gantry_is_needed(robot):
    """A spec with `stand: gantry: true` really cannot stand on PD alone at its STAND gains (else drop
    the gantry): without it the robot falls within the 10 s it stands with one."""
    spec = RobotSpec.load(robot)
    model, mapping = load_robot(spec)
    apply_spec_actuators(model, spec, mapping, spec.stand_kp, spec.stand_kd)
    data = _placed_at_default_pose(model, mapping, spec)
    data.ctrl[mapping.actuator] = spec.default_pos
    tilt = 0.0
    for _ in range(int(round(STAND_SECONDS / model.opt.timestep))):
        mujoco.mj_step(model, data)
        tilt = max(tilt, _tilt_deg(data, mapping))
    assert tilt > FALLEN_TILT_DEG, f"{robot} stands {STAND_SECONDS} s on PD alone (tilt {tilt:.1f} deg): " \
                                   f"it needs no gantry; drop stand.gantry from its spec"


def _crouched_robots() -> list[str]:
    return [r for r in _physical_robots() if _crouched_start(r) is not None]


def _crouched_start(robot: str):
    """The sim2sim gate's crouched start of this robot (configs/sim2sim/<robot>.yaml), if it has one."""
    path = REPO_ROOT / "configs" / "sim2sim" / f"{robot}.yaml"
    if not path.is_file():
        return None
    episodes = ScenarioFile.load(path, RobotSpec.load(robot)).episodes
    return next((e for e in episodes if e.scenario == "crouched_start"), None)


@pytest.mark.parametrize("robot", _crouched_robots())
def test_stands_up_from_the_crouch(robot):
    """From the sim2sim gate's crouched start, STAND's interpolation to the default pose at the STAND
    gains (over the deploy config's stand duration) raises the robot to its standing height and pose."""
    spec = RobotSpec.load(robot)
    model, mapping = load_robot(spec)
    apply_spec_actuators(model, spec, mapping, spec.stand_kp, spec.stand_kd)
    standing = _placed_at_default_pose(model, mapping, spec).qpos[mapping.free_qpos + 2]
    crouch, _, _ = start_pose(spec, _crouched_start(robot).start, 0.0, np.random.default_rng(0))
    data = _placed_at_pose(model, mapping, crouch)
    gantry = _hung(spec, model, data, mapping)
    duration = DeployConfig.load(spec).controller.stand_duration_s
    tilt = 0.0
    for k in range(int(round(STAND_SECONDS / model.opt.timestep))):
        a = min(k * model.opt.timestep / duration, 1.0)
        data.ctrl[mapping.actuator] = (1.0 - a) * crouch + a * spec.default_pos
        _step(model, data, gantry)
        tilt = max(tilt, _tilt_deg(data, mapping))
    height = data.qpos[mapping.free_qpos + 2]
    assert height >= standing - STAND_DROP, \
        f"{robot}: stood up to {height:.3f} m, {100 * (standing - height):.1f} cm below standing height"
    worst = np.abs(data.qpos[mapping.qpos_adr] - spec.default_pos)
    assert worst.max() <= POSE_TOLERANCE, \
        f"{robot}: {spec.joint_names[int(worst.argmax())]} {worst.max():.3f} rad from the default pose"
    _assert_standing_still(robot, model, data, mapping, tilt, gantry)


def test_damping_lowers_it_without_violent_motion(robot):
    """PASSIVE/DAMPING (kp 0, the deploy config's damping kd) lets a standing robot down: it sinks,
    slower than half free fall from its standing height, and no joint outruns its velocity limit."""
    spec = RobotSpec.load(robot)
    model, mapping = load_robot(spec)
    damping_kd = DeployConfig.load(spec).controller.damping_kd
    apply_spec_actuators(model, spec, mapping, np.zeros(spec.num_joints), damping_kd)
    data = _placed_at_default_pose(model, mapping, spec)
    gantry = _hung(spec, model, data, mapping)
    start = data.qpos[mapping.free_qpos + 2]
    sinking, joint_speed = 0.0, np.zeros(spec.num_joints)
    for _ in range(int(round(4.0 / model.opt.timestep))):
        _step(model, data, gantry)
        sinking = max(sinking, -data.qvel[mapping.free_dof + 2])
        joint_speed = np.maximum(joint_speed, np.abs(data.qvel[mapping.dof_adr]))
    end = data.qpos[mapping.free_qpos + 2]
    assert end < start - STAND_DROP, f"{robot}: damping held it up ({start:.3f} -> {end:.3f} m)"
    free_fall = np.sqrt(2.0 * 9.81 * start)
    assert sinking <= DAMPED_DESCENT * free_fall, \
        f"{robot}: sank at up to {sinking:.2f} m/s under kd {damping_kd.max():g} " \
        f"(limit {DAMPED_DESCENT} x free fall {free_fall:.2f} m/s)"
    over = joint_speed / spec.velocity_limit
    assert over.max() <= 1.0, f"{robot}: {spec.joint_names[int(over.argmax())]} reached " \
                              f"{joint_speed[int(over.argmax())]:.1f} rad/s under damping"


def _assert_standing_still(robot: str, model: mujoco.MjModel, data: mujoco.MjData, mapping: MjcfMap,
                           tilt: float, gantry: "_Hung | None") -> None:
    assert tilt <= STAND_TILT_DEG, f"{robot}: base tilted {tilt:.1f} deg (limit {STAND_TILT_DEG:.0f} deg)"
    speed = np.linalg.norm(data.qvel[mapping.free_dof:mapping.free_dof + 3])
    assert speed < 0.01, f"{robot}: base still moving at {speed:.3f} m/s after {STAND_SECONDS} s"
    touching = _bodies_touching_floor(model, data)
    assert touching <= set(mapping.foot_bodies.tolist()), \
        f"{robot}: non-foot bodies touch the floor: " \
        f"{sorted(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in touching)}"
    if gantry is not None:
        weight = mujoco.mj_getTotalmass(model) * 9.81
        assert gantry.push <= GANTRY_SHARE * weight, \
            f"{robot}: the gantry pushed {gantry.push:.1f} N sideways at the end ({GANTRY_SHARE:.0%} " \
            f"of its weight {weight:.0f} N allowed): the legs do not hold the pose"


class _Hung:
    """A robot hanging from deploy.sim_world's Gantry (spec stand.gantry), the force of its last step."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, mapping: MjcfMap):
        self.gantry = Gantry.hang(data, mapping.base_body, mujoco.mj_getTotalmass(model))
        self.body, self.dof = mapping.base_body, mapping.free_dof
        self.push = 0.0

    def apply(self, data: mujoco.MjData) -> None:
        self.push = float(np.linalg.norm(self.gantry.apply(data, self.body, self.dof)))


def _hung(spec: RobotSpec, model: mujoco.MjModel, data: mujoco.MjData, mapping: MjcfMap) -> _Hung | None:
    return _Hung(model, data, mapping) if spec.stand_gantry else None


def _step(model: mujoco.MjModel, data: mujoco.MjData, hung: _Hung | None) -> None:
    if hung is not None:
        hung.apply(data)
    mujoco.mj_step(model, data)


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
    return _placed_at_pose(model, mapping, spec.default_pos)


def _placed_at_pose(model: mujoco.MjModel, mapping: MjcfMap, joint_pos: np.ndarray) -> mujoco.MjData:
    """Joints at `joint_pos`, base level, lowered until its lowest foot point touches z = 0."""
    data = mujoco.MjData(model)
    data.qpos[mapping.qpos_adr] = joint_pos
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
