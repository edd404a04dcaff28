"""What a robot reports about its own health (motor error codes, motor temperatures, battery, the
G1's hardware variant), judged once per reading on the backend's I/O thread.

The judgement (`RobotHealth.fault`) travels with the StateSample; the safety supervisor only reads
that string, so a health check costs the control tick one attribute test. A fault is fatal there
(DAMPING, latched) like any state fault; the same judgement refuses to take control at start
(UnitreeBackend's robot check).

Facts used:
  * G1 `mode_machine` (unitree_hg LowState_) names the hardware variant. Unitree's G1 description
    (unitree_ros, robots/g1_description/README.md) lists 1 g1_23dof, 2 g1_29dof (and with hand),
    3 g1_29dof_lock_waist, 4 g1_23dof_rev_1_0, 5 g1_29dof_rev_1_0 (and with hand), 6
    g1_29dof_lock_waist_rev_1_0. A spec with 29 joints and a waist roll and pitch joint is a 29-dof
    G1 (2 or 5); 27 joints (waist roll and pitch locked): 3 or 6; 23 joints: 1 or 4.
  * hg MotorState_ carries `motorstate` (the driver's error/status word; 0 = no error) and two
    temperatures (winding and housing, deg C); go MotorState_ one temperature and no error word;
    go LowState_ carries the battery's state of charge (`bms_state.soc`, %).

Limits (the project's choice, not Unitree figures, which are not published): a motor at or above
`max_motor_temp_c` is a fault; so is a battery under `min_battery_soc` percent."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deploy.spec import RobotSpec

MAX_MOTOR_TEMP_C = 90.0     # deg C: leaves margin below the windings' insulation class
MIN_BATTERY_SOC = 10.0      # %: the robot still has to stand and sit down on what is left


@dataclass(frozen=True)
class RobotHealth:
    """One reading's health, policy-order names. `fault` is None, or why the robot must damp."""

    fault: str | None
    max_motor_temp_c: float | None = None
    hottest_joint: str = ""
    motor_errors: tuple[tuple[str, int], ...] = ()
    battery_soc: float | None = None
    mode_machine: int | None = None

    def to_dict(self) -> dict:
        return {"fault": self.fault or "", "max_motor_temp_c": self.max_motor_temp_c,
                "hottest_joint": self.hottest_joint,
                "motor_errors": {n: c for n, c in self.motor_errors},
                "battery_soc": self.battery_soc, "mode_machine": self.mode_machine}


def g1_mode_machines(spec: RobotSpec) -> tuple[int, ...]:
    """The `mode_machine` values of the G1 variants this spec describes (see the module doc)."""
    names = set(spec.joint_names)
    waist = {"waist_roll_joint", "waist_pitch_joint"} <= names
    if spec.num_joints == 29 and waist:
        return (2, 5)
    if spec.num_joints == 27:
        return (3, 6)
    if spec.num_joints == 23:
        return (1, 4)
    raise ValueError(f"robot '{spec.name}': {spec.num_joints} joints match no G1 variant "
                     f"(23, 27 or 29 joints)")


class HealthMonitor:
    """Judges one decoded reading (arrays by hardware motor slot) for the spec's motors."""

    def __init__(self, spec: RobotSpec, *, check_mode_machine: bool,
                 max_motor_temp_c: float = MAX_MOTOR_TEMP_C,
                 min_battery_soc: float = MIN_BATTERY_SOC):
        self.names = spec.joint_names
        self.slots = np.asarray(spec.policy_to_hardware)
        self.modes = g1_mode_machines(spec) if check_mode_machine else None
        self.max_temp = float(max_motor_temp_c)
        self.min_soc = float(min_battery_soc)

    def assess(self, temperature: np.ndarray | None, motor_error: np.ndarray | None,
               battery_soc: float | None, mode_machine: int | None) -> RobotHealth:
        """`temperature`, `motor_error`: per motor slot (None where the message has none)."""
        fault = None
        hottest, t_max, errors = "", None, ()
        if motor_error is not None:
            err = motor_error[self.slots]
            if err.any():
                errors = tuple((self.names[i], int(err[i])) for i in np.flatnonzero(err))
                fault = "motor error " + ", ".join(f"{n}: {c:#x}" for n, c in errors)
        if temperature is not None:
            t = temperature[self.slots]
            i = int(np.argmax(t))
            hottest, t_max = self.names[i], float(t[i])
            if fault is None and t_max >= self.max_temp:
                fault = f"motor over temperature: {hottest} at {t_max:g} C (limit {self.max_temp:g} C)"
        if fault is None and battery_soc is not None and battery_soc < self.min_soc:
            fault = f"battery at {battery_soc:g} % (limit {self.min_soc:g} %)"
        if fault is None and self.modes is not None and mode_machine not in self.modes:
            fault = (f"mode_machine {mode_machine} is not this spec's G1 variant "
                     f"(expected one of {', '.join(map(str, self.modes))}): wrong robot or spec")
        return RobotHealth(fault, t_max, hottest, errors, battery_soc, mode_machine)
