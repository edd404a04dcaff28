"""The robot backend interface: what the Controller needs from a robot, whatever carries it
(MuJoCo in-process, Unitree low-level DDS, ANYmal ROS 2 topics).

Everything crossing this interface is in the project's conventions: joints in policy order,
quaternion w, x, y, z, body-frame angular velocity, SI units, monotonic seconds. Each backend
converts at its own edge, once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from deploy.observations import RobotState

if TYPE_CHECKING:
    from deploy.robot_health import RobotHealth


@dataclass
class StateSample:
    """One reading of the robot (batch 1 arrays in `state`, leading axis of length 1). A snapshot:
    a backend never writes into the arrays of a sample it has handed out (the Controller keeps
    samples across ticks and the replay writer encodes them on its own thread)."""

    state: RobotState
    joint_torque: np.ndarray        # (J,) measured or estimated joint torque, N m
    imu_accel: np.ndarray           # (3,) body-frame specific force, m/s^2
    stamp: float                    # time.monotonic() when the backend received it
    base_pos: np.ndarray | None = None   # (3,) world position where known (simulation, mocap)
    sequence: int = 0               # backend's own counter (lowstate tick, message count)
    # (F,) per foot in spec.feet order, where the robot measures it: N from MuJoCo, the sensor's
    # raw counts from a Go2 (Unitree documents no unit); None where it does not (G1, ANYmal over
    # topics). Compare it only with a threshold in the same units (deploy/contacts.py)
    foot_force: np.ndarray | None = None
    # (F,) 1 on the ground, 0 in the air, NaN unknown, spec.feet order: the backend's decision,
    # where the sensor's units are known (deploy/contacts.py); None: the reward path decides
    foot_contact: np.ndarray | None = None
    # what the robot reports of its own health, judged by the backend (deploy/robot_health.py:
    # motor errors, temperatures, battery, G1 variant); None where the robot reports none
    health: "RobotHealth | None" = None


class RobotBackend(Protocol):
    """A robot the Controller can read and command. Implementations never block the caller for
    long: `read_state` returns the latest sample already received (or None before the first), and
    `write_command` hands targets to whatever sends them at the robot's own rate."""

    def read_state(self) -> StateSample | None: ...

    def write_command(self, joint_targets: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> None:
        """Position targets (J,) and gains (J,), policy order: torque = kp (q* - q) - kd qd."""

    def close(self) -> None: ...
