"""The wireless-remote map and the robot-health judgement without DDS: bytes as the robot sends
them (unitree_msgs.encode_state), decoded as the backend decodes them."""
from __future__ import annotations

import numpy as np
import pytest

from deploy.backends import unitree_msgs as M
from deploy.remote import RemoteMap, remote_bytes
from deploy.robot_health import HealthMonitor, g1_mode_machines
from deploy.spec import RobotSpec


def _word(buttons):
    return int.from_bytes(remote_bytes(buttons)[2:4], "little")


def test_remote_combinations_act_once_on_press_and_damping_wins():
    rm = RemoteMap("go2")
    assert rm.update(_word(["L2"])) is None
    assert rm.update(_word(["L2", "B"])) == ("damping", "L2+B")
    assert rm.update(_word(["L2", "B"])) is None                    # held: not again
    assert rm.update(_word(["L2", "B", "Up"])) == ("stand", "L2+Up")
    rm.update(0)
    assert rm.update(_word(["L2", "B", "Up"])) == ("damping", "L2+B")   # both at once: the stop
    assert rm.update(_word(["R1", "X"])) == ("policy", "R1+X")


def test_remote_bytes_decode_through_the_lowstate_as_the_sdk_example_reads_them():
    fam = M.family("unitree_go")
    z = np.zeros(fam.motor_slots)
    data = M.encode_state(fam, z, z, z, [1, 0, 0, 0], z[:3], [0, 0, 9.8], 1,
                          remote=remote_bytes(["L2", "B"]))
    r = M.decode_state(fam, data)
    assert r.remote[2] == 1 << 5 and r.remote[3] == 1 << 1        # L2: byte 2 bit 5; B: byte 3 bit 1


def test_a_remote_map_without_damping_or_with_an_unknown_button_is_refused():
    with pytest.raises(ValueError, match="no 'damping'"):
        RemoteMap("go2", {"stand": ("L2", "Up")})
    with pytest.raises(ValueError, match="unknown remote button 'Z'"):
        RemoteMap("go2", {"damping": ("Z",)})
    with pytest.raises(ValueError, match="no wireless remote map for robot 'anymal_d'"):
        RemoteMap("anymal_d")


def test_health_names_the_motor_and_fault_by_joint_name_in_hardware_slots():
    spec = RobotSpec.load("g1")
    mon = HealthMonitor(spec, check_mode_machine=True)
    slots = 35
    temp, err = np.full(slots, 40.0), np.zeros(slots, dtype=np.int64)
    assert mon.assess(temp, err, None, 5).fault is None
    assert "mode_machine 1" in mon.assess(temp, err, None, 1).fault
    knee = spec.policy_to_hardware[spec.joint_index("left_knee_joint")]
    temp[knee] = 91
    h = mon.assess(temp, err, None, 5)
    assert h.hottest_joint == "left_knee_joint" and "over temperature" in h.fault
    err[knee] = 0x20
    assert mon.assess(temp, err, None, 5).fault == "motor error left_knee_joint: 0x20"
    err[:] = 0
    err[34] = 1                              # a slot no joint of the spec uses: not this robot's
    temp[knee] = 40
    assert mon.assess(temp, err, None, 5).fault is None
    assert g1_mode_machines(spec) == (2, 5)


def test_remote_damping_without_a_controller_holds_until_released():
    """A link nobody attached a Controller to (no remote_handler): L2+B damps and keeps damping
    through later targets; with a handler it lasts until the Controller has had a tick to latch."""
    import time

    from deploy.backends.unitree import LowStateLink

    spec = RobotSpec.load("go2")
    fam = M.family(spec.interface)
    slots, p2h = fam.motor_slots, spec.policy_to_hardware

    def lowstate(k, buttons=()):
        q = np.zeros(slots)
        q[p2h] = spec.default_pos + 1e-4 * k
        return M.encode_state(fam, q, np.zeros(slots), np.zeros(slots), [1, 0, 0, 0],
                              [0, 0, 0.001 * k], [0, 0, 9.8], k, remote=remote_bytes(buttons))

    for handler in (None, lambda action, label: None):
        link = LowStateLink(spec, damping_kd=np.ones(12))
        link.remote_handler = handler
        assert link.receive(lowstate(1), time.monotonic())
        link.write_command(spec.default_pos, spec.stand_kp, spec.stand_kd)
        assert link._command_now(time.monotonic())[1].max() > 0          # stand gains go out
        t = time.monotonic()
        assert link.receive(lowstate(2, ["L2", "B"]), t)
        assert link._command_now(t)[1].max() == 0                        # damping at once
        time.sleep(2 * spec.policy_dt)                                 # the Controller's next tick
        link.write_command(spec.default_pos, spec.stand_kp, spec.stand_kd)
        kp = link._command_now(time.monotonic())[1].max()
        assert (kp == 0) if handler is None else (kp > 0)
        link.release_forced_damping()
        assert link._command_now(time.monotonic())[1].max() > 0
