"""The MuJoCo backend as a bench for a robot that stands up hanging from a gantry (the G1's spec
says `stand: gantry: true`): it hangs from every reset, and is let go by the rule the sim2sim
gate uses (deploy.backends.mujoco_backend.GantryRelease: when the policy's blend-in ends), so
`sac2real run` and the ROS 2 node stand it up and hand it to the policy instead of letting it
collapse in STAND. Real parts: the committed G1 checkpoint exported to a bundle, onnxruntime,
MuJoCo, the Controller."""
from __future__ import annotations

import numpy as np
import pytest

from deploy.backends.mujoco_backend import MujocoBackend, SimConditions, release_after_blend_in
from deploy.bundle import PolicyBundle
from deploy.controller import Controller
from deploy.spec import RobotSpec
from deploy.state_machine import Mode
from g1_policy import copy_g1_bundle

STANDING = 0.7      # m: the G1's pelvis stands at ~0.78 m; collapsed in STAND it is far below


@pytest.fixture(scope="module")
def g1():
    return RobotSpec.load("g1")


@pytest.fixture(scope="module")
def g1_bundle(g1, tmp_path_factory) -> PolicyBundle:
    return PolicyBundle.load(copy_g1_bundle(tmp_path_factory.mktemp("policies")), g1,
                             providers="cpu")


def _exact(spec) -> MujocoBackend:
    """Exact sensors: the current policy balances on them for many seconds (with the
    training-time noise it may still trip a joint-limit fault within seconds of the release)."""
    return MujocoBackend(spec, conditions=SimConditions(sensor_noise=0.0))


def test_the_g1_hangs_from_every_reset_and_is_released_when_the_blend_in_ends(g1, g1_bundle):
    backend = _exact(g1)
    ctrl = Controller(g1, backend, g1_bundle, clock=backend.clock)
    release_after_blend_in(ctrl, backend)
    blend_in = ctrl.config.controller.blend_in_s
    assert backend.hung and backend.diagnostics()["stand_gantry"] == "hung"
    ctrl.request_stand()
    log = []                   # (tick time, mode after the tick, hung during the next step)
    for _ in range(int((ctrl._stand_T + 2.0) / g1.policy_dt)):
        now = backend.clock()
        ctrl.tick()
        if ctrl.mode is Mode.STAND and ctrl.last_request.get("request") == "stand":
            ctrl.request_policy()
        backend.advance()
        log.append((now, ctrl.mode, backend.hung, backend.fleet.world.base_pos[0, 2]))
    modes = [m for _, m, _, _ in log]
    assert Mode.DAMPING not in modes, ctrl.transitions
    t_policy = next(t for t, m, _, _ in log if m is Mode.POLICY)
    for t, mode, hung, height in log:
        # hung through STAND and the blend-in, let go from the tick the blend-in has ended
        assert hung == (t < t_policy + blend_in - 1e-9), (t, t_policy, mode)
        assert height > STANDING, (t, mode, height)
    assert backend.diagnostics()["stand_gantry"] == "released"
    backend.fleet.reset(0)                  # back on the bench: hung again
    assert backend.hung
    backend.close()


def test_sac2real_runs_lockstep_loop_keeps_the_g1_up_through_stand_into_policy(g1, g1_bundle):
    """The loop `sac2real run --fast` runs, with the rule it attaches: STAND on the gantry, then
    three seconds of the policy, most of them on the G1's own feet."""
    from deploy.cli_run import _run_lockstep

    backend = _exact(g1)
    ctrl = Controller(g1, backend, g1_bundle, clock=backend.clock)
    release_after_blend_in(ctrl, backend)
    ctrl.set_command(0.0, 0.0, 0.0)
    _run_lockstep(ctrl, backend, 3.0, Mode)
    assert ctrl.safety.last_fatal() is None, ctrl.safety.last_fatal()
    assert [t["to"] for t in ctrl.transitions] == ["STAND", "POLICY", "DAMPING"], ctrl.transitions
    assert ctrl.transitions[-1]["why"] == "operator: damping"
    assert not backend.hung
    st = backend.fleet.truth()
    assert st["base_pos"][0, 2] > STANDING and not st["fall_contact"][0]
    quat = st["state"].base_quat[0]
    assert 1.0 - 2.0 * (quat[1] ** 2 + quat[2] ** 2) > np.cos(0.3)       # upright within 0.3 rad
    backend.close()


def _stand_then_policy(ctrl: Controller, backend: MujocoBackend, seconds: float) -> None:
    """STAND up, POLICY as soon as standing is done, `seconds` more; it must still be in POLICY."""
    ctrl.request_stand()
    for _ in range(int((ctrl._stand_T + seconds) / ctrl.spec.policy_dt)):
        ctrl.tick()
        if ctrl.mode is Mode.STAND and ctrl.last_request.get("request") == "stand":
            ctrl.request_policy()
        backend.advance()
    assert ctrl.mode is Mode.POLICY, ctrl.transitions


def test_the_gait_clock_starts_with_each_policy_episode_and_runs_in_ticks(g1, g1_bundle):
    """The G1 policy sees its gait clock (configs/robots/g1.yaml gait) as in training: 0 on the
    first POLICY tick (an episode's first observation) and one policy period further each tick;
    a second POLICY episode starts it again at 0."""
    backend = _exact(g1)
    ctrl = Controller(g1, backend, g1_bundle, clock=backend.clock)
    release_after_blend_in(ctrl, backend)
    at = ctrl.pipeline.layout.slice("gait_phase")
    seen = []                                   # (episode, tick in POLICY, sin, cos)

    def record(c) -> None:
        if c.mode is Mode.POLICY and c._last_obs is not None:
            episode = sum(t["to"] == "POLICY" for t in c.transitions)
            seen.append((episode, c._tick, *c._last_obs[at]))

    ctrl.on_tick = record
    for episode in (1, 2):
        _stand_then_policy(ctrl, backend, 1.0)
        ctrl.request_stand()                    # POLICY -> STAND, then the next episode
        ctrl.tick()
        backend.advance()
    for episode in (1, 2):
        rows = [r for r in seen if r[0] == episode]
        assert len(rows) > 20
        first = rows[0][1]
        for _, tick, sin, cos in rows:
            angle = 2 * np.pi * (tick - first) * g1.policy_dt / g1.gait.period
            assert (sin, cos) == pytest.approx((np.sin(angle), np.cos(angle)), abs=1e-6)
    backend.close()


def test_the_policy_targets_carry_the_swing_feed_forward_of_the_next_tick(g1, g1_bundle):
    """What the Controller sends in POLICY after the blend-in is the action map's target for the
    policy's action at the gait clock one tick on (the end of the action's tick), as the training
    env's are: the spec's swing pattern added (gait.swing.feedforward), the knee swinging by its
    full apex over a cycle. The targets compared are those handed to the safety filter (which may
    then clamp a wrist's torque: its own tests cover that)."""
    backend = _exact(g1)
    ctrl = Controller(g1, backend, g1_bundle, clock=backend.clock)
    release_after_blend_in(ctrl, backend)
    knee = g1.joint_names.index("left_knee_joint")
    checked, handed = [], {}
    filter_targets = ctrl.safety.filter_targets

    def keep(targets, *args, **kwargs):
        handed[ctrl._tick] = np.array(targets, dtype=np.float64)
        return filter_targets(targets, *args, **kwargs)

    ctrl.safety.filter_targets = keep

    def record(c) -> None:
        blended = c._now - c._blend_t0 >= c.config.controller.blend_in_s
        if c.mode is Mode.POLICY and c._prev_action is not None and blended:
            clock = np.array([(c._tick - c._policy_tick0 + 1) * g1.policy_dt])
            want = c.action_map.joint_targets(np.asarray(c._prev_action, np.float64)[None], clock)[0]
            ff = g1.gait.joint_offsets(clock, g1.num_joints)[0]
            checked.append((c._tick, np.abs(handed[c._tick] - want).max(), ff[knee]))

    ctrl.on_tick = record
    _stand_then_policy(ctrl, backend, 3.5)
    assert all(not e.fatal for e in ctrl.safety.events), ctrl.safety.events
    tick, error, knee_ff = np.array(checked).T
    assert len(tick) > 100 and error.max() < 1e-6
    assert knee_ff.min() == 0.0 and knee_ff.max() > 0.95 * g1.gait.swing.apex
    backend.close()
