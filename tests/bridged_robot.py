"""What the end-to-end backend tests (test_unitree_backend.py, test_ros2_backend.py) share: a robot
played by a MuJoCo bridge in a child process, driven over DDS by the project's Controller on this
loaded 2-core machine, and taken down so that no DDS peer outlives its test."""
from __future__ import annotations

import time

from deploy.controller import Controller
from deploy.deploy_config import DeployConfig


def wait_for(pred, timeout_s, what):
    end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout_s:g} s")
        time.sleep(0.05)


def loaded_machine_controller(spec, backend) -> Controller:
    """The state-age limit widened for a machine that also trains, and a state allowed to be read
    again on the ticks within that age (arguments, not code paths), and a 1 s stand so the tests
    stand up quickly."""
    cfg = DeployConfig.load(spec).with_safety(max_state_age_s=0.5).repeats_within_age(spec)
    return Controller(spec, backend, config=cfg.with_controller(stand_duration_s=1.0))


def shut_down(bridge, ctrl, backend) -> None:
    """The robot first (as a crash would), then whatever of the controller and backend the test
    got as far as making."""
    bridge.kill()
    if ctrl is not None:
        ctrl.stop()
    if backend is not None:
        backend.close()
