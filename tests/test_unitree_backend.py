"""The Unitree backend end to end on the loopback interface: real unitree_sdk2py and cyclonedds,
the MuJoCo DDS bridge (deploy/bridges/unitree_dds.py) playing the robot in a child process, the
project's Controller driving it.

The bridge runs at 200 Hz here (the robots publish at 500 Hz; bench/unitree_io.py measures that
rate), because this 2-core machine also trains. The state-age limit is widened for the same
reason; both are arguments, not code paths."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from bridged_robot import loaded_machine_controller, shut_down, wait_for

from deploy.bridges.process import dds_test_domain, unitree_bridge
from deploy.spec import RobotSpec

if os.environ.get("CI"):
    import unitree_sdk2py  # noqa: F401  (CI installs it: a missing SDK is a failure there)
else:
    pytest.importorskip("unitree_sdk2py", reason="unitree_sdk2py not installed (pip install -e '.[unitree]')")

from deploy.backends import unitree_msgs as M  # noqa: E402
from deploy.backends.unitree import (DdsLink, UnitreeBackend, UnitreeBackendError,  # noqa: E402
                                     init_channel_factory)

RATE = 200.0
DOMAIN = dds_test_domain()


def _backend(spec, **kw):
    kw.setdefault("stale_timeout_s", 0.25)
    kw.setdefault("lowcmd_check_s", 0.4)
    kw.setdefault("command_timeout_s", 0.5)        # a loaded machine's controller thread
    return UnitreeBackend(spec, "lo", DOMAIN, state_rate_hz=RATE, **kw)


def _inject(path, **fields):
    """What the bridge puts into its next lowstates (deploy/bridges/unitree_dds.py --inject-file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(fields))
    os.replace(tmp, path)


def _standing(spec, st) -> bool:
    return (st["base_pos"][2] > 0.8 * spec.base_height * (0.72 if spec.name == "go2" else 0.9)
            and st["upright"] > 0.97 and st["joint_error_max"] < 0.25)


def test_g1_stands_up_on_the_gantry_after_the_backend_releases_the_builtin_mode(tmp_path):
    """As on the real G1: it hangs from a gantry while the built-in mode is released and the
    controller stands it up at Unitree's gains; the gantry goes when asked. (Without a policy it
    then falls: on PD alone its ankles cannot balance it, configs/robots/g1.yaml stand.)"""
    spec = RobotSpec.load("g1")
    with unitree_bridge("g1", DOMAIN, tmp_path / "g1.json", RATE, builtin_mode="normal",
                        gantry=True) as bridge:
        backend = _backend(spec)
        ctrl = loaded_machine_controller(spec, backend)
        try:
            assert backend.released_mode == "normal"
            st = bridge.wait_status(lambda s: s["builtin_mode"] == "", 2, "the status file")
            # the G1 example releases without StandDown (it hangs from the gantry)
            assert "StandDown" not in st["service_calls"] and "ReleaseMode" in st["service_calls"]
            # the SDK's RPC client is closed after use: no reader thread left for exit to trip on
            assert not [t for t in threading.enumerate() if t.name == "ch_reader"]
            ctrl.start()
            wait_for(lambda: backend.read_state() is not None, 5, "first lowstate")
            ctrl.request_stand()
            wait_for(lambda: ctrl.mode.value == "STAND", 5, "STAND")
            bridge.wait_status(lambda s: s["joint_error_max"] < 0.1, 10,
                               "G1 at its stand pose on the gantry")
            wait_for(lambda: backend.diagnostics()["commands_sent"] > 100, 5, "100 commands sent")
            st = bridge.wait_status(lambda s: s.get("lowcmd_received", 0) > 100, 5, "100 received")
            assert st["gantry"] and _standing(spec, st), st
            bridge.signal(signal.SIGUSR1)          # gantry away
            bridge.wait_status(lambda s: not s["gantry"], 5, "gantry taken away")
            d = backend.diagnostics()
            assert d["damping"] is False and d["commands_sent"] > 100 and not d["states_dropped"]
            assert st["lowcmd_received"] > 100 and not st["lowcmd_dropped"]
            # the state reaches the controller in policy order, quaternion w first
            s = backend.read_state()
            np.testing.assert_allclose(s.state.joint_pos[0], st["joint_pos"], atol=0.05)
            assert s.state.base_quat[0, 0] > 0.98

            # a second controller on the same robot is refused: rt/lowcmd already has a publisher
            with pytest.raises(UnitreeBackendError, match="another process publishes rt/lowcmd"):
                _backend(spec, release_motion_mode=False)
        finally:
            ctrl.stop()
            backend.close()


def test_go2_stands_up_from_lying_then_damps_when_the_bridge_is_killed(tmp_path):
    spec = RobotSpec.load("go2")
    bridge = unitree_bridge("go2", DOMAIN, tmp_path / "go2.json", RATE, start="lying")
    backend = ctrl = None
    try:
        st = bridge.status()
        assert st["base_pos"][2] < 0.15, st            # lying on the floor
        backend = _backend(spec)
        assert backend.released_mode == ""              # nothing active to release
        ctrl = loaded_machine_controller(spec, backend)
        ctrl.start()
        wait_for(lambda: backend.read_state() is not None, 5, "first lowstate")
        ctrl.request_stand()
        wait_for(lambda: ctrl.mode.value == "STAND", 5, "STAND")
        st = bridge.wait_status(lambda s: _standing(spec, s), 8, "Go2 standing")
        time.sleep(1.0)
        st = bridge.status()
        assert _standing(spec, st), st                  # and it holds
        assert not backend.diagnostics()["damping"]
        v = backend.read_state().state.base_lin_vel     # estimated: lowstate has no base velocity
        assert v is not None and np.abs(v).max() < 0.1, v

        bridge.kill()                                   # SIGKILL: the robot goes silent
        wait_for(lambda: (backend.diagnostics()["damping_reason"] or "").startswith("stale lowstate"),
              2, "backend damping on stale lowstate")
        assert backend.diagnostics()["stale_events"] >= 1
        assert backend.read_state() is not None         # the last sample stays readable
        wait_for(lambda: ctrl.mode.value == "DAMPING", 2, "controller DAMPING")
        assert ctrl.diagnostics()["safety"]["counts"].get("stale_state", 0) >= 1

        # malformed lowstates are dropped and counted, and do not revive a silent robot
        injector = DdsLink(DOMAIN)
        state_t, _ = M.sdk_types(spec.interface)
        out = injector.writer("rt/lowstate", state_t)
        fam = M.family(spec.interface)
        z = np.zeros(fam.motor_slots)
        good = bytearray(M.encode_state(fam, z, z, z, [1, 0, 0, 0], [0, 0, 0], [0, 0, 9.8], 9))
        good[200] ^= 1
        hg = M.family("unitree_hg")
        z35 = np.zeros(35)
        wrong_count = M.encode_state(hg, z35, z35, z35, [1, 0, 0, 0], [0, 0, 0], [0, 0, 9.8], 9)
        time.sleep(0.3)                                  # discovery of the injector
        for payload in (bytes(good), wrong_count):
            assert out.write(payload)
            time.sleep(0.1)
        wait_for(lambda: len(backend.diagnostics()["states_dropped"]) == 2, 3, "both drops counted")
        d = backend.diagnostics()
        assert d["states_dropped"] == {"crc": 1, "size": 1} and d["damping"]
        injector.close()
    finally:
        shut_down(bridge, ctrl, backend)


class Injector:
    """Plays a broken robot on rt/lowstate at the bridge's rate from a thread of this process, after
    the real bridge is paused (SIGSTOP): `make(k)` returns the k-th message's bytes."""

    def __init__(self, spec):
        self.link = DdsLink(DOMAIN)
        self.out = self.link.writer("rt/lowstate", M.sdk_types(spec.interface)[0])
        self.make = None
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.make is not None:
                self.out.write(self.make(self.sent))
                self.sent += 1
            time.sleep(1.0 / RATE)

    def close(self):
        self._stop.set()
        self._thread.join()
        self.link.close()


def _bad_streams(spec, last):
    """name -> make(k): lowstate bytes built from the last valid reading `last` (policy order)."""
    fam = M.family(spec.interface)
    p2h = spec.policy_to_hardware
    def enc(k, tick=None, accel=None, gyro=None, dq_scale=1.0, wiggle=True):
        q, dq, tau = (np.zeros(fam.motor_slots) for _ in range(3))
        q[p2h] = last.state.joint_pos[0] + (1e-4 * (k % 7) if wiggle else 0.0)
        dq[p2h] = last.state.joint_vel[0] * dq_scale
        tau[p2h] = last.joint_torque
        return M.encode_state(fam, q, dq, tau, last.state.base_quat[0],
                              last.state.base_ang_vel[0] if gyro is None else gyro,
                              last.imu_accel if accel is None else accel,
                              10_000_000 + k if tick is None else tick)
    def bad_crc(k):
        b = bytearray(enc(k))
        b[100] ^= 0x10
        return bytes(b)
    return {
        "silence": None,
        "crc": bad_crc,
        "nan_accel": lambda k: enc(k, accel=[np.nan, 0.0, 9.8]),
        "huge_accel": lambda k: enc(k, accel=[3e38, 0.0, 9.8]),
        "huge_gyro": lambda k: enc(k, gyro=[0.0, 1e6, 0.0]),
        "frozen_tick": lambda k: enc(k, tick=42),
        "identical_bytes": lambda k: enc(k, wiggle=False),
    }


def test_invalid_frozen_or_missing_lowstates_damp_by_the_2nd_policy_tick_over_dds(tmp_path):
    """The review's findings: invalid or dropped lowstates reached DAMPING only through the age
    check (3.5-3.8 ticks) with no LowCmd for ~100 ms; a frozen lowstate (same bytes, or only the
    tick frozen) was accepted; a NaN or 3e38 accelerometer reading went into the estimator.
    Each broken stream below replaces the bridged Go2's lowstates: nothing of it reaches the
    controller or the estimator, the I/O thread keeps sending LowCmds at its rate, and the
    Controller is in DAMPING by the 2nd policy tick after the last valid lowstate (ticks driven
    by this test at the policy period, each counted from that lowstate's arrival)."""
    from deploy.controller import Controller
    from deploy.deploy_config import DeployConfig

    spec = RobotSpec.load("go2")
    bridge = unitree_bridge("go2", DOMAIN, tmp_path / "go2.json", RATE)
    backend = ctrl = injector = None
    try:
        # the backend's own stale timeout far away: what damps here is the Controller
        backend = _backend(spec, stale_timeout_s=1.0)
        cfg = DeployConfig.load(spec).with_safety(max_state_age_s=0.5)   # max_repeated_ticks: 0
        ctrl = Controller(spec, backend, config=cfg.with_controller(stand_duration_s=1.0))
        injector = Injector(spec)

        def tick_on_fresh_state():
            seen = backend.read_state()
            wait_for(lambda: backend.read_state() is not seen, 2, "a new lowstate")
            ctrl.tick(time.monotonic())

        time.sleep(0.3)                                      # discovery of the injector
        for name in _bad_streams(spec, None):
            bridge.signal(signal.SIGCONT)
            for _ in range(3):
                tick_on_fresh_state()
            ctrl.request_reset()
            ctrl.request_stand()
            tick_on_fresh_state()
            assert ctrl.mode.value == "STAND", (name, ctrl.diagnostics()["last_request"])
            for _ in range(5):
                tick_on_fresh_state()
            bridge.signal(signal.SIGSTOP)                    # the robot's own stream stops
            time.sleep(0.05)                                 # what was in flight arrives
            streams = _bad_streams(spec, backend.read_state())
            d0 = backend.diagnostics()
            sent0 = d0["commands_sent"] + d0["damping_sent"]
            injector.make = streams[name]
            ticks = []
            for _ in range(12):
                time.sleep(spec.policy_dt)
                t = time.monotonic()
                ctrl.tick(t)
                ticks.append((t, ctrl.mode.value))
            injector.make = None
            last = backend.read_state()                      # the last valid lowstate
            after = [mode for t, mode in ticks if t > last.stamp]
            assert "DAMPING" in after[:2], (name, after)
            assert ctrl.safety.last_fatal().reason == "stale_state", name
            d = backend.diagnostics()
            if name != "silence":
                assert injector.sent > 0
                assert sum(d["states_dropped"].values()) > sum(d0["states_dropped"].values()), name
            # nothing implausible reached the estimator or the sample
            assert np.abs(last.state.base_lin_vel).max() < 1.0, (name, last.state.base_lin_vel)
            assert np.abs(last.imu_accel).max() < 100 and np.abs(last.state.base_ang_vel).max() < 30, name
            # the command stream went on at the I/O thread's rate while only bad input came
            assert d["commands_sent"] + d["damping_sent"] - sent0 > 0, name
            injector.sent = 0
        dropped = backend.diagnostics()["states_dropped"]
        assert {"crc", "nonfinite", "implausible", "frozen_tick", "repeated"} <= set(dropped), dropped
    finally:
        bridge.signal(signal.SIGCONT)
        if injector is not None:
            injector.close()
        shut_down(bridge, ctrl, backend)


def test_a_missing_network_interface_is_refused_by_name():
    spec = RobotSpec.load("go2")
    with pytest.raises(UnitreeBackendError, match="'nosuchif0' does not exist .available: .*lo"):
        UnitreeBackend(spec, "nosuchif0", DOMAIN)


def test_a_robot_without_a_unitree_interface_is_refused():
    with pytest.raises(UnitreeBackendError, match="anymal_ros2"):
        UnitreeBackend(RobotSpec.load("anymal_d"), "lo", DOMAIN)


def test_the_sdk_cannot_be_moved_to_another_domain_in_one_process():
    init_channel_factory(DOMAIN, "lo")
    with pytest.raises(UnitreeBackendError, match="already initialised"):
        init_channel_factory(DOMAIN + 1, "lo")


# ---- issue 22: taking control, the remote, the watchdog, robot health ---------------------------
def _manual(spec, backend):
    """A Controller this test ticks itself (so 'within one tick' is counted, not timed)."""
    from deploy.controller import Controller
    from deploy.deploy_config import DeployConfig
    cfg = DeployConfig.load(spec).with_safety(max_state_age_s=0.5).repeats_within_age(spec)
    return Controller(spec, backend, config=cfg.with_controller(stand_duration_s=0.5))


def _tick_until(ctrl, pred, n, what):
    for _ in range(n):
        ctrl.tick(time.monotonic())
        if pred():
            return
        time.sleep(ctrl.spec.policy_dt)
    raise AssertionError(f"{what} not reached in {n} ticks: {ctrl.mode.value}")


def test_go2_constructing_leaves_the_robot_to_its_builtin_mode_and_take_control_stands_it_down_first(tmp_path):
    """Configure (the constructor) sends nothing; take_control releases the sport mode only after
    StandDown (as unitree_sdk2_python's go2_stand_example), so a standing Go2 is lowered first."""
    spec = RobotSpec.load("go2")
    bridge = unitree_bridge("go2", DOMAIN, tmp_path / "go2.json", RATE, builtin_mode="normal")
    backend = None
    try:
        backend = _backend(spec, take_control=False)
        found = backend.check_robot()
        assert found["health"]["fault"] == "" and found["health"]["battery_soc"] == 100
        time.sleep(0.3)
        st = bridge.status()
        assert st["builtin_mode"] == "normal" and st.get("lowcmd_received", 0) == 0 and not st["service_calls"]
        assert not backend.in_control and backend.diagnostics()["commands_sent"] == 0
        assert backend.take_control() == "normal"
        calls = bridge.wait_status(lambda s: "ReleaseMode" in s["service_calls"], 2,
                                   "the status file")["service_calls"]
        assert calls.index("StandDown") < calls.index("ReleaseMode"), calls
        bridge.wait_status(lambda s: s.get("lowcmd_received", 0) > 10 and s["builtin_mode"] == "", 5,
                           "lowcmd obeyed after the release")
        assert backend.diagnostics()["damping"]          # no target yet: damping goes out
    finally:
        shut_down(bridge, None, backend)


def test_go2_remote_damps_before_the_next_tick_and_stands_again_from_the_remote(tmp_path):
    from deploy.remote import controller_handler

    spec = RobotSpec.load("go2")
    inject = tmp_path / "inject.json"
    _inject(inject)
    bridge = unitree_bridge("go2", DOMAIN, tmp_path / "go2.json", RATE, inject_file=inject)
    backend = ctrl = None
    try:
        backend = _backend(spec)
        ctrl = _manual(spec, backend)
        backend.remote_handler = controller_handler(ctrl)
        wait_for(lambda: backend.read_state() is not None, 5, "first lowstate")
        ctrl.tick(time.monotonic())

        def press(*buttons, action):
            n = backend.diagnostics()["remote"][action]
            _inject(inject)                               # all released, then the combination
            time.sleep(0.15)
            _inject(inject, remote=list(buttons))
            wait_for(lambda: backend.diagnostics()["remote"][action] == n + 1, 3, f"{buttons} seen")

        press("L2", "Up", action="stand")                # L2+Up: STAND on the next tick
        ctrl.tick(time.monotonic())
        assert ctrl.mode.value == "STAND"
        _tick_until(ctrl, lambda: not backend.diagnostics()["damping"] and ctrl.diagnostics()
                    ["pending_request"] is None, 100, "standing with targets going out")
        bridge.wait_status(lambda s: s["last_kp_max"] > 0, 3, "stand gains applied")

        press("L2", "B", action="damping")               # L2+B: no controller tick in between
        # the count moves on the lowstate, the reason with the I/O thread's next send after it
        wait_for(lambda: (backend.diagnostics()["damping_reason"] or "").startswith(
            "wireless remote L2+B"), 1, "the link damping on the remote's stop")
        bridge.wait_status(lambda s: s["last_kp_max"] == 0.0, 3, "the robot receives damping")
        ctrl.tick(time.monotonic())                      # the very next tick latches it
        assert ctrl.mode.value == "DAMPING" and ctrl.latched

        press("L2", "Up", action="stand")                # the remote unlatches and stands again
        ctrl.tick(time.monotonic())
        assert ctrl.mode.value == "STAND" and not ctrl.latched
    finally:
        shut_down(bridge, ctrl, backend)


def test_a_stalled_control_thread_is_damped_by_the_command_age_watchdog(tmp_path):
    spec = RobotSpec.load("go2")
    bridge = unitree_bridge("go2", DOMAIN, tmp_path / "go2.json", RATE)
    backend = ctrl = None
    try:
        backend = _backend(spec, command_timeout_s=0.2)
        ctrl = _manual(spec, backend)
        wait_for(lambda: backend.read_state() is not None, 5, "first lowstate")
        ctrl.request_stand()
        _tick_until(ctrl, lambda: not backend.diagnostics()["damping"], 50, "targets going out")
        bridge.wait_status(lambda s: s["last_kp_max"] > 0, 3, "stand gains applied")
        # the control thread stops (no more ticks): the writer must stop sending its last target
        wait_for(lambda: (backend.diagnostics()["damping_reason"] or "").startswith("command timeout"),
                 3, "watchdog damping")
        written, sent = backend.last_target_sent
        assert sent - written <= backend.command_timeout_s     # never sent older than its limit
        assert backend.diagnostics()["command_timeouts"] == 1
        bridge.wait_status(lambda s: s["last_kp_max"] == 0.0, 3, "the robot receives damping")
        ctrl.tick(time.monotonic())                             # a live tick resumes the targets
        wait_for(lambda: not backend.diagnostics()["damping"], 3, "targets again")
    finally:
        shut_down(bridge, ctrl, backend)


def test_an_idle_foreign_lowcmd_writer_does_not_block_a_publishing_one_does(tmp_path):
    spec = RobotSpec.load("go2")
    inject = tmp_path / "inject.json"
    _inject(inject, foreign_lowcmd="publishing")
    bridge = unitree_bridge("go2", DOMAIN, tmp_path / "go2.json", RATE, inject_file=inject)
    backend = ctrl = None
    try:
        backend = _backend(spec, take_control=False)
        with pytest.raises(UnitreeBackendError, match="another process publishes rt/lowcmd"):
            backend.check_robot()
        _inject(inject, foreign_lowcmd="idle")
        wait_for(lambda: not backend.foreign_lowcmd_traffic(0.3), 5, "the foreign writer idle")
        assert backend._cmd_seen.foreign_publishers()         # its DataWriter is still there
        backend.take_control()
        ctrl = _manual(spec, backend)
        ctrl.request_stand()
        _tick_until(ctrl, lambda: not backend.diagnostics()["damping"], 50, "targets going out")
        _inject(inject, foreign_lowcmd="publishing")           # now it sends: damp, latched
        for _ in range(100):
            ctrl.tick(time.monotonic())
            if backend.diagnostics()["foreign_lowcmd"]:
                break
            time.sleep(spec.policy_dt)
        ctrl.tick(time.monotonic())                            # a fresh target: still refused
        wait_for(lambda: (backend.diagnostics()["damping_reason"] or "").startswith(
            "another process sends rt/lowcmd"), 2, "damping for the foreign traffic")
    finally:
        shut_down(bridge, ctrl, backend)


def test_go2_over_temperature_damps_the_controller_and_a_low_battery_refuses_control(tmp_path):
    spec = RobotSpec.load("go2")
    inject = tmp_path / "inject.json"
    _inject(inject, battery_soc=5)
    bridge = unitree_bridge("go2", DOMAIN, tmp_path / "go2.json", RATE, inject_file=inject)
    backend = ctrl = None
    try:
        backend = _backend(spec, take_control=False)
        wait_for(lambda: backend.read_state() is not None, 5, "first lowstate")
        with pytest.raises(UnitreeBackendError, match="battery at 5 %"):
            backend.check_robot()
        _inject(inject)
        wait_for(lambda: backend.read_state().health.fault is None, 3, "battery back")
        backend.check_robot()
        backend.take_control()
        ctrl = _manual(spec, backend)
        ctrl.request_stand()
        _tick_until(ctrl, lambda: ctrl.mode.value == "STAND", 20, "STAND")
        _inject(inject, temperature={"FR_calf_joint": 95})
        _tick_until(ctrl, lambda: ctrl.mode.value == "DAMPING", 100, "DAMPING on over-temperature")
        ev = ctrl.safety.last_fatal()
        assert ev.reason == "robot_health" and "FR_calf_joint at 95 C" in ev.detail, ev
    finally:
        shut_down(bridge, ctrl, backend)


def test_g1_check_refuses_another_variant_and_a_motor_error(tmp_path):
    spec = RobotSpec.load("g1")
    inject = tmp_path / "inject.json"
    _inject(inject, mode_machine=1)                   # a 23-dof G1 under a 29-dof spec
    bridge = unitree_bridge("g1", DOMAIN, tmp_path / "g1.json", RATE, gantry=True,
                            inject_file=inject)
    backend = None
    try:
        backend = _backend(spec, take_control=False)
        with pytest.raises(UnitreeBackendError, match="mode_machine 1 is not this spec's G1 variant"):
            backend.check_robot(timeout_s=5)
        _inject(inject, motor_error={"left_knee_joint": 0x4})
        wait_for(lambda: "motor error" in (backend.read_state().health.fault or ""), 3, "error seen")
        with pytest.raises(UnitreeBackendError, match="motor error left_knee_joint: 0x4"):
            backend.check_robot()
        _inject(inject)
        wait_for(lambda: backend.read_state().health.fault is None, 3, "healthy")
        assert backend.check_robot()["mode_machine"] == 5
    finally:
        shut_down(bridge, None, backend)


def test_go2_foot_force_reaches_the_sample_in_the_specs_foot_order():
    """A lowstate published with unitree_sdk2py's own message and publisher: its foot_force lists
    the legs FR, FL, RR, RL, the spec's feet are FL, FR, RL, RR. The readings arrive mapped by
    name, with the contact they show over the deploy config's threshold (40 raw counts)."""
    from unitree_sdk2py.core.channel import ChannelPublisher
    from unitree_sdk2py.idl.default import unitree_go_msg_dds__LowState_
    from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowState_
    from unitree_sdk2py.utils.crc import CRC

    spec = RobotSpec.load("go2")
    backend = _backend(spec, take_control=False)
    publisher = ChannelPublisher("rt/lowstate", LowState_)
    publisher.Init()
    try:
        msg = unitree_go_msg_dds__LowState_()
        msg.head, msg.level_flag, msg.bms_state.soc = [0xFE, 0xEF], 0xFF, 100
        msg.imu_state.quaternion = [1.0, 0.0, 0.0, 0.0]
        msg.imu_state.accelerometer = [0.0, 0.0, 9.8]
        msg.foot_force = [100, 10, 70, 0]                     # FR, FL, RR, RL
        for slot, q in zip(spec.policy_to_hardware.tolist(), spec.default_pos.tolist()):
            msg.motor_state[slot].q = q
        for tick in range(1, 200):
            if backend.read_state() is not None:
                break
            msg.tick = tick
            msg.motor_state[spec.policy_to_hardware[0]].q = spec.default_pos[0] + 1e-4 * tick
            msg.crc = CRC().Crc(msg)
            publisher.Write(msg)
            time.sleep(0.02)
        sample = backend.read_state()
        assert sample is not None, backend.diagnostics()["states_dropped"]
        np.testing.assert_array_equal(sample.foot_force, [10, 100, 0, 70])    # FL, FR, RL, RR
        np.testing.assert_array_equal(sample.foot_contact, [0, 1, 0, 1])
    finally:
        publisher.Close()
        backend.close()
