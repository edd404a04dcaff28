"""The observation pipeline and the action map against the paper's layouts and formulas."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from deploy.action_map import ActionMap
from deploy.observations import (ObservationPipeline, RobotState, projected_gravity,
                                 quat_rotate_inverse)
from deploy.spec import JointSpec, RobotSpec


def _with_joints(spec: RobotSpec, n: int) -> RobotSpec:
    """The same spec with n joints (for the paper's other robots' layouts)."""
    base = spec.joints[0]
    joints = tuple(replace(base, name=f"j{i}", motor=i) for i in range(n))
    return replace(spec, joints=joints)


@pytest.mark.parametrize("joints, flat, rough", [
    (12, 48, 235),   # Table B1: ANYmal B/D, Go1/Go2/A1
    (19, 69, 256),   # Table B2: H1
    (37, 123, 310),  # Table B3: G1 (with hands)
])
def test_observation_sizes_match_the_paper_tables(joints, flat, rough):
    spec = _with_joints(RobotSpec.load("go2", check_mjcf=False), joints)
    assert ObservationPipeline(spec).dim == flat
    assert ObservationPipeline(spec, height_scan=True).dim == rough


def test_layout_offsets_match_table_b1():
    layout = ObservationPipeline(RobotSpec.load("go2", check_mjcf=False), height_scan=True).layout
    expect = {"base_lin_vel": (0, 3), "base_ang_vel": (3, 6), "projected_gravity": (6, 9),
              "velocity_commands": (9, 12), "joint_pos_rel": (12, 24), "joint_vel_rel": (24, 36),
              "last_action": (36, 48), "height_scan": (48, 235)}
    for name, (a, b) in expect.items():
        s = layout.slice(name)
        assert (s.start, s.stop) == (a, b), name


def test_layout_hash_is_stable_across_processes_and_changes_with_the_layout():
    code = ("from deploy.spec import RobotSpec; from deploy.observations import ObservationPipeline;"
            "print(ObservationPipeline(RobotSpec.load('go2', check_mjcf=False)).layout.hash)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    spec = RobotSpec.load("go2", check_mjcf=False)
    here = ObservationPipeline(spec).layout.hash
    assert other.stdout.strip() == here
    assert ObservationPipeline(spec, height_scan=True).layout.hash != here
    scaled = replace(spec, observations=(replace(spec.observations[0], scale=2.0),) + spec.observations[1:])
    assert ObservationPipeline(scaled).layout.hash != here


def _state(spec: RobotSpec, n: int = 3) -> RobotState:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(n, 4))
    return RobotState(base_quat=q / np.linalg.norm(q, axis=1, keepdims=True),
                      base_ang_vel=rng.normal(size=(n, 3)), base_lin_vel=rng.normal(size=(n, 3)),
                      joint_pos=spec.default_pos + rng.normal(size=(n, spec.num_joints)) * 0.1,
                      joint_vel=rng.normal(size=(n, spec.num_joints)))


def test_terms_land_in_their_slots():
    spec = RobotSpec.load("go2", check_mjcf=False)
    pipe = ObservationPipeline(spec)
    st = _state(spec)
    cmd = np.array([[0.5, -0.2, 0.3]] * 3)
    last = np.full((3, 12), 0.25)
    obs = pipe.compute(st, cmd, last)
    L = pipe.layout
    assert np.allclose(obs[:, L.slice("joint_pos_rel")], st.joint_pos - spec.default_pos, atol=1e-6)
    assert np.allclose(obs[:, L.slice("velocity_commands")], cmd)
    assert np.allclose(obs[:, L.slice("last_action")], last)
    assert np.allclose(obs[:, L.slice("projected_gravity")], projected_gravity(st.base_quat), atol=1e-6)


def test_projected_gravity_for_known_attitudes():
    level = np.array([[1.0, 0, 0, 0]])
    assert np.allclose(projected_gravity(level), [[0, 0, -1]])
    pitch = np.pi / 2   # nose down by 90 deg about +y: gravity points along body +x
    q = np.array([[np.cos(pitch / 2), 0, np.sin(pitch / 2), 0]])
    assert np.allclose(projected_gravity(q), [[1, 0, 0]], atol=1e-12)
    roll = np.pi / 2    # +90 deg about +x: body y points up, gravity along body -y
    q = np.array([[np.cos(roll / 2), np.sin(roll / 2), 0, 0]])
    assert np.allclose(projected_gravity(q), [[0, -1, 0]], atol=1e-12)


def test_projected_gravity_equals_rotating_world_gravity_into_the_body_frame():
    q = np.random.default_rng(3).normal(size=(64, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    down = np.tile([0.0, 0.0, -1.0], (64, 1))
    np.testing.assert_allclose(projected_gravity(q), quat_rotate_inverse(q, down), atol=1e-12)


@pytest.mark.parametrize("rows, cols", [(3, 11), (2, 12)])
def test_a_term_of_the_wrong_shape_is_named(rows, cols):
    spec = RobotSpec.load("go2", check_mjcf=False)
    st = _state(spec)
    st.joint_vel = np.zeros((rows, cols))
    with pytest.raises(ValueError, match=rf"joint_vel_rel has shape \({rows}, {cols}\), "
                                         rf"expected \(3, 12\)"):
        ObservationPipeline(spec).compute(st, np.zeros((3, 3)), np.zeros((3, 12)))


@pytest.mark.parametrize("ang_vel_scale", [1.0, 0.25])
def test_training_noise_is_uniform_within_the_spec_bounds(ang_vel_scale):
    """observed_noise (what the smoothness loss draws from) is the noise as it reaches the
    policy: a scaled term's noise scaled with it."""
    spec = RobotSpec.load("go2", check_mjcf=False)
    terms = tuple(replace(t, scale=ang_vel_scale) if t.term == "base_ang_vel" else t
                  for t in spec.observations)
    pipe = ObservationPipeline(replace(spec, observations=terms))
    st = _state(spec, n=2000)
    cmd, last = np.zeros((2000, 3)), np.zeros((2000, 12))
    clean = pipe.compute(st, cmd, last)
    noisy = pipe.compute(st, cmd, last, rng=np.random.default_rng(1))
    dev = np.abs(noisy - clean).max(0)
    bound = pipe.observed_noise
    ang_noise = next(t.noise for t in spec.observations if t.term == "base_ang_vel")
    assert ang_noise > 0 and np.allclose(bound[pipe.layout.slice("base_ang_vel")], ang_noise * ang_vel_scale)
    assert np.all(dev <= bound + 1e-5)
    assert np.all(dev[bound > 0] > 0.9 * bound[bound > 0])     # the bounds are reached
    assert np.all(dev[bound == 0] == 0)                          # commands and last action exact


def test_clip_then_scale():
    spec = RobotSpec.load("go2", check_mjcf=False)
    terms = tuple(replace(t, clip=0.5, scale=2.0) if t.term == "joint_vel_rel" else t
                  for t in spec.observations)
    pipe = ObservationPipeline(replace(spec, observations=terms))
    st = _state(spec)
    st.joint_vel[:] = 3.0
    obs = pipe.compute(st, np.zeros((3, 3)), np.zeros((3, 12)))
    assert np.allclose(obs[:, pipe.layout.slice("joint_vel_rel")], 1.0)


def test_missing_lin_vel_estimate_is_named():
    spec = RobotSpec.load("go2", check_mjcf=False)
    st = _state(spec)
    st.base_lin_vel = None
    with pytest.raises(ValueError, match="base_lin_vel"):
        ObservationPipeline(spec).compute(st, np.zeros((3, 3)), np.zeros((3, 12)))


def test_the_gait_clock_is_sin_and_cos_of_its_cycle_and_needs_a_clock():
    spec = RobotSpec.load("g1", check_mjcf=False)          # gait period 0.8 s, left foot offset 0
    pipe = ObservationPipeline(spec)
    st = _state(spec, 4)
    args = (st, np.zeros((4, 3)), np.zeros((4, spec.num_joints)))
    obs = pipe.compute(*args, clock=np.array([0.0, 0.2, 0.4, 1.4]))
    np.testing.assert_allclose(obs[:, pipe.layout.slice("gait_phase")],
                               [[0, 1], [1, 0], [0, -1], [-1, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="gait_phase needs the policy clock"):
        pipe.compute(*args)


def test_feet_phases_of_a_clock_and_the_clock_of_an_observed_phase():
    gait = RobotSpec.load("g1", check_mjcf=False).gait     # offsets 0 and 0.5 of 0.8 s
    clock = np.array([0.0, 0.44, 0.8, 1.22])
    np.testing.assert_allclose(gait.foot_phases(clock),
                               [[0.0, 0.5], [0.55, 0.05], [0.0, 0.5], [0.525, 0.025]], atol=1e-12)
    angle = 2 * np.pi * clock / gait.period
    back = gait.clock_of(np.c_[np.sin(angle), np.cos(angle)])      # modulo the period
    np.testing.assert_allclose(gait.foot_phases(back), gait.foot_phases(clock), atol=1e-12)


# ---- action map -----------------------------------------------------------------------------
def _one_joint_spec(lower, upper, default, factor, scale) -> RobotSpec:
    spec = RobotSpec.load("go2", check_mjcf=False)
    joint = JointSpec("j", 0, default, lower, upper, 10.0, 1.0, 10.0, 10.0)
    return replace(spec, joints=(joint,), soft_limit_factor=factor, action_scale=scale)


def test_action_bounds_symmetric_example():
    # limits [-1, 1], factor 0.9 -> soft [-0.9, 0.9]; default 0; scale 0.5 -> a in [-1.8, 1.8]
    amap = ActionMap(_one_joint_spec(-1.0, 1.0, 0.0, 0.9, 0.5))
    assert amap.low[0] == pytest.approx(-1.8) and amap.high[0] == pytest.approx(1.8)
    assert amap.center[0] == pytest.approx(0.0) and amap.half_range[0] == pytest.approx(1.8)


def test_action_bounds_asymmetric_example():
    # Go2 calf: limits [-2.7227, -0.83776], factor 0.9, default -1.5, scale 0.25.
    # mid = -1.78023, half = 0.942470 * 0.9 = 0.848223 -> soft [-2.628453, -0.932007]
    # r- = 1.128453, r+ = 0.567993 -> a in [-4.513812, 2.271972]
    amap = ActionMap(_one_joint_spec(-2.7227, -0.83776, -1.5, 0.9, 0.25))
    assert amap.low[0] == pytest.approx(-4.513812, abs=1e-5)
    assert amap.high[0] == pytest.approx(2.271972, abs=1e-5)
    assert amap.center[0] == pytest.approx((2.271972 - 4.513812) / 2, abs=1e-5)
    assert amap.half_range[0] == pytest.approx((2.271972 + 4.513812) / 2, abs=1e-5)


def test_joint_targets_reach_the_soft_limits_exactly_at_the_bounds_and_clamp_beyond():
    spec = RobotSpec.load("go2", check_mjcf=False)
    amap = ActionMap(spec)
    assert np.allclose(amap.joint_targets(amap.low), spec.soft_lower)
    assert np.allclose(amap.joint_targets(amap.high), spec.soft_upper)
    assert np.allclose(amap.joint_targets(np.zeros(12)), spec.default_pos)
    wild = amap.joint_targets(np.full((5, 12), 1e3))
    assert np.allclose(wild, spec.soft_upper)


def test_a_feed_forward_spec_adds_its_swing_pattern_at_the_given_clock():
    """The G1's spec (gait.swing.feedforward) adds each leg's half-sine bend to the targets: at the
    clock where the left foot is mid-swing (phase 0.775 of 0.8 s) the left knee gets apex, its hip
    and ankle pitch -apex/2 each, the right leg (in stance) nothing; no clock is refused."""
    spec = RobotSpec.load("g1", check_mjcf=False)
    amap = ActionMap(spec)
    apex, period = spec.gait.swing.apex, spec.gait.period
    action = np.random.default_rng(0).uniform(-0.3, 0.3, (3, spec.num_joints))
    clock = np.array([0.0, 0.775 * period, 0.275 * period])
    by_hand = np.tile(spec.default_pos, (3, 1)) + spec.action_scale * action
    at = spec.joint_names.index
    for row, side in ((1, "left"), (2, "right")):
        by_hand[row, at(f"{side}_knee_joint")] += apex
        by_hand[row, at(f"{side}_hip_pitch_joint")] -= apex / 2
        by_hand[row, at(f"{side}_ankle_pitch_joint")] -= apex / 2
    by_hand = np.clip(by_hand, spec.soft_lower, spec.soft_upper)
    np.testing.assert_allclose(amap.joint_targets(action, clock), by_hand, atol=1e-12)
    with pytest.raises(ValueError, match="g1's spec adds its swing pattern .* needs the gait clock"):
        amap.joint_targets(action)
    go2 = ActionMap(RobotSpec.load("go2", check_mjcf=False))
    assert np.array_equal(go2.joint_targets(np.zeros((1, 12)), np.array([0.3])),
                          go2.joint_targets(np.zeros((1, 12))))
