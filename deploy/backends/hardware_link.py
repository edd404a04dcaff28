"""HardwareLink: what the backends to real robots (Unitree low-level DDS, ANYmal ROS 2 topics)
share, so that the rules a robot's safety rests on are written once:

- a target from the Controller is sent only while the robot's state is fresh and the target is
  newer than the last recovery from stale state (a target computed from a stale state is never
  sent); otherwise the link sends damping (kp 0, the deploy config's damping kd, q the last
  measured pose) and says why;
- malformed input is dropped and counted by reason, and logged at the 1st, 10th, 100th, 1000th;
  so is a reading that is not plausible (StateBounds: every field the observation or the velocity
  estimator reads, checked finite and inside physical bounds), so nothing implausible reaches the
  Controller or the estimator: a dropped reading is a missing one, and the Controller's freshness
  check damps when no new reading comes for a tick;
- a command-age watchdog: a target older than `command_timeout_s` (the control thread stopped
  producing targets: hung, starved, crashed) is not sent; the link damps and says why, so a
  stalled controller never leaves its last target going out with policy gains;
- `force_damping(reason, now)` damps from the I/O thread at once (the wireless remote's stop),
  until a target written a policy period and a half later shows that the Controller has served
  the damping request made with it; with `latch=True` (nobody told the Controller) until
  `release_forced_damping()`;
- on close, a short burst of damping, so the motors are not left holding a stiff target.

The state and target are handed between the Controller's thread and the link's own I/O thread by
single assignments of objects that are never changed afterwards."""
from __future__ import annotations

import collections
import logging
import math
import time

import numpy as np

from deploy.backend import StateSample
from deploy.contacts import kinematic_contact
from deploy.spec import RobotSpec


# IMU bounds. Unitree and ANYbotics do not name the IMU part of the Go2, G1 or ANYmal D in their
# public documentation, so these are the widest full-scale ranges of the MEMS IMUs such robots
# carry (datasheets: Bosch Sensortec BMI088, BST-BMI088-DS001: accelerometer +-3/6/12/24 g,
# gyroscope +-125 to +-2000 deg/s; TDK InvenSense ICM-42688-P, DS-000347: +-2 to +-16 g, up to
# +-2000 deg/s; InvenSense MPU-9250: +-16 g, +-2000 deg/s). A sensor saturates at its full scale,
# so a reading beyond the widest one (plus 10 % for calibration scale factors) is not a measurement.
IMU_ACCEL_MAX = 1.1 * 24.0 * 9.80665        # m/s^2
IMU_GYRO_MAX = 1.1 * math.radians(2000.0)   # rad/s
QUAT_NORM_TOLERANCE = 0.1                   # | |q| - 1 |, as the supervisor's default
# Joints: a reading a radian beyond the mechanical stop, at 10x the rated speed or 10x the peak
# torque of the spec is an encoder or transport error, not the joint (a leg hitting its stop
# does spike the measured velocity well past the rated speed for a sample; the safety
# supervisor's own, tighter limits decide whether a real reading is a fault).
JOINT_POS_MARGIN = 1.0                      # rad beyond the spec's hard limits
JOINT_RATE_FACTOR = 10.0                    # x the spec's velocity and effort limits


class StateBounds:
    """Plausibility of one robot reading, in policy order: one vectorized comparison (NaN fails
    it too) on the I/O thread, a field-by-field search only to name what failed."""

    def __init__(self, spec: RobotSpec):
        j = spec.num_joints
        self.names = spec.joint_names
        vel, eff = spec.velocity_limit * JOINT_RATE_FACTOR, spec.effort_limit * JOINT_RATE_FACTOR
        self.fields = (("joint_pos", spec.hard_lower - JOINT_POS_MARGIN, spec.hard_upper + JOINT_POS_MARGIN),
                       ("joint_vel", -vel, vel), ("joint_torque", -eff, eff),
                       ("gyro", np.full(3, -IMU_GYRO_MAX), np.full(3, IMU_GYRO_MAX)),
                       ("accel", np.full(3, -IMU_ACCEL_MAX), np.full(3, IMU_ACCEL_MAX)))
        self.lo = np.concatenate([f[1] for f in self.fields])
        self.hi = np.concatenate([f[2] for f in self.fields])
        self.sizes = (j, j, j, 3, 3)

    def problem(self, q, dq, tau, quat, gyro, accel) -> tuple[str, str] | None:
        """None, or (reason, detail) for the drop counter: 'implausible' or 'quaternion'."""
        v = np.concatenate((q, dq, tau, gyro, accel))
        if not ((v >= self.lo) & (v <= self.hi)).all():
            start = 0
            for (name, lo, hi), n in zip(self.fields, self.sizes):
                part = v[start:start + n]
                bad = np.flatnonzero(~((part >= lo) & (part <= hi)))
                if len(bad):
                    i = int(bad[0])
                    which = self.names[i] if name.startswith("joint") else "xyz"[i]
                    return "implausible", (f"{name} {which} = {part[i]!r} outside "
                                           f"[{lo[i]:.4g}, {hi[i]:.4g}]")
                start += n
        norm = math.sqrt(sum(x * x for x in np.asarray(quat, dtype=np.float64).tolist()))
        if not abs(norm - 1.0) <= QUAT_NORM_TOLERANCE:
            return "quaternion", f"|quaternion| = {norm!r} (1 +- {QUAT_NORM_TOLERANCE:g})"
        return None


class HardwareLink:
    """A subclass names its state input (`state_name` in damping reasons, `state_topic` and
    `input_name` in logs), logs to `log`, and sends with `_send(now)`, which takes what to send
    from `_command_now`."""

    state_name: str
    state_topic: str
    input_name: str
    log: logging.Logger

    def __init__(self, spec: RobotSpec, *, state_rate_hz: float, stale_timeout_s: float,
                 damping_kd: np.ndarray | None, close_damping_s: float,
                 command_timeout_s: float | None = None):
        self.spec = spec
        self.period = 1.0 / float(state_rate_hz)
        self.stale_timeout_s = float(stale_timeout_s)
        # default: 5 policy periods (100 ms at 50 Hz): a tick late by a few periods on a loaded
        # computer is not a hung controller; the Controller writes a target on every tick
        self.command_timeout_s = float(5 * spec.policy_dt if command_timeout_s is None
                                       else command_timeout_s)
        if not (math.isfinite(self.command_timeout_s) and self.command_timeout_s > 0):
            raise ValueError(f"command_timeout_s must be a finite number > 0, got {command_timeout_s!r}")
        self._forced: tuple[str, float, bool] | None = None   # (reason, since, latched)
        self.close_damping_s = float(close_damping_s)
        if damping_kd is None:
            from deploy.deploy_config import DeployConfig
            damping_kd = DeployConfig.load(spec).controller.damping_kd
        j = spec.num_joints
        self._damping_kd = np.broadcast_to(np.asarray(damping_kd, dtype=np.float64), (j,)).copy()
        self._zeros = np.zeros(j)
        self.last_target_sent: tuple[float, float] | None = None   # (written at, sent at)
        self._latest: StateSample | None = None
        self._target: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None
        self._counts = collections.Counter()
        self._drops = collections.Counter()
        self._damping_reason: str | None = "no command yet"
        self._last_state_time = -np.inf
        self._stale_since: float | None = None
        self._recovered_at = -np.inf
        self._rate_window = collections.deque(maxlen=2000)
        self.bounds = StateBounds(spec)
        from deploy.velocity_estimator import LegOdometry
        # no robot here measures its base velocity; the reward path (tracking) needs it always,
        # the policy where it observes it. The estimator's kinematics also give the contact
        # estimate of robots without foot sensors (deploy/contacts.py).
        self._velocity = LegOdometry(spec)
        self._policy_reads_velocity = "base_lin_vel" in {t.term for t in spec.observations}

    # ---- RobotBackend ------------------------------------------------------------------------
    def read_state(self) -> StateSample | None:
        return self._latest

    def write_command(self, joint_targets: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> None:
        j = self.spec.num_joints
        q, p, d = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (joint_targets, kp, kd))
        if q.shape != (j,) or p.shape != (j,) or d.shape != (j,):
            raise ValueError(f"write_command expects ({j},) targets and gains in policy order, got "
                             f"{q.shape}, {p.shape}, {d.shape}")
        if not (np.isfinite(q).all() and np.isfinite(p).all() and np.isfinite(d).all()):
            self._counts["commands_rejected_nonfinite"] += 1
            self._target = None            # damping until the next finite command
            return
        self._target = (q.copy(), p.copy(), d.copy(), time.monotonic())

    def force_damping(self, reason: str, now: float, latch: bool = False) -> None:
        """Damp from the next send on, whatever the Controller's last target was, until a target
        written 1.5 policy periods after `now` arrives, or with `latch` until
        release_forced_damping() (see the module doc)."""
        self._forced = (reason, now, latch)
        self._counts["forced_damping"] += 1

    def release_forced_damping(self) -> None:
        self._forced = None

    # ---- status ------------------------------------------------------------------------------
    @property
    def damping(self) -> bool:
        return self._damping_reason is not None

    def _link_diagnostics(self) -> dict:
        """The counters every hardware backend reports, between its own identity and extras."""
        now = time.monotonic()
        window = [t for t in list(self._rate_window) if now - t <= 1.0]
        return {
            "states_received": self._counts["states"], "states_dropped": dict(self._drops),
            "commands_sent": self._counts["commands"], "damping_sent": self._counts["damping"],
            "commands_rejected_nonfinite": self._counts["commands_rejected_nonfinite"],
            "damping": self.damping, "damping_reason": self._damping_reason,
            "stale_events": self._counts["stale_events"],
            "command_timeouts": self._counts["command_timeouts"],
            "command_timeout_s": self.command_timeout_s,
            "forced_damping": self._counts["forced_damping"],
            "state_age_s": None if self._last_state_time == -np.inf else now - self._last_state_time,
            "state_rate_hz": float(len(window)),
            "base_lin_vel": "leg odometry + IMU" + ("" if self._policy_reads_velocity
                                                    else " (reward only)"),
        }

    # ---- the I/O side ------------------------------------------------------------------------
    def _drop(self, reason: str, detail: str) -> None:
        self._drops[reason] += 1
        if self._drops[reason] in (1, 10, 100, 1000):
            self.log.warning("dropped a malformed %s (%s: %s; %d so far)", self.input_name, reason,
                             detail, self._drops[reason])

    def _state_received(self, sample: StateSample, now: float) -> None:
        self._estimate(sample)
        self._latest = sample
        self._counts["states"] += 1
        self._rate_window.append(now)
        if self._stale_since is not None:
            self._stale_since = None
            self._recovered_at = now
            self.log.warning("%s back; damping until the controller writes a new command",
                             self.state_topic)
        self._last_state_time = now

    def _estimate(self, sample: StateSample) -> None:
        """Fill in what the robot does not measure: the base velocity and, without foot sensors,
        the kinematic foot contact. A policy that reads the velocity gets a NaN estimate too (the
        Controller's state check damps: it must not act on an unknown input); for one that does
        not, the estimate serves only the reward, so an unknown one is left out (None) and never
        stops the robot: the reward of that transition stays unknown instead."""
        st = sample.state
        if st.base_lin_vel is not None:
            return
        v = self._velocity.update(st, sample.imu_accel, sample.stamp)
        st.base_lin_vel = v if self._policy_reads_velocity or np.isfinite(v).all() else None
        if sample.foot_contact is None:
            sample.foot_contact = kinematic_contact(self._velocity.sole_heights)

    def _is_stale(self, now: float) -> bool:
        """Whether no state came for stale_timeout_s; the first moment of each silence after a
        state is counted and logged."""
        if now - self._last_state_time <= self.stale_timeout_s:
            return False
        if self._stale_since is None and self._last_state_time > -np.inf:
            self._stale_since = now
            self._counts["stale_events"] += 1
            self.log.warning("%s stale for %.3f s: damping", self.state_topic,
                             now - self._last_state_time)
        return True

    def _command_now(self, now: float, refusal: str | None = None):
        """(q, kp, kd) in policy order to send now: the Controller's target, or damping for a
        `refusal` of the subclass's own or for the first reason below; the reason is kept for
        diagnostics."""
        target, forced = self._target, self._forced
        if forced is not None and not forced[2] and target is not None and \
                target[3] > forced[1] + 1.5 * self.spec.policy_dt:
            self._forced = forced = None
        if refusal:
            reason = refusal
        elif forced is not None:
            reason = forced[0]
        elif now - self._last_state_time > self.stale_timeout_s:
            reason = (f"no {self.state_name} yet" if self._last_state_time == -np.inf
                      else f"stale {self.state_name} ({now - self._last_state_time:.3f} s)")
        elif target is None:
            reason = "no command yet"
        elif target[3] <= self._recovered_at:
            reason = f"{self.state_name} recovered; waiting for a new command"
        elif now - target[3] > self.command_timeout_s:
            reason = (f"command timeout: the last target is {now - target[3]:.3f} s old (limit "
                      f"{self.command_timeout_s:g} s); the control thread stopped")
            if not (self._damping_reason or "").startswith("command timeout"):
                self._counts["command_timeouts"] += 1
                self.log.warning("%s", reason)
        else:
            reason = None
        if reason is None:
            self._counts["commands"] += 1
            self.last_target_sent = (target[3], now)
            q, kp, kd = target[0], target[1], target[2]
        else:
            latest = self._latest
            q = self._zeros if latest is None else latest.state.joint_pos[0]
            kp, kd = self._zeros, self._damping_kd
            self._counts["damping"] += 1
        self._damping_reason = reason
        return q, kp, kd

    def _damp_before_leaving(self) -> None:
        self._target = None
        end = time.monotonic() + self.close_damping_s
        while time.monotonic() < end:
            self._send(time.monotonic())
            time.sleep(self.period)

    def _send(self, now: float) -> None:
        raise NotImplementedError
