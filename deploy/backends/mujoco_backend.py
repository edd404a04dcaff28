"""MuJoCo as a robot: the RobotBackend the Controller drives in sim2sim and in `sac2real run`.

The PD law runs in MuJoCo's actuators at the sim rate (deploy.sim_world), with the gains the
Controller commands every tick (scaled by the robot's motor strength) and the spec's effort
limits. Between the Controller and the physics sit what a real robot adds:

    action latency   a command reaches the actuators `action_latency_s` after it was written
                     (resolved to the sim step)
    sensor latency   read_state returns the newest sample measured at least `sensor_latency_s` ago
    sensor noise     uniform noise on joint positions and velocities, gyro, linear velocity and
                     attitude, at the spec's training-time observation noise levels x `sensor_noise`
    physics          friction, added base mass, motor strength (per robot; drawn per run from the
                     task's domain-randomization ranges, or set by a sim2sim scenario), pushes
    faults           a wrong joint map (`joint_perm`) or an IMU rate in the world frame
                     (`ang_vel_frame`), and hooks that rewrite samples (tests: NaN, stale)

SimFleet holds N robots in one SimWorld and steps them together (sim2sim: one Controller per
robot, all ticking on the simulation clock, faster than real time). MujocoBackend is one robot,
either stepped by its caller (lockstep, as fast as the CPU allows) or by its own physics thread
paced to the wall clock (a live demo, optionally with the passive viewer).

A robot whose spec asks for a stand gantry (RobotSpec.stand_gantry: the G1 cannot stand up on PD)
hangs from one from every reset, as on a real bench, until GantryRelease (the one rule the sim2sim
gate, `sac2real run` and the ROS 2 node attach to their Controller) lets it go."""
from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from deploy.backend import StateSample
from deploy.config import Section, load_yaml
from deploy.observations import RobotState, quat_rotate_inverse
from deploy.sim_world import SimWorld
from deploy.spec import REPO_ROOT, RobotSpec
from deploy.state_machine import Mode

log = logging.getLogger("deploy.backends.mujoco")
TASKS_DIR = REPO_ROOT / "configs" / "tasks"
EPS = 1e-9


@dataclass(frozen=True)
class Randomization:
    """Per-run physics ranges (the training task's domain randomization)."""

    friction: tuple[float, float] = (1.0, 1.0)
    added_base_mass: tuple[float, float] = (0.0, 0.0)
    motor_strength: tuple[float, float] = (1.0, 1.0)
    push_interval_s: tuple[float, float] = (1e9, 1e9)
    push_velocity: float = 0.0
    action_latency_s: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_task(cls, task: str = "velocity_flat") -> "Randomization":
        """The `domain_randomization` section of configs/tasks/<task>.yaml (the one source)."""
        path = TASKS_DIR / f"{task}.yaml"
        return cls.from_section(Section(load_yaml(path), path).sub("domain_randomization"))

    @classmethod
    def from_section(cls, dr: Section) -> "Randomization":
        """Read and range-check one `domain_randomization` section."""
        return cls(friction=dr.pair("friction", low=0.0, high=5.0),
                   added_base_mass=dr.pair("added_base_mass", low=-50.0, high=200.0),
                   motor_strength=dr.pair("motor_strength", low=0.0, high=5.0),
                   push_interval_s=dr.pair("push_interval_s", low=0.02, high=3600.0),
                   push_velocity=dr.number("push_velocity", low=0.0, high=10.0),
                   action_latency_s=dr.pair("action_latency_s", (0.0, 0.0), low=0.0, high=0.1))


@dataclass(frozen=True)
class SimConditions:
    """Physics, sensing and (for fault injection) wiring of one simulated robot."""

    friction: float = 1.0
    added_base_mass: float = 0.0
    payload_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)   # m, base frame, of the added mass
    motor_strength: float = 1.0
    kp_scale: float = 1.0              # the drive applies kp x this (a gain error in the robot)
    action_latency_s: float = 0.0
    sensor_latency_s: float = 0.0
    sensor_noise: float = 1.0          # x the spec's observation noise levels; 0 = exact sensors
    joint_perm: tuple[int, ...] | None = None   # reported joint i is physical joint perm[i]
    ang_vel_frame: str = "body"        # "world": gyro reported in the world frame (a bug)

    @classmethod
    def randomized(cls, rng: np.random.Generator, ranges: Randomization, **over) -> "SimConditions":
        drawn = dict(friction=float(rng.uniform(*ranges.friction)),
                     added_base_mass=float(rng.uniform(*ranges.added_base_mass)),
                     motor_strength=float(rng.uniform(*ranges.motor_strength)))
        if ranges.action_latency_s[1] > 0:   # as the training env: without it, streams unchanged
            drawn["action_latency_s"] = float(rng.uniform(*ranges.action_latency_s))
        return cls(**{**drawn, **over})


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Body-frame vectors v (N,3) into the world frame of w,x,y,z quaternions q (N,4)."""
    conj = q * np.array([1.0, -1.0, -1.0, -1.0])
    return quat_rotate_inverse(conj, v)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    bw, bx, by, bz = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], 1)


class _NoiseLevels:
    """Uniform noise half-widths from the spec's observation terms (training's own levels)."""

    def __init__(self, spec: RobotSpec):
        n = {t.term: t.noise for t in spec.observations}
        self.lin_vel = n.get("base_lin_vel", 0.0)
        self.ang_vel = n.get("base_ang_vel", 0.0)
        self.tilt = n.get("projected_gravity", 0.0)
        self.joint_pos = n.get("joint_pos_rel", 0.0)
        self.joint_vel = n.get("joint_vel_rel", 0.0)


class SimRobot:
    """One robot of a SimFleet as a deploy.backend.RobotBackend."""

    def __init__(self, fleet: "SimFleet", index: int, conditions: SimConditions):
        self.fleet = fleet
        self.index = index
        self.conditions = conditions
        self.perm = None if conditions.joint_perm is None else np.asarray(conditions.joint_perm)
        self.history: collections.deque[StateSample] = collections.deque(maxlen=self._depth())
        self.commands: collections.deque = collections.deque()
        self.sample_hooks: list[Callable[[StateSample], StateSample]] = []   # tests, faults
        self.command_log: list | None = None    # set to [] to record every command written
        self.closed = False

    def _depth(self) -> int:
        steps = self.conditions.sensor_latency_s / self.fleet.sample_dt
        return int(np.ceil(steps)) + 3

    # ---- RobotBackend ------------------------------------------------------------------------
    def read_state(self) -> StateSample | None:
        h = self.history
        if not h:
            return None
        lat = self.conditions.sensor_latency_s
        if lat <= 0:
            sample = h[-1]
        else:
            cutoff = self.fleet.time - lat + EPS
            sample = None
            for s in reversed(list(h)):
                if s.stamp <= cutoff:
                    sample = s
                    break
            if sample is None:
                sample = h[0]
        for hook in self.sample_hooks:
            sample = hook(sample)
        return sample

    def write_command(self, joint_targets: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> None:
        t = np.array(joint_targets, dtype=np.float64)
        kp, kd = np.array(kp, dtype=np.float64), np.array(kd, dtype=np.float64)
        if self.command_log is not None:
            self.command_log.append((self.fleet.time, t.copy(), kp.copy(), kd.copy()))
        if self.perm is not None:      # command slot i drives physical joint perm[i]
            phys = np.empty_like(t), np.empty_like(kp), np.empty_like(kd)
            phys[0][self.perm], phys[1][self.perm], phys[2][self.perm] = t, kp, kd
            t, kp, kd = phys
        self.commands.append((self.fleet.time + self.conditions.action_latency_s, t, kp, kd))

    def close(self) -> None:
        self.closed = True

    # ---- simulation side -----------------------------------------------------------------------
    def push(self, dv_xy) -> None:
        self.fleet.world.push(np.array([self.index]), np.asarray(dv_xy, dtype=np.float64)[None])

    @property
    def hung(self) -> bool:
        """Whether this robot hangs from its stand gantry."""
        return bool(self.fleet.hung[self.index])

    def release_gantry(self) -> None:
        """Take the stand gantry away before the next physics step (safe to call from the
        Controller's thread while a realtime physics thread steps)."""
        self.fleet.release_gantry(self.index)


class SimFleet:
    """N simulated robots in one SimWorld, stepped together on a simulation clock.

    Each tick: every Controller ticks (reads its robot's latest sample, writes a command), then
    `step()` advances the physics by one policy period, applying each robot's commands at the
    sim step their latency makes them due, and publishes a new sample per robot."""

    def __init__(self, spec: RobotSpec, conditions: list[SimConditions], seed: int = 0,
                 threads: int = 1, time0: float = 0.0):
        self.spec = spec
        self.n = len(conditions)
        self.world = SimWorld(spec, self.n, threads)
        self.rng = np.random.default_rng(seed)
        self.noise = _NoiseLevels(spec)
        self.sample_dt = spec.policy_dt
        self.time0 = time0
        self.substeps = 0
        self.robots = [SimRobot(self, i, c) for i, c in enumerate(conditions)]
        j = spec.num_joints
        self._ctrl = np.tile(spec.default_pos, (self.n, 1))
        self._kp = np.zeros((self.n, j))
        self._kd = np.tile(spec.kd, (self.n, 1))
        self._applied_kp = np.full((self.n, j), np.nan)
        self._applied_kd = np.full((self.n, j), np.nan)
        self._sample_seq = 0
        self.hung = np.zeros(self.n, dtype=bool)       # hangs from the stand gantry
        self._let_go = np.zeros(self.n, dtype=bool)    # release asked for: before the next step
        self.apply_conditions()
        self.world.set_pd_gains(np.arange(self.n), self._kp, self._kd)
        for i in range(self.n):
            self._hang_if_needed(i)
        self.publish()

    @property
    def time(self) -> float:
        return self.time0 + self.substeps * self.spec.sim_dt

    def clock(self) -> float:
        return self.time

    def apply_conditions(self) -> None:
        c = [r.conditions for r in self.robots]
        self.world.set_friction(np.array([x.friction for x in c]))
        self.world.set_added_base_mass(np.array([x.added_base_mass for x in c]),
                                       np.array([x.payload_offset for x in c], dtype=np.float64))
        self.world.set_motor_strength(np.array([x.motor_strength for x in c]),
                                      np.array([x.kp_scale for x in c]))
        self._applied_kp[:] = np.nan    # motor strength rewrote the gains

    def set_conditions(self, index: int, conditions: SimConditions) -> None:
        r = self.robots[index]
        r.conditions = conditions
        r.perm = None if conditions.joint_perm is None else np.asarray(conditions.joint_perm)
        r.history = collections.deque(r.history, maxlen=r._depth())
        self.apply_conditions()

    def reset(self, index: int, joint_pos=None, base_pos=None, base_quat=None) -> None:
        """Place one robot (default pose at spawn height unless given) and publish its state."""
        one = lambda x: None if x is None else np.asarray(x, dtype=np.float64)[None]
        self.world.reset(np.array([index]), one(joint_pos), one(base_pos), one(base_quat))
        q = self.spec.default_pos if joint_pos is None else np.asarray(joint_pos)
        self._ctrl[index] = q
        r = self.robots[index]
        r.commands.clear()
        r.history.clear()
        self._hang_if_needed(index)
        self.publish()

    def _hang_if_needed(self, index: int) -> None:
        """Hang a robot whose spec asks for it from the stand gantry where it now is."""
        if self.spec.stand_gantry:
            self.world.set_gantry(np.array([index]), True)
            self.hung[index], self._let_go[index] = True, False

    def release_gantry(self, index: int) -> None:
        self._let_go[index] = self.hung[index]

    def _release_due(self) -> None:
        gone = np.flatnonzero(self._let_go & self.hung)
        self._let_go[:] = False
        if len(gone):
            self.world.set_gantry(gone, False)
            self.hung[gone] = False

    # ---- stepping ------------------------------------------------------------------------------
    def step(self, substeps: int | None = None) -> None:
        """Advance by `substeps` sim steps (default: one policy period), then publish samples."""
        remaining = self.spec.decimation if substeps is None else substeps
        dt = self.spec.sim_dt
        if self._let_go.any():
            self._release_due()
        while remaining > 0:
            now = self.time
            self._apply_due(now)
            nxt = min((r.commands[0][0] for r in self.robots if r.commands), default=np.inf)
            chunk = remaining if not np.isfinite(nxt) else \
                int(min(remaining, max(1, np.ceil((nxt - now - EPS) / dt))))
            self.world.step(chunk)
            self.substeps += chunk
            remaining -= chunk
        self.publish()

    def _apply_due(self, now: float) -> None:
        due = []
        for r in self.robots:
            q = r.commands
            latest = None
            while q and q[0][0] <= now + EPS:
                latest = q.popleft()
            if latest is not None:
                _, t, kp, kd = latest
                i = r.index
                self._ctrl[i], self._kp[i], self._kd[i] = t, kp, kd
                due.append(i)
        if not due:
            return
        self.world.set_targets(self._ctrl)
        changed = [i for i in due if not (np.array_equal(self._kp[i], self._applied_kp[i])
                                          and np.array_equal(self._kd[i], self._applied_kd[i]))]
        if changed:
            idx = np.array(changed)
            self.world.set_pd_gains(idx, self._kp[idx], self._kd[idx])
            self._applied_kp[idx], self._applied_kd[idx] = self._kp[idx], self._kd[idx]

    def publish(self) -> None:
        """Measure every robot (true state + sensor noise + wiring), one sample each."""
        w, n, nz = self.world, self.n, self.noise
        st = w.read_state()
        stamp = self.time
        torque, accel, base, feet = w.joint_torque, w.imu_accel, w.base_pos, w.foot_forces()
        scale = np.array([r.conditions.sensor_noise for r in self.robots])[:, None]
        rng = self.rng
        j = self.spec.num_joints
        q = st.joint_pos + rng.uniform(-1, 1, (n, j)) * nz.joint_pos * scale
        qd = st.joint_vel + rng.uniform(-1, 1, (n, j)) * nz.joint_vel * scale
        gyro = st.base_ang_vel + rng.uniform(-1, 1, (n, 3)) * nz.ang_vel * scale
        lin = st.base_lin_vel + rng.uniform(-1, 1, (n, 3)) * nz.lin_vel * scale
        quat = st.base_quat
        if nz.tilt > 0 and scale.any():
            ang = rng.uniform(-1, 1, (n, 2)) * nz.tilt * scale * 0.5      # half angles, roll/pitch
            dq = np.concatenate([np.ones((n, 1)), ang, np.zeros((n, 1))], 1)
            dq /= np.linalg.norm(dq, axis=1, keepdims=True)
            quat = quat_mul(quat, dq)
        world_gyro = None
        self._sample_seq += 1
        for r in self.robots:
            i = r.index
            sl = slice(i, i + 1)
            rq, rqd, rtau = q[sl], qd[sl], torque[i]
            if r.perm is not None:
                rq, rqd, rtau = rq[:, r.perm], rqd[:, r.perm], rtau[r.perm]
            rgyro = gyro[sl]
            if r.conditions.ang_vel_frame == "world":
                if world_gyro is None:
                    world_gyro = quat_rotate(quat, gyro)
                rgyro = world_gyro[sl]
            state = RobotState(base_quat=quat[sl], base_ang_vel=rgyro, joint_pos=rq,
                               joint_vel=rqd, base_lin_vel=lin[sl])
            r.history.append(StateSample(state=state, joint_torque=rtau, imu_accel=accel[i],
                                         stamp=stamp, base_pos=base[i], sequence=self._sample_seq,
                                         foot_force=feet[i]))

    # ---- ground truth for metrics ------------------------------------------------------------------
    def truth(self) -> dict:
        st = self.world.read_state()
        terminate, _, feet = self.world.contacts()
        return {"state": st, "base_pos": self.world.base_pos, "torque": self.world.joint_torque,
                "fall_contact": terminate, "feet": feet}

    def close(self) -> None:
        self.world.close()


class GantryRelease:
    """The bench operator's rule for a robot hung for STAND (RobotSpec.stand_gantry): let it go
    once the policy has driven it for the whole blend-in (DeployConfig controller.blend_in_s),
    i.e. from the tick its own targets and gains are commanded unblended; until then the
    stand-up and the hand-over happen on the gantry. The sim2sim gate, `sac2real run` and the
    ROS 2 node all attach it (`release_after_blend_in`), so the robot is let go at the same tick
    of the same run everywhere. Runs as Controller.on_tick, after each tick: it asks again every
    tick until the physics has taken the gantry away."""

    def __init__(self, robot: SimRobot, blend_in_s: float,
                 then: Callable[[object], None] | None = None):
        self.robot = robot
        self.blend_in_s = blend_in_s
        self.then = then                       # the hook that was there before
        self.policy_t0: float | None = None    # when the Controller entered POLICY

    def __call__(self, ctrl) -> None:
        if self.then is not None:
            self.then(ctrl)
        if ctrl.mode is not Mode.POLICY:
            self.policy_t0 = None
            return
        now = ctrl.clock()                     # the tick's time on the Controller's clock
        if self.policy_t0 is None:
            self.policy_t0 = now
        if self.robot.hung and now >= self.policy_t0 + self.blend_in_s - EPS:
            self.robot.release_gantry()


def release_after_blend_in(ctrl, robot: SimRobot) -> None:
    """Attach GantryRelease to `ctrl` for `robot` (which it drives, maybe through fault
    wrappers), keeping any on_tick hook already there."""
    ctrl.on_tick = GantryRelease(robot, ctrl.config.controller.blend_in_s, ctrl.on_tick)


def display_available() -> tuple[bool, str]:
    """Whether a window can open here, and why not."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    return True, ""


class MujocoBackend(SimRobot):
    """One simulated robot as a RobotBackend.

    realtime=False: the caller alternates `controller.tick()` and `backend.advance()` on the
    simulation clock (`backend.clock`), as fast as the CPU allows.
    realtime=True: `start()` runs a physics thread stepping at spec.sim_dt on absolute wall-clock
    deadlines (sample stamps are time.monotonic()), so the Controller runs its own loop thread
    against it exactly as against a robot; `viewer=True` opens mujoco.viewer's passive viewer
    when a display exists (otherwise it says why and runs headless)."""

    def __init__(self, spec: RobotSpec, conditions: SimConditions | None = None, seed: int = 0,
                 randomize: bool = False, randomization: Randomization | None = None,
                 realtime: bool = False, viewer: bool = False, push: bool | None = None):
        rng = np.random.default_rng(seed)
        ranges = randomization or (Randomization.from_task() if randomize else Randomization())
        if conditions is None:
            conditions = SimConditions.randomized(rng, ranges) if randomize else SimConditions()
        self.ranges = ranges
        self.realtime = realtime
        self.pushes = randomize if push is None else push
        self._rng = rng
        fleet = SimFleet(spec, [conditions], seed=seed,
                         time0=time.monotonic() if realtime else 0.0)
        super().__init__(fleet, 0, conditions)
        fleet.robots[0] = self
        fleet.publish()
        self.spec = spec
        self.want_viewer = viewer
        self.viewer = None
        self.viewer_note = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pending_reset: threading.Event | None = None
        self.lag_s = 0.0
        self._next_push = self._draw_push_time()

    @property
    def clock(self) -> Callable[[], float]:
        return time.monotonic if self.realtime else self.fleet.clock

    def _draw_push_time(self) -> float:
        return self.fleet.time + float(self._rng.uniform(*self.ranges.push_interval_s))

    def _maybe_push(self) -> None:
        if self.pushes and self.ranges.push_velocity > 0 and self.fleet.time >= self._next_push:
            v = self.ranges.push_velocity
            self.push(self._rng.uniform(-v, v, 2))
            self._next_push = self._draw_push_time()

    def diagnostics(self) -> dict:
        """The backend's status the ROS 2 node publishes: whether the robot hangs from its stand
        gantry (hung, released, or none for a robot that needs none) and how late the realtime
        physics thread runs."""
        gantry = "hung" if self.hung else "released" if self.spec.stand_gantry else "none"
        return {"stand_gantry": gantry, "physics_lag_ms": round(self.lag_s * 1e3, 3)}

    # ---- lockstep --------------------------------------------------------------------------------
    def advance(self, substeps: int | None = None) -> None:
        if self.realtime:
            raise RuntimeError("a realtime MujocoBackend steps itself; call start()")
        self._maybe_push()
        self.fleet.step(substeps)

    def reset_robot(self, timeout_s: float = 1.0) -> bool:
        """Put the robot back on its feet at the spawn pose (what a person does on the bench after
        a fall). In real time the physics thread does it between two of its steps, never in the
        middle of one; False when that thread did not get to it within `timeout_s`."""
        if self._thread is None:
            self.fleet.reset(self.index)
            return True
        done = threading.Event()
        self._pending_reset = done
        return done.wait(timeout_s)

    # ---- realtime --------------------------------------------------------------------------------
    def start(self, rt_priority: int | None = None) -> "MujocoBackend":
        """Start the physics thread (SCHED_FIFO at `rt_priority` when given: it holds the GIL in
        turns with the Controller, so it must not be preempted by ordinary processes either)."""
        if not self.realtime:
            raise RuntimeError("start() is for realtime=True; in lockstep call advance()")
        if self.want_viewer:
            self.viewer = self._open_viewer()
        self.fleet.sample_dt = self.spec.sim_dt
        self.history = collections.deque(self.history, maxlen=self._depth())
        self.fleet.time0 = time.monotonic() - self.fleet.substeps * self.spec.sim_dt
        self._stop.clear()
        self._thread = threading.Thread(target=self._physics, args=(rt_priority,),
                                        name="mujoco-physics", daemon=True)
        self._thread.start()
        return self

    def _open_viewer(self):
        ok, why = display_available()
        if not ok:
            self.viewer_note = f"viewer not opened: {why}; running headless"
            print(f"sac2real: {self.viewer_note}", file=sys.stderr)
            return None
        try:
            import mujoco.viewer
            return mujoco.viewer.launch_passive(self.fleet.world.model, self.fleet.world.data)
        except Exception as exc:  # no OpenGL context, macOS without mjpython, ...
            self.viewer_note = f"viewer not opened: {exc}; running headless"
            print(f"sac2real: {self.viewer_note}", file=sys.stderr)
            return None

    def _physics(self, rt_priority: int | None = None) -> None:
        from deploy.controller import set_realtime
        self.scheduling = set_realtime(rt_priority)
        dt = self.spec.sim_dt
        fleet = self.fleet
        next_sync = 0.0
        while not self._stop.is_set():
            deadline = fleet.time0 + (fleet.substeps + 1) * dt
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.lag_s = max(0.0, time.monotonic() - deadline)
            reset, self._pending_reset = self._pending_reset, None
            if reset is not None:
                fleet.reset(self.index)
                reset.set()
            self._maybe_push()
            fleet.step(1)
            v = self.viewer
            if v is not None and time.monotonic() >= next_sync:
                try:
                    if not v.is_running():
                        self.viewer = None
                    else:
                        with v.lock():
                            v.sync()
                except Exception as exc:
                    log.warning("viewer closed: %s", exc)
                    self.viewer = None
                next_sync = time.monotonic() + 1 / 60

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
        if self.viewer is not None:
            try:
                self.viewer.close()
            except Exception:
                pass
            self.viewer = None
        self.closed = True
        self.fleet.close()


def with_conditions(base: SimConditions, **over) -> SimConditions:
    return replace(base, **over)
