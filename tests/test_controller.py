"""The Controller: state machine rows one by one, STAND from a sitting pose within the rate limit,
the blend-in, absolute-deadline pacing, policy swaps that verify before they install, and the
hand-over of every completed transition to the onboard replay log.

The policy is the Go2 bundle exported from a real, few-second SAC run (tests/conftest.py);
ConstantPolicy, lockstep and stand_then_policy are shared with test_safety.py."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from deploy.backend import StateSample
from deploy.backends.mujoco_backend import MujocoBackend
from deploy.controller import Controller, PolicyRefused
from deploy.deploy_config import DeployConfig
from deploy.observations import RobotState
from deploy.state_machine import TRANSITIONS, Facts, Mode, Request, step


class ConstantPolicy:
    """A bundle stand-in returning a fixed action (the Controller takes any PolicyBundle-like)."""

    def __init__(self, real, action=None):
        self._real = real
        self.action = np.zeros(real.act_dim, np.float32) if action is None else action

    def __getattr__(self, name):
        return getattr(self._real, name)

    def act(self, obs):
        return np.asarray(self.action, np.float32)


def lockstep(ctrl: Controller, backend: MujocoBackend, ticks: int, on_tick=None) -> None:
    for _ in range(ticks):
        ctrl.tick()
        if on_tick:
            on_tick()
        backend.advance()


def stand_then_policy(ctrl, backend, max_ticks=400) -> None:
    ctrl.request_stand()
    lockstep(ctrl, backend, 1)
    assert ctrl.mode is Mode.STAND
    ctrl.request_policy()
    for _ in range(max_ticks):
        ctrl.tick()
        backend.advance()
        if ctrl.mode is Mode.POLICY:
            return
    raise AssertionError(f"no POLICY after {max_ticks} ticks: {ctrl.diagnostics()['last_request']}")


# ---- the transition table, row by row ----------------------------------------------------------
def facts(**kw) -> Facts:
    base = dict(fault=None, request=None, state_ok=True, stand_done=False, policy_loaded=True)
    base.update(kw)
    return Facts(**base)


@pytest.mark.parametrize("mode", [Mode.PASSIVE, Mode.STAND, Mode.POLICY])
def test_a_fault_goes_to_damping_from_every_mode(mode):
    assert step(mode, facts(fault="tilt", state_ok=False)).mode is Mode.DAMPING


def test_damping_is_latched_until_an_operator_stands_with_a_healthy_state():
    assert step(Mode.DAMPING, facts(fault="tilt", state_ok=False)).mode is Mode.DAMPING
    refused = step(Mode.DAMPING, facts(request=Request.STAND, state_ok=False, fault="stale_state"))
    assert refused.mode is Mode.DAMPING and "stale_state" in refused.dropped
    assert step(Mode.DAMPING, facts(request=Request.STAND)).mode is Mode.STAND


def test_policy_waits_for_the_default_pose_and_needs_a_bundle():
    waiting = step(Mode.STAND, facts(request=Request.POLICY))
    assert waiting.mode is Mode.STAND and waiting.request_kept
    assert step(Mode.STAND, facts(request=Request.POLICY, stand_done=True)).mode is Mode.POLICY
    none = step(Mode.STAND, facts(request=Request.POLICY, stand_done=True, policy_loaded=False))
    assert none.mode is Mode.STAND and "no verified bundle" in none.dropped
    direct = step(Mode.PASSIVE, facts(request=Request.POLICY))
    assert direct.mode is Mode.PASSIVE and "stand first" in direct.dropped


def test_operator_damping_and_stand_from_policy():
    assert step(Mode.POLICY, facts(request=Request.DAMPING)).mode is Mode.DAMPING
    assert step(Mode.POLICY, facts(request=Request.STAND)).mode is Mode.STAND
    assert step(Mode.PASSIVE, facts(request=Request.DAMPING)).mode is Mode.DAMPING


def test_every_row_names_its_reason():
    assert all(t.why for t in TRANSITIONS)


# ---- STAND, blend-in ---------------------------------------------------------------------------
def test_stand_from_a_random_sitting_pose_reaches_the_default_pose_within_the_rate_limit(spec, bundle):
    rng = np.random.default_rng(3)
    q = spec.default_pos.copy()
    q[spec.joints_matching(".*_thigh_joint")] = rng.uniform(1.1, 1.5, 4)
    q[spec.joints_matching(".*_calf_joint")] = rng.uniform(-2.7, -2.5, 4)
    q[spec.joints_matching(".*_hip_joint")] += rng.uniform(-0.2, 0.2, 4)
    backend = MujocoBackend(spec, seed=1)
    backend.fleet.reset(0, joint_pos=q, base_pos=[0, 0, 0.12])
    lockstep_ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    lockstep(lockstep_ctrl, backend, 25)                         # settle on the floor, PASSIVE
    backend.command_log = []
    lockstep_ctrl.request_stand()
    stand_T = None
    for _ in range(int(6.0 / spec.policy_dt)):
        lockstep_ctrl.tick()
        stand_T = stand_T or lockstep_ctrl._stand_T
        backend.advance()
    assert lockstep_ctrl.mode is Mode.STAND
    targets = np.array([c[1] for c in backend.command_log])
    steps = np.abs(np.diff(targets, axis=0))
    max_step = lockstep_ctrl.safety.max_step
    worst = np.unravel_index(np.argmax(steps / max_step), steps.shape)
    assert (steps <= max_step + 1e-9).all(), \
        f"joint {spec.joint_names[worst[1]]} stepped {steps[worst]:.3f} rad > {max_step[worst[1]]:.3f}"
    assert lockstep_ctrl.safety.counts.get("rate_limited", 0) == 0
    np.testing.assert_allclose(targets[-1], spec.default_pos, atol=1e-9)
    measured = backend.read_state().state.joint_pos[0]
    err = np.abs(measured - spec.default_pos)
    assert err.max() < 0.2, f"joint {spec.joint_names[int(err.argmax())]} is {err.max():.3f} rad off"
    assert backend.fleet.world.base_pos[0, 2] > 0.22, "the robot did not stand up"
    backend.close()


def test_policy_blends_in_from_the_stand_pose_and_gains(spec, bundle):
    push = np.full(spec.num_joints, 2.0, np.float32)     # far from the default pose
    policy = ConstantPolicy(bundle, np.clip(push, ActionBounds(spec).low, ActionBounds(spec).high))
    backend = MujocoBackend(spec)
    ctrl = Controller(spec, backend, policy, clock=backend.clock,
                      config=DeployConfig.defaults(spec).with_controller(stand_duration_s=0.5,
                                                                         blend_in_s=0.4))
    stand_then_policy(ctrl, backend)
    backend.command_log = []
    lockstep(ctrl, backend, 30)
    log = backend.command_log
    first_target, first_kp = log[0][1], log[0][2]
    final = ctrl.action_map.joint_targets(policy.action)
    # the first policy tick is (almost) the stand pose with (almost) the stand gains
    assert np.abs(first_target - spec.default_pos).max() < 0.05 * np.abs(final - spec.default_pos).max() + 1e-6
    np.testing.assert_allclose(first_kp, spec.stand_kp, rtol=0.05)
    np.testing.assert_allclose(log[-1][2], spec.kp)
    np.testing.assert_allclose(log[-1][1], final, atol=1e-9)
    backend.close()


class ActionBounds:
    def __init__(self, spec):
        from deploy.action_map import ActionMap
        am = ActionMap(spec)
        self.low, self.high = am.low.astype(np.float32), am.high.astype(np.float32)


# ---- commands, requests, diagnostics ------------------------------------------------------------
def test_set_command_is_clamped_to_the_spec_ranges(spec, bundle):
    backend = MujocoBackend(spec)
    ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    assert ctrl.set_command(9.0, -9.0, 0.3) == (spec.commands.lin_vel_x[1], spec.commands.lin_vel_y[0], 0.3)
    assert ctrl.set_command(float("nan"), 0, 0) == (0.0, 0.0, 0.0)
    backend.close()


def test_a_policy_request_without_standing_is_dropped_with_a_reason(spec, bundle):
    backend = MujocoBackend(spec)
    ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    ctrl.request_policy()
    lockstep(ctrl, backend, 1)
    assert ctrl.mode is Mode.PASSIVE
    d = ctrl.diagnostics()
    assert d["last_request"]["result"].startswith("dropped") and "stand first" in d["last_request"]["result"]
    assert d["pending_request"] is None
    backend.close()


def test_diagnostics_expose_timing_state_age_and_policy(spec, bundle):
    backend = MujocoBackend(spec)
    ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    stand_then_policy(ctrl, backend)
    lockstep(ctrl, backend, 20)
    d = ctrl.diagnostics()
    json.dumps(d)                                        # plain data, ready for a ROS message
    assert d["mode"] == "POLICY" and d["policy_id"] == bundle.id
    for stage in ("state", "obs", "inference", "safety", "command", "replay", "tick"):
        assert d["loop"]["stages_us"][stage]["n"] == d["tick"]
    assert d["state_age_ms"] == pytest.approx(0.0, abs=1e-6)
    assert [t["to"] for t in d["transitions"]] == ["STAND", "POLICY"]
    backend.close()


# ---- pacing ------------------------------------------------------------------------------------
class StaticBackend:
    """A backend with a fresh, healthy reading every time it is read (wall-clock stamps)."""

    def __init__(self, spec):
        self.spec = spec
        self.commands = 0

    def read_state(self):
        st = RobotState(np.array([[1.0, 0, 0, 0]]), np.zeros((1, 3)), self.spec.default_pos[None].copy(),
                        np.zeros((1, self.spec.num_joints)), np.zeros((1, 3)))
        return StateSample(st, np.zeros(self.spec.num_joints), np.zeros(3), time.monotonic())

    def write_command(self, targets, kp, kd):
        self.commands += 1

    def close(self):
        pass


def test_the_loop_ticks_on_absolute_deadlines_without_drift(spec, bundle):
    backend = StaticBackend(spec)
    ctrl = Controller(spec, backend, bundle)
    t0 = time.monotonic()
    ctrl.start()
    time.sleep(1.0)
    ctrl.stop()
    elapsed = time.monotonic() - t0
    d = ctrl.diagnostics()["loop"]
    expected = elapsed / spec.policy_dt
    # Relative sleeps would lose (tick time + sleep overshoot) every period and fall behind without
    # counting a miss. On absolute deadlines, ticks run plus deadlines counted as missed equal the
    # periods elapsed whatever the machine's load: an identity of the scheduler, not a timing target
    # (the loop's period and jitter are measured by bench/control_loop.py).
    assert abs(d["stages_us"]["tick"]["n"] + d["missed_deadlines"] - expected) <= 2, d
    assert backend.commands == d["stages_us"]["tick"]["n"]


# ---- policy swaps ------------------------------------------------------------------------------
def test_swap_installs_at_a_tick_boundary_and_refuses_a_bad_bundle(spec, bundle, tmp_path,
                                                                    copy_bundle):
    backend = MujocoBackend(spec)
    ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    stand_then_policy(ctrl, backend)
    lockstep(ctrl, backend, 5)
    # a damaged copy: refused at load, nothing changes
    bad = copy_bundle(tmp_path)
    (bad / "policy.onnx").write_bytes((bad / "policy.onnx").read_bytes() + b"\0")
    result = ctrl.swap_policy(bad)
    assert not result.accepted and "sha256" in result.reason
    assert ctrl.mode is Mode.POLICY and ctrl.policy_id == bundle.id
    assert ctrl.safety.counts["swap_refused"] == 1
    # a bundle exported for another spec: refused by the swap check
    other = ConstantPolicy(bundle)
    other.spec_hash = "0" * 64
    assert not ctrl.swap_policy(other).accepted
    # a good one: verified now, installed at the next tick
    fresh = copy_bundle(tmp_path / "good")
    result = ctrl.swap_policy(fresh)
    assert result.accepted and ctrl.diagnostics()["pending_swap"] == bundle.id
    lockstep(ctrl, backend, 1)
    assert ctrl.bundle is not bundle and ctrl.bundle.path == fresh
    assert ctrl.mode is Mode.POLICY
    backend.close()


def test_constructor_refuses_a_bundle_for_another_spec(spec, bundle):
    other = ConstantPolicy(bundle)
    other.robot = "anymal_d"
    with pytest.raises(PolicyRefused, match="anymal_d"):
        Controller(spec, StaticBackend(spec), other)


def test_a_fault_soon_after_a_swap_rolls_back_to_the_previous_bundle(spec, bundle):
    backend = MujocoBackend(spec)
    ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    stand_then_policy(ctrl, backend)
    nan = ConstantPolicy(bundle)
    nan.id = "nan-policy"
    assert ctrl.swap_policy(nan).accepted
    nan.action = np.full(spec.num_joints, np.nan, np.float32)    # turns bad once installed
    lockstep(ctrl, backend, 2)
    assert ctrl.mode is Mode.DAMPING
    assert ctrl.policy_id == bundle.id
    assert ctrl.safety.counts["swap_rolled_back"] == 1
    backend.close()


# ---- replay ------------------------------------------------------------------------------------
def test_every_completed_transition_goes_to_the_replay_writer(spec, bundle, tmp_path):
    from deploy.replay import ReplayReader, ReplayWriter, TransitionLayout
    backend = MujocoBackend(spec)
    layout = TransitionLayout.from_spec(spec, Controller(spec, backend, bundle).pipeline.layout)
    with ReplayWriter(tmp_path / "replay", layout) as writer:
        ctrl = Controller(spec, backend, bundle, replay=writer, clock=backend.clock)
        stand_then_policy(ctrl, backend)
        lockstep(ctrl, backend, 40)
        ctrl.request_damping()
        lockstep(ctrl, backend, 2)
        assert ctrl.diagnostics()["replay"]["dropped"] == 0
    data = ReplayReader(tmp_path / "replay").load()
    n = len(data)
    assert n == 41, n                     # 40 policy ticks after the first + the one that ends it
    np.testing.assert_array_equal(data.next_obs[:-1], data.obs[1:])
    # the writer encodes later, on its own thread: the state it records is the one observed
    rel = data.next_obs[:, ctrl.pipeline.layout.slice("joint_pos_rel")]
    np.testing.assert_allclose(data.fields["joint_pos"], rel + spec.default_pos, atol=1e-5)
    assert data.contiguous[1:].all()
    assert not data.terminated.any()
    assert data.truncated[-1] and not data.truncated[:-1].any()
    assert all(p.rstrip(b"\0").decode() == bundle.id for p in data.fields["policy_id"])
    assert np.isnan(data.rewards).all()
    backend.close()
