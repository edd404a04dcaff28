"""Foot contact and base velocity for the reward path on robots that measure neither
(deploy/contacts.py, deploy/backends/hardware_link.py), checked against MuJoCo: the kinematic
contact estimate against the simulator's true contacts, and the G1's lowstate path (hg bytes,
LowStateLink, the Controller, the robot's replay writer) paying the training task's reward."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from g1_policy import copy_g1_bundle

from deploy.backend import StateSample
from deploy.backends import unitree_msgs as M
from deploy.backends.mujoco_backend import GantryRelease, MujocoBackend, quat_mul
from deploy.backends.unitree import LowStateLink, go_foot_slots
from deploy.bundle import PolicyBundle
from deploy.config import ConfigError
from deploy.contacts import CONTACT_HEIGHT_M, force_contact, kinematic_contact
from deploy.controller import Controller
from deploy.deploy_config import DeployConfig
from deploy.registry import PolicyRegistry
from deploy.replay import ReplayReader
from deploy.robot_health import g1_mode_machines
from deploy.robot_rewards import robot_replay_writer
from deploy.sim_world import SimWorld
from deploy.spec import RobotSpec
from deploy.state_machine import Mode
from deploy.velocity_estimator import LegOdometry


class LinkedRobot:
    """A RobotBackend: a MuJoCo robot whose every physics step reaches the Controller as a Unitree
    lowstate in bytes through LowStateLink (decode, bounds, velocity estimate, contact), as on the
    real robot; the Controller's targets go to the physics directly (the lowcmd side is not what
    these tests are about). Time is the simulation's."""

    def __init__(self, spec: RobotSpec, seed: int = 0):
        self.spec, self.world = spec, SimWorld(spec, 1, 1)
        self.world.reset(np.array([0]))
        self.hung = spec.stand_gantry
        self.world.set_gantry(np.array([0]), self.hung)
        self.link = LowStateLink(spec, remote=False)
        self.fam = M.family(spec.interface)
        self.mode_machine = g1_mode_machines(spec)[0] if self.fam.has_mode_machine else 0
        self.rng = np.random.default_rng(seed)
        self.t, self.tick = 0.0, 0
        self.truth: list[tuple[float, np.ndarray, np.ndarray]] = []   # (t, true v, true contact)

    def read_state(self) -> StateSample | None:
        return self.link.read_state()

    def write_command(self, q, kp, kd) -> None:
        self.world.set_pd_gains(np.array([0]), np.asarray(kp)[None], np.asarray(kd)[None])
        self.world.set_targets(np.asarray(q)[None])

    def release_gantry(self) -> None:
        self.hung = False
        self.world.set_gantry(np.array([0]), False)

    def close(self) -> None:
        self.world.close()

    def advance(self) -> None:
        """One policy period of physics, each step's state sent as a lowstate."""
        for _ in range(self.spec.decimation):
            self.world.step(1)
            self.t += self.spec.sim_dt
            self.tick += 1
            assert self.link.receive(self._lowstate(), self.t), self.link._drops
        st = self.world.read_state()
        self.truth.append((self.t, st.base_lin_vel[0].copy(), self.world.contacts()[2][0].copy()))

    def _lowstate(self) -> bytes:
        """The physics state with sensor noise, as the robot's firmware encodes it."""
        st, p2h, j = self.world.read_state(), self.spec.policy_to_hardware, self.spec.num_joints
        q, dq, tau = (np.zeros(self.fam.motor_slots) for _ in range(3))
        q[p2h] = st.joint_pos[0]
        dq[p2h] = st.joint_vel[0] + self.rng.normal(0, 0.05, j)
        tau[p2h] = self.world.joint_torque[0]
        return M.encode_state(self.fam, q, dq, tau, st.base_quat[0],
                              st.base_ang_vel[0] + self.rng.normal(0, 0.01, 3),
                              self.world.imu_accel[0] + self.rng.normal(0, 0.05, 3), self.tick,
                              mode_machine=self.mode_machine)


@pytest.fixture(scope="module")
def g1_bundle(tmp_path_factory):
    """The current G1 bundle: it does not observe base_lin_vel."""
    return PolicyBundle.load(copy_g1_bundle(tmp_path_factory.mktemp("g1_policies")),
                             RobotSpec.load("g1"), providers="cpu")


def _run(ctrl: Controller, robot: LinkedRobot, seconds: float) -> None:
    """Stand up (the G1 on its gantry), start the policy where there is one, let the G1 go after
    the blend-in, as the bench operator does (GantryRelease)."""
    ctrl.on_tick = GantryRelease(robot, ctrl.config.controller.blend_in_s)
    robot.advance()
    ctrl.request_stand()
    for _ in range(int(seconds / robot.spec.policy_dt)):
        if ctrl.mode is Mode.STAND and ctrl.bundle is not None:
            ctrl.request_policy()          # served once the stand-up is done
        ctrl.tick()
        robot.advance()


def test_the_g1_lowstate_path_pays_rewards_from_estimated_velocity_and_kinematic_contact(
        tmp_path, g1_bundle):
    """The G1's hg lowstate has no velocity and no foot sensors, and its policy reads neither:
    the link estimates both for the reward path, the Controller logs them, and the robot's
    replay writer pays the training task's reward for every transition."""
    spec = RobotSpec.load("g1")
    robot = LinkedRobot(spec)
    writer = robot_replay_writer(tmp_path, spec, g1_bundle).start()
    ctrl = Controller(spec, robot, g1_bundle, replay=writer, clock=lambda: robot.t)
    _run(ctrl, robot, 6.0)
    assert ctrl.mode is Mode.POLICY, ctrl.transitions
    writer.close()
    robot.close()
    data = ReplayReader(tmp_path).load()
    f = data.fields
    assert len(data) > 100 and np.isfinite(data.rewards).all()
    times = np.array([t for t, _, _ in robot.truth])
    at = np.searchsorted(times, f["time_ns"] / 1e9 - 1e-6)           # the logged state's step
    velocity = np.array([v for _, v, _ in robot.truth])[at]
    contact = np.array([c for _, _, c in robot.truth])[at]
    rms = np.sqrt(np.mean((f["base_lin_vel"] - velocity) ** 2, 0))
    assert (rms < 0.1).all(), rms                   # measured: [0.008, 0.015, 0.001] m/s
    assert set(np.unique(f["foot_contact"])) <= {0.0, 1.0}
    # the policy steps (the spec's swing feed-forward): the kinematic estimate sees each foot both
    # down and lifted, and agrees with the simulator's contacts except around touch-down and lift-off
    assert {0.0, 1.0} <= set(np.unique(f["foot_contact"][:, 0]))
    assert np.mean((f["foot_contact"] > 0.5) == contact) > 0.8       # measured: 0.88


@pytest.mark.parametrize("robot_name, reads_velocity", [("g1", False), ("go2", True)])
def test_an_unknown_velocity_estimate_damps_only_a_robot_whose_policy_reads_it(
        robot_name, reads_velocity, g1_bundle):
    """A diverged estimate (every one here: no speed counts as plausible) reaches the state
    check only where the policy observes base_lin_vel (the Go2): the G1 walks on under its policy
    with the velocity unknown, and only the reward of its transitions stays unknown."""
    spec = RobotSpec.load(robot_name)
    bundle = g1_bundle if robot_name == "g1" else None
    robot = LinkedRobot(spec)
    ctrl = Controller(spec, robot, bundle, clock=lambda: robot.t)
    _run(ctrl, robot, 4.0 if bundle else 2.5)
    before = ctrl.mode
    assert before is (Mode.POLICY if bundle else Mode.STAND), ctrl.transitions
    robot.link._velocity.max_speed_mps = 0.0
    for _ in range(10):
        robot.advance()
        ctrl.tick()
    robot.close()
    nan_states = ctrl.diagnostics()["safety"]["counts"].get("nan_state", 0)
    if reads_velocity:
        assert ctrl.mode is Mode.DAMPING and nan_states >= 1
        assert np.isnan(robot.read_state().state.base_lin_vel).all()
    else:
        assert ctrl.mode is before and nan_states == 0, ctrl.transitions
        assert robot.read_state().state.base_lin_vel is None
        assert np.isfinite(robot.read_state().foot_contact).all()


def _measured(state, rng: np.random.Generator, joint_rad: float, tilt_rad: float):
    """`state` as sensors give it: uniform noise of `joint_rad` on the encoders and a roll and
    pitch error of up to `tilt_rad` on the IMU's orientation."""
    half = rng.uniform(-1, 1, (1, 2)) * tilt_rad / 2
    turn = np.concatenate([np.ones((1, 1)), half, np.zeros((1, 1))], 1)
    encoders = rng.uniform(-1, 1, state.joint_pos.shape) * joint_rad
    return replace(state, joint_pos=state.joint_pos + encoders,
                   base_quat=quat_mul(state.base_quat, turn / np.linalg.norm(turn)))


def test_kinematic_contact_agrees_with_mujoco_on_a_walking_and_a_standing_go2():
    """The shipped Go2 policy stands, then walks at 0.5 m/s on the MuJoCo backend; each tick the
    estimate from the physics state with sensor errors (encoders 0.002 rad, IMU roll and pitch
    0.01 rad) is compared with MuJoCo's foot contacts. Measured: 86 % of foot-ticks agree while
    walking, 99.4 % while standing (exact state: 90 %, 99.6 %; 0.02 rad of tilt error: 81 %,
    91 %: the estimate needs the IMU's attitude, not training's observation noise of 0.05 rad).
    Wrong estimates fail the walking bound: every foot in contact agrees only as often as feet
    are on the ground (67 %, asserted below), feet swapped left for right on 48 % (the trot moves
    diagonal pairs), a 3 cm band on 71 %. Standing, every foot in contact agrees on 97 %: that
    bound only shows a planted foot is not called airborne."""
    spec = RobotSpec.load("go2")
    bundle = PolicyBundle.load(PolicyRegistry().resolve("current", "go2"), spec, providers="cpu")
    backend = MujocoBackend(spec, seed=1)
    ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    odometry, rng = LegOdometry(spec), np.random.default_rng(0)
    estimate, truth, walking = [], [], []
    ctrl.request_stand()
    for k in range(int(7.0 / spec.policy_dt)):
        if ctrl.mode is Mode.STAND:
            ctrl.request_policy()
        if k == 200:
            ctrl.set_command(0.5, 0.0, 0.0)
        ctrl.tick()
        if ctrl.mode is Mode.POLICY:
            world = backend.fleet.world
            odometry.legs(_measured(world.read_state(), rng, 0.002, 0.01))
            estimate.append(kinematic_contact(odometry.sole_heights))
            truth.append(world.contacts()[2][0])
            walking.append(k > 225)                       # the command ramps up for 0.5 s
        backend.advance()
    backend.close()
    estimate, truth, walking = np.array(estimate) > 0.5, np.array(truth), np.array(walking)
    assert walking.sum() > 100 and (~walking).sum() > 50
    agree = lambda e, rows: np.mean(e[rows] == truth[rows])
    assert agree(estimate, walking) > 0.8, agree(estimate, walking)
    assert agree(estimate, ~walking) > 0.95, agree(estimate, ~walking)
    assert truth[walking].mean() < 0.8 and agree(estimate[:, [1, 0, 3, 2]], walking) < 0.8


def test_unknown_readings_give_unknown_contact_not_an_error():
    force = np.array([50.0, np.nan, 3.0, np.inf])
    np.testing.assert_array_equal(force_contact(force, 10.0), [1.0, np.nan, 0.0, np.nan])
    heights = np.array([0.0, CONTACT_HEIGHT_M / 2, 2 * CONTACT_HEIGHT_M, np.nan])
    np.testing.assert_array_equal(kinematic_contact(heights), [1.0, 1.0, 0.0, np.nan])


def _go2_lowstate(spec: RobotSpec, tick: int, foot_force) -> bytes:
    fam = M.family(spec.interface)
    q = np.zeros(fam.motor_slots)
    q[spec.policy_to_hardware] = spec.default_pos + 1e-4 * tick
    z = np.zeros(fam.motor_slots)
    return M.encode_state(fam, q, z, z, [1, 0, 0, 0], [0, 0, 0], [0, 0, 9.8], tick,
                          foot_force=foot_force)


def test_go2_foot_force_maps_by_name_and_garbage_never_drops_a_state():
    """Unitree's legs are FR, FL, RR, RL; the spec's feet FL, FR, RL, RR. A reading at the int16
    rails (a saturated or broken sensor) is unknown, and its state is delivered: no policy reads
    foot forces, so a bad one may cost a reward, never a state."""
    spec = RobotSpec.load("go2")
    link = LowStateLink(spec, remote=False)
    assert link.foot_force_threshold == DeployConfig.load(spec).contact.foot_force_threshold == 40
    assert link.receive(_go2_lowstate(spec, 1, [100, 10, 70, 0]), time.monotonic())
    sample = link.read_state()
    np.testing.assert_array_equal(sample.foot_force, [10, 100, 0, 70])
    np.testing.assert_array_equal(sample.foot_contact, [0, 1, 0, 1])
    assert link.receive(_go2_lowstate(spec, 2, [-32768, 32767, 0, 50]), time.monotonic())
    np.testing.assert_array_equal(link.read_state().foot_force, [np.nan, np.nan, 50, 0])
    np.testing.assert_array_equal(link.read_state().foot_contact, [np.nan, np.nan, 1, 0])


def test_feet_that_name_no_unitree_leg_are_refused():
    spec = RobotSpec.load("go2")
    for feet in (("FL_foot", "FR_foot", "RL_foot", "FL_toe"), ("foot1", "foot2", "foot3", "foot4")):
        with pytest.raises(ConfigError, match="bodies.feet.*FR, FL, RR, RL"):
            go_foot_slots(replace(spec, foot_bodies=feet))


@pytest.mark.parametrize("robot, value, problem", [
    ("go2", ".nan", "finite"), ("go2", "0", r"outside the allowed range \(0, 32767\]"),
    ("go2", "40000", "outside"), ("go2", "'40'", "expected int or float"),
    ("g1", "40", "reports no foot force")])
def test_the_foot_force_threshold_is_validated(tmp_path, robot, value, problem):
    path = tmp_path / "deploy.yaml"
    path.write_text(f"contact:\n  foot_force_threshold: {value}\n")
    with pytest.raises(ConfigError, match=f"{path}.*contact.foot_force_threshold.*{problem}"):
        DeployConfig.load(RobotSpec.load(robot), path)
