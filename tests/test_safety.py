"""The safety supervisor on the MuJoCo backend: a NaN observation, a NaN action, a state older than
the limit and a tilt beyond the limit each put the robot in DAMPING within one tick; nothing
outside the soft joint limits is ever commanded, checked on every command of a 60 s run with
random actions; the supervisor itself never raises; thresholds load from YAML with errors that
name the file and the key."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_controller import ConstantPolicy, lockstep, stand_then_policy

from deploy.backends.mujoco_backend import MujocoBackend
from deploy.config import ConfigError
from deploy.controller import Controller
from deploy.deploy_config import DeployConfig, SafetyConfig
from deploy.safety import SafetySupervisor
from deploy.state_machine import Mode


@pytest.fixture
def walking(spec, bundle):
    """A Controller in POLICY on a MuJoCo robot, with the commands it writes logged."""
    backend = MujocoBackend(spec, seed=0)
    policy = ConstantPolicy(bundle)            # holds the default pose: no fall of its own
    ctrl = Controller(spec, backend, policy, clock=backend.clock)
    stand_then_policy(ctrl, backend)
    lockstep(ctrl, backend, 5)
    backend.command_log = []
    yield ctrl, backend, policy
    backend.close()


def replace_sample(backend, edit):
    """Make the backend's next readings pass through `edit(sample) -> sample`."""
    backend.sample_hooks.append(edit)


def _with_state(sample, **fields):
    return dataclasses.replace(sample, state=dataclasses.replace(sample.state, **fields))


def assert_damping_next_tick(ctrl, backend, reason):
    ctrl.tick()
    assert ctrl.mode is Mode.DAMPING, ctrl.diagnostics()["transitions"]
    last = ctrl.safety.last_fatal()
    assert last is not None and last.reason == reason, last
    assert ctrl.diagnostics()["transitions"][-1]["why"].endswith(reason)
    # damping from now on: no position gain, the spec's damping
    backend.advance()
    ctrl.tick()
    _, _, kp, kd = backend.command_log[-1]
    assert not kp.any() and (kd > 0).all()


def test_nan_observation_damps_within_one_tick(walking):
    ctrl, backend, _ = walking
    def nan_gyro(s):
        g = s.state.base_ang_vel.copy()
        g[0, 1] = np.nan
        return _with_state(s, base_ang_vel=g)
    replace_sample(backend, nan_gyro)
    assert_damping_next_tick(ctrl, backend, "nan_state")
    assert "base_ang_vel" in ctrl.safety.last_fatal().detail


def test_nan_in_the_observation_itself_damps_within_one_tick(walking, spec):
    ctrl, backend, _ = walking
    compute = ctrl.pipeline.compute
    def corrupt(*a, **k):
        obs = compute(*a, **k)
        obs[0, 5] = np.inf
        return obs
    ctrl.pipeline.compute = corrupt
    assert_damping_next_tick(ctrl, backend, "nan_observation")


def test_nan_action_holds_the_last_safe_target_then_damps(walking, spec):
    ctrl, backend, policy = walking
    held = ctrl._last_target.copy()
    policy.action = np.full(spec.num_joints, np.nan, np.float32)
    ctrl.tick()
    assert ctrl.mode is Mode.DAMPING
    assert ctrl.safety.last_fatal().reason == "nan_action"
    _, target, _, _ = backend.command_log[-1]
    np.testing.assert_array_equal(target, held)             # the tick that saw it held the target
    assert np.isfinite(target).all()
    backend.advance()
    ctrl.tick()
    assert not backend.command_log[-1][2].any()               # then damping


def test_state_older_than_the_limit_damps_within_one_tick(walking):
    ctrl, backend, _ = walking
    limit = ctrl.config.safety.max_state_age_s
    replace_sample(backend, lambda s: dataclasses.replace(s, stamp=backend.clock() - limit - 1e-3))
    assert_damping_next_tick(ctrl, backend, "stale_state")


def test_a_sample_read_again_on_the_next_tick_is_stale(walking, spec):
    """No new state for a whole tick (the robot went silent, or every message since was invalid
    and dropped): the tick after the one that first read the last sample is in DAMPING."""
    ctrl, backend, _ = walking
    frozen = backend.read_state()
    replace_sample(backend, lambda s: frozen)
    ctrl.tick()                                  # the last valid state, read for the first time
    assert ctrl.mode is Mode.POLICY
    backend.advance()
    ctrl.tick()
    assert ctrl.mode is Mode.DAMPING and ctrl.safety.last_fatal().reason == "stale_state"
    assert "no new state for 1 ticks" in ctrl.safety.last_fatal().detail


def test_a_frozen_sensor_damps_once_its_reading_is_too_old(walking, spec):
    """With repeated samples allowed (a backend slower than the policy), the age limit still holds."""
    ctrl, backend, _ = walking
    ctrl.safety.config = dataclasses.replace(ctrl.config.safety, max_repeated_ticks=1000)
    frozen = backend.read_state()
    replace_sample(backend, lambda s: frozen)
    limit_ticks = int(round(ctrl.config.safety.max_state_age_s / spec.policy_dt))
    for _ in range(limit_ticks):
        ctrl.tick()
        assert ctrl.mode is Mode.POLICY
        backend.advance()
    ctrl.tick()     # the reading is now older than the limit
    assert ctrl.mode is Mode.DAMPING and ctrl.safety.last_fatal().reason == "stale_state"


def test_tilt_beyond_the_limit_damps_within_one_tick(walking, spec):
    ctrl, backend, _ = walking
    tilt = ctrl.config.safety.max_tilt + 0.05
    quat = np.array([[np.cos(tilt / 2), np.sin(tilt / 2), 0.0, 0.0]])   # rolled
    replace_sample(backend, lambda s: _with_state(s, base_quat=quat))
    assert_damping_next_tick(ctrl, backend, "tilt")


def test_joint_beyond_its_hard_limit_damps_while_the_policy_drives(walking, spec):
    ctrl, backend, _ = walking
    i = spec.joint_index("RL_calf_joint")
    def bent(s):
        q = s.state.joint_pos.copy()
        q[0, i] = spec.hard_lower[i] - ctrl.config.safety.hard_limit_tolerance - 0.05
        return _with_state(s, joint_pos=q)
    replace_sample(backend, bent)
    assert_damping_next_tick(ctrl, backend, "joint_limit")
    assert "RL_calf_joint" in ctrl.safety.last_fatal().detail


def test_nothing_outside_the_soft_limits_is_ever_commanded_in_60_s_of_random_actions(spec, bundle):
    """Random actions well beyond the action bounds (and an occasional NaN) for 60 s of
    simulated time; the operator resets the latched damping and stands the robot up again after
    every fault."""
    rng = np.random.default_rng(7)
    backend = MujocoBackend(spec, seed=7)
    policy = ConstantPolicy(bundle)
    ctrl = Controller(spec, backend, policy, clock=backend.clock)
    backend.command_log = []
    lo, hi = ctrl.action_map.low, ctrl.action_map.high
    modes = set()
    for k in range(int(60.0 / spec.policy_dt)):
        a = rng.uniform(lo - 2.0 * (hi - lo), hi + 2.0 * (hi - lo))
        if rng.random() < 0.003:
            a[rng.integers(spec.num_joints)] = np.nan
        policy.action = a.astype(np.float32)
        if ctrl.mode in (Mode.PASSIVE, Mode.DAMPING):
            ctrl.request_reset()
            ctrl.request_stand()
        elif ctrl.mode is Mode.STAND:
            ctrl.request_policy()
        ctrl.tick()
        modes.add(ctrl.mode)
        backend.advance()
    targets = np.array([c[1] for c in backend.command_log])
    assert len(targets) == 3000
    below = targets < spec.soft_lower - 1e-12
    above = targets > spec.soft_upper + 1e-12
    if below.any() or above.any():
        k, j = np.argwhere(below | above)[0]
        pytest.fail(f"command {k}: joint {spec.joint_names[j]} target {targets[k, j]:.4f} outside "
                    f"[{spec.soft_lower[j]:.4f}, {spec.soft_upper[j]:.4f}]")
    assert np.isfinite(targets).all()
    assert modes >= {Mode.STAND, Mode.POLICY, Mode.DAMPING}
    counts = ctrl.safety.counts
    assert counts["soft_clamped"] > 0 and counts["rate_limited"] > 0 and counts["nan_action"] > 0
    backend.close()


def test_the_supervisor_never_raises(spec):
    sup = SafetySupervisor(spec, SafetyConfig.from_spec(spec))
    assert sup.check_state(object(), 0.0) == "supervisor_error"          # not a StateSample
    t, fatal = sup.filter_targets(None, spec.default_pos, None, None, spec.kp, spec.kd)
    assert fatal == "supervisor_error" and np.isfinite(t).all()
    assert sup.check_observation(None) == "supervisor_error"
    assert sup.check_swap(object(), "x") is not None


def test_estimated_torque_is_clamped_to_the_effort_limit(spec):
    sup = SafetySupervisor(spec, SafetyConfig.from_spec(spec))
    q = spec.default_pos.copy()
    far = np.clip(q + 0.5, spec.soft_lower, spec.soft_upper)
    kp = spec.kp * 4.0                      # 100 N m/rad x up to 0.5 rad = 50 N m > 23.5 N m
    t, fatal = sup.filter_targets(far, far, q, np.zeros_like(q), kp, spec.kd)
    tau = kp * (t - q)
    assert fatal is None and (np.abs(tau) <= spec.effort_limit + 1e-9).all()
    assert sup.counts["torque_clamped"] == 1


def test_safety_thresholds_come_from_yaml_with_errors_naming_file_and_key(spec, tmp_path):
    cfg = DeployConfig.load(spec)          # configs/deploy/go2.yaml
    assert cfg.safety.max_tilt == spec.termination.max_tilt
    assert cfg.safety.max_state_age_s == pytest.approx(3 * spec.policy_dt)
    np.testing.assert_allclose(cfg.controller.damping_kd, spec.stand_kd)
    bad = tmp_path / "go2.yaml"
    bad.write_text("safety:\n  max_tilt_rad: 0.5\n")
    with pytest.raises(ConfigError) as info:
        DeployConfig.load(spec, bad)
    assert str(bad) in str(info.value) and "safety.max_tilt_rad" in str(info.value)
    assert "did you mean 'max_tilt'" in str(info.value)
    bad.write_text("safety:\n  max_state_age_s: 0.001\n")
    with pytest.raises(ConfigError, match="safety.max_state_age_s"):
        DeployConfig.load(spec, bad)
