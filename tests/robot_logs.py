"""A robot's replay as the Controller logs it: the shipped Go2 policy walking on the MuJoCo backend
with the robot's replay writer (tests of the data contract and of fine-tuning on it)."""
from __future__ import annotations

from pathlib import Path

from deploy.backends.mujoco_backend import MujocoBackend
from deploy.bundle import PolicyBundle
from deploy.controller import Controller
from deploy.registry import PolicyRegistry
from deploy.robot_rewards import robot_replay_writer
from deploy.spec import RobotSpec
from deploy.state_machine import Mode


def walk_and_log(directory: Path, seconds: float = 7.0, command_at: int = 200, seed: int = 1) -> Controller:
    """Stand, walk under the current Go2 bundle (0.5 m/s from tick `command_at`), then damp."""
    spec = RobotSpec.load("go2")
    bundle = PolicyBundle.load(PolicyRegistry().resolve("current", "go2"), spec, providers="cpu")
    backend = MujocoBackend(spec, seed=seed)
    writer = robot_replay_writer(directory, spec, bundle).start()
    ctrl = Controller(spec, backend, bundle, replay=writer, clock=backend.clock)
    ctrl.request_stand()
    for k in range(int(seconds / spec.policy_dt)):
        if ctrl.mode is Mode.STAND:
            ctrl.request_policy()      # served once the stand-up is done
        if k == command_at:
            ctrl.set_command(0.5, 0.0, 0.0)
        ctrl.tick()
        backend.advance()
    walked = ctrl.mode is Mode.POLICY
    ctrl.request_damping()
    ctrl.tick()
    writer.close()
    backend.close()
    assert walked, ctrl.transitions
    return ctrl
