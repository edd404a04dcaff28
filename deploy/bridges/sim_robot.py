"""The simulated robot behind a bridge: one SimWorld robot whose motor drivers obey the gains that
arrive with each command (not the spec's), as a real motor driver does, and whose sensors read
like the robot's (joint encoders, IMU quaternion w,x,y,z, body-frame gyroscope and accelerometer).

Bridges share this and differ only in the wire protocol they speak."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.mjcf import write_pd_actuators
from deploy.observations import quat_rotate_inverse
from deploy.sim_world import SimWorld
from deploy.spec import RobotSpec

GRAVITY = np.array([0.0, 0.0, -9.81])
# White noise of a MEMS IMU sampled at 500 Hz (Bosch BMI088 datasheet: gyroscope 0.014 deg/s/sqrt(Hz),
# accelerometer 175 ug/sqrt(Hz), x sqrt(500 Hz)). Besides realism, it keeps a simulated robot lying
# perfectly still from sending byte-identical lowstates, which a backend rightly drops as frozen.
GYRO_NOISE = 0.005      # rad/s, standard deviation per sample
ACCEL_NOISE = 0.04      # m/s^2


@dataclass
class Sensors:
    q: np.ndarray          # (J,) policy order
    dq: np.ndarray
    tau: np.ndarray
    quat_wxyz: np.ndarray  # (4,)
    gyro: np.ndarray       # (3,) body frame
    accel: np.ndarray      # (3,) body-frame specific force


class SimRobot:
    """Step at `dt` with per-joint PD targets and gains: torque = clip(kp (q* - q) + kd (dq* - dq)
    + tau_ff, +-effort). A joint with zero gains and no feed-forward is limp."""

    def __init__(self, spec: RobotSpec, dt: float):
        self.spec = spec
        self.world = SimWorld(spec, 1)
        self.model, self.data = self.world.model, self.world.data
        self.model.opt.timestep = dt
        self.dt = dt
        # mechanical stops: stiffer than MuJoCo's default soft joint limits (time constant 0.02 s
        # lets a limp leg sink ~0.05 rad past its stop), as stiff as this step size allows
        limited = self.model.jnt_limited.astype(bool)
        self.model.jnt_solref[limited, 0] = max(2.0 * dt, 0.004)
        sh = self.world.shards[0]
        self._act = sh.idx.actuator[0]
        self._dof = sh.idx.dof[0]
        j = spec.num_joints
        self._kp = np.full(j, np.nan)
        self._kd = np.full(j, np.nan)
        self.sim_time = 0.0
        self._prev_v = np.zeros(3)
        self.hung = False                          # hangs from the stand gantry (set_gantry)
        self._noise = np.random.default_rng(0)
        self.set_command(spec.default_pos, np.zeros(j), np.zeros(j))

    def set_command(self, q_target, kp, kd, dq_target=None, tau_ff=None) -> None:
        kp = np.asarray(kp, dtype=np.float64)
        kd = np.asarray(kd, dtype=np.float64)
        if not (np.array_equal(kp, self._kp) and np.array_equal(kd, self._kd)):
            write_pd_actuators(self.model, self._act, kp, kd, self.spec.effort_limit)
            self._kp, self._kd = kp.copy(), kd.copy()
        self.world.set_targets(np.asarray(q_target, dtype=np.float64).reshape(1, -1))
        ff = np.zeros(self.spec.num_joints) if tau_ff is None else np.asarray(tau_ff, dtype=np.float64)
        if dq_target is not None:
            ff = ff + kd * np.asarray(dq_target, dtype=np.float64)
        self.data.qfrc_applied[self._dof] = ff

    def limp(self) -> None:
        j = self.spec.num_joints
        self.set_command(np.zeros(j), np.zeros(j), np.zeros(j))

    def set_gantry(self, on: bool) -> None:
        """Hang the robot where it is now from the gantry a humanoid stands up on (the one
        training, the sim2sim gate and the MuJoCo backend use: deploy.sim_world.Gantry), or take
        it away so the robot stands on its own."""
        self.world.set_gantry(np.array([0]), on)
        self.hung = on

    def step(self) -> None:
        self.world.step(1)
        self.sim_time += self.dt

    def sensors(self) -> Sensors:
        st = self.world.read_state()
        quat = st.base_quat[0]
        # specific force in the body frame: R^T (a_world - g), a_world by finite difference
        v_w = self._world_lin_vel()
        a_world = (v_w - self._prev_v) / self.dt
        self._prev_v = v_w
        accel = quat_rotate_inverse(quat[None], (a_world - GRAVITY)[None])[0]
        noise = self._noise.normal(0.0, 1.0, 6)
        return Sensors(q=st.joint_pos[0].copy(), dq=st.joint_vel[0].copy(),
                       tau=self.world.joint_torque[0].copy(), quat_wxyz=quat.copy(),
                       gyro=st.base_ang_vel[0] + GYRO_NOISE * noise[:3],
                       accel=accel + ACCEL_NOISE * noise[3:])

    def _world_lin_vel(self) -> np.ndarray:
        fd = self.world.shards[0].idx.free_dof[0]
        return self.data.qvel[fd:fd + 3].copy()

    @property
    def base_pos(self) -> np.ndarray:
        return self.world.base_pos[0]

    def settle_limp(self, seconds: float) -> None:
        """Let the robot fall limp onto the floor (a 'lying' start)."""
        self.limp()
        for _ in range(int(round(seconds / self.dt))):
            self.step()


class Pacer:
    """Absolute deadlines t0 + k dt; when more than `max_lag` behind (a loaded machine), skip ahead
    and count it, so a simulated robot runs slower than real time rather than bursting."""

    def __init__(self, dt: float, max_lag: float = 0.05):
        self.dt, self.max_lag = dt, max_lag
        self.t0 = time.monotonic()
        self.k = 0
        self.resyncs = 0

    def wait(self) -> None:
        self.k += 1
        deadline = self.t0 + self.k * self.dt
        now = time.monotonic()
        if deadline > now:
            time.sleep(deadline - now)
        elif now - deadline > self.max_lag:
            self.resyncs += 1
            self.t0, self.k = now, 0


class StatusFile:
    """A JSON status written atomically (tmp + rename) at most every `every_s` seconds, for tests
    and people watching a bridge."""

    def __init__(self, path: str | Path | None, every_s: float = 0.1):
        self.path = Path(path) if path else None
        self.every_s = every_s
        self._next = 0.0

    def due(self) -> bool:
        return self.path is not None and time.monotonic() >= self._next

    def write(self, status: dict) -> None:
        if self.path is None:
            return
        self._next = time.monotonic() + self.every_s
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.path)


def robot_status(robot: SimRobot, s: Sensors) -> dict:
    spec = robot.spec
    return {"sim_time": round(robot.sim_time, 6), "base_pos": robot.base_pos.tolist(),
            "base_quat": s.quat_wxyz.tolist(), "joint_pos": s.q.tolist(),
            "joint_error_max": float(np.max(np.abs(s.q - spec.default_pos))),
            "upright": float(1.0 - 2.0 * (s.quat_wxyz[1] ** 2 + s.quat_wxyz[2] ** 2))}
