"""Planted faults: classic deployment bugs injected into an otherwise correct sim2sim run, to prove
that the gate rejects them (`sac2real sim2sim BUNDLE --fault NAME[:ARGS]`, tests/test_sim2sim_gate.py).

Each fault names where it lives (the backend, the controller or the bundle) and changes exactly
one thing there; everything else (the Controller, the safety supervisor, the metrics) runs
unchanged. A run with a fault never records a verdict in the bundle.

    swap_joints:A,B     backend   the joint map exchanges joints A and B (state and command)
    action_scale:F      controller  joint target = default + F x spec scale x action
    kp_scale:F          controller  the policy's position gains are multiplied by F
    no_normalizer       bundle    the observation normalizer is removed from the ONNX graph
                                  (mean 0, std 1), as an export that forgot it (needs `onnx`)
    latency:S           backend   S seconds of extra command latency
    ang_vel_world       backend   the IMU angular velocity is reported in the world frame
    encoder_offset:J,R  backend   joint J's encoder zero is off by R rad (state and motor target)
    joint_vel_scale:F   backend   reported joint velocities x F
    motor_inverted:J    backend   joint J's motor and encoder turn the other way
    gyro_deg            backend   the gyro's rate reported in deg/s
    kd_scale:F          controller  the policy's damping gains x F
    decimation:N        controller  the policy runs every N-th tick, its action held in between
    action_delay:N      controller  the action sent is the one computed N ticks earlier

Backend faults rewire what crosses the RobotBackend interface (a _Rewired wrapper around the
simulated robot, one per episode); the Controller above it is the robot's own, unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from deploy.spec import RobotSpec

if TYPE_CHECKING:
    from deploy.backends.mujoco_backend import SimConditions


class FaultError(ValueError):
    """A --fault argument cannot be parsed; the message lists the known faults."""


@dataclass(frozen=True)
class Fault:
    """One planted fault. Subclasses override the hooks they need."""

    name: str
    arg: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name

    def conditions(self, spec: RobotSpec, c: SimConditions) -> SimConditions:
        return c

    def controller(self, ctrl) -> None:
        pass

    def bundle(self, bundle):
        return bundle

    def backend(self, spec: RobotSpec, robot):
        """The backend the episode's Controller drives (the simulated robot, or a rewired one)."""
        return robot


@dataclass(frozen=True)
class SwapJoints(Fault):
    """Two joints exchanged in the backend's joint map (the state of A is reported as B's and
    B's command drives A), the most common way a real deployment fails."""

    def pair(self, spec: RobotSpec) -> tuple[int, int]:
        names = self.arg.split(",")
        if len(names) != 2:
            raise FaultError(f"swap_joints needs two joint names: swap_joints:A,B (got '{self.arg}')")
        try:
            return spec.joint_index(names[0].strip()), spec.joint_index(names[1].strip())
        except KeyError as exc:
            raise FaultError(str(exc.args[0])) from None

    def conditions(self, spec, c):
        a, b = self.pair(spec)
        perm = np.arange(spec.num_joints) if c.joint_perm is None else np.array(c.joint_perm)
        perm[[a, b]] = perm[[b, a]]
        return replace(c, joint_perm=tuple(int(i) for i in perm))


@dataclass(frozen=True)
class ActionScale(Fault):
    """The controller's action map scales actions by F x the spec's action scale."""

    def factor(self) -> float:
        return _number(self, 2.0)

    def controller(self, ctrl):
        ctrl.action_map.scale = ctrl.spec.action_scale * self.factor()


@dataclass(frozen=True)
class KpScale(Fault):
    """The controller commands the policy's kp x F (kd unchanged)."""

    def controller(self, ctrl):
        ctrl.policy_kp = ctrl.policy_kp * _number(self, 0.5)


@dataclass(frozen=True)
class ExtraLatency(Fault):
    """S seconds more between a command and the actuators."""

    def conditions(self, spec, c):
        return replace(c, action_latency_s=c.action_latency_s + _number(self, 0.04))


@dataclass(frozen=True)
class AngVelWorld(Fault):
    """The backend reports the gyro's rate in the world frame instead of the body frame."""

    def conditions(self, spec, c):
        return replace(c, ang_vel_frame="world")


class _Rewired:
    """A RobotBackend between the Controller and the simulated robot that rewrites each sample
    it hands up (a new sample: never the robot's arrays) and each command it passes down."""

    def __init__(self, robot, state=None, command=None):
        self.robot, self._state, self._command = robot, state, command

    def read_state(self):
        sample = self.robot.read_state()
        if sample is None or self._state is None:
            return sample
        st = sample.state
        q, qd, gyro = self._state(st.joint_pos.copy(), st.joint_vel.copy(), st.base_ang_vel.copy())
        return replace(sample, state=replace(st, joint_pos=q, joint_vel=qd, base_ang_vel=gyro))

    def write_command(self, joint_targets, kp, kd) -> None:
        t = np.array(joint_targets, dtype=np.float64)
        self.robot.write_command(t if self._command is None else self._command(t), kp, kd)

    def close(self) -> None:
        self.robot.close()


def _joint(f: Fault, spec: RobotSpec, name: str) -> int:
    try:
        return spec.joint_index(name.strip())
    except KeyError as exc:
        raise FaultError(f"{f.name}: {exc.args[0]}") from None


@dataclass(frozen=True)
class EncoderOffset(Fault):
    """Joint J's encoder zero is off by R rad (default 0.1): it reports q + R and its motor,
    which servos on the same encoder, puts the joint at target - R: a calibration error."""

    def parts(self, spec: RobotSpec) -> tuple[int, float]:
        name, _, rad = self.arg.partition(",")
        if not name:
            raise FaultError("encoder_offset needs a joint: encoder_offset:JOINT[,RAD]")
        try:
            value = float(rad) if rad else 0.1
        except ValueError:
            raise FaultError(f"encoder_offset takes a number of rad, got '{rad}'") from None
        return _joint(self, spec, name), value

    def backend(self, spec, robot):
        j, off = self.parts(spec)

        def state(q, qd, gyro):
            q[:, j] += off
            return q, qd, gyro

        def command(t):
            t[j] -= off
            return t
        return _Rewired(robot, state, command)


@dataclass(frozen=True)
class JointVelScale(Fault):
    """Reported joint velocities x F (default 2): a wrong unit or gear ratio on the velocity."""

    def backend(self, spec, robot):
        f = _number(self, 2.0)
        return _Rewired(robot, lambda q, qd, gyro: (q, qd * f, gyro))


@dataclass(frozen=True)
class MotorInverted(Fault):
    """Joint J's motor is mounted the other way round: its encoder reports -q and a target t
    drives it to -t (a sign missed in the joint map)."""

    def backend(self, spec, robot):
        if not self.arg:
            raise FaultError("motor_inverted needs a joint: motor_inverted:JOINT")
        j = _joint(self, spec, self.arg)

        def state(q, qd, gyro):
            q[:, j], qd[:, j] = -q[:, j], -qd[:, j]
            return q, qd, gyro

        def command(t):
            t[j] = -t[j]
            return t
        return _Rewired(robot, state, command)


@dataclass(frozen=True)
class GyroDegrees(Fault):
    """The gyro's rate reaches the policy in deg/s instead of rad/s."""

    def backend(self, spec, robot):
        return _Rewired(robot, lambda q, qd, gyro: (q, qd, np.degrees(gyro)))


@dataclass(frozen=True)
class KdScale(Fault):
    """The controller commands the policy's kd x F (default 0.5; kp unchanged)."""

    def controller(self, ctrl):
        ctrl.policy_kd = ctrl.policy_kd * _number(self, 0.5)


@dataclass(frozen=True)
class Decimation(Fault):
    """The policy runs every N-th tick (default 2: 25 Hz on a 50 Hz loop) and its action is held
    in between, as a loop whose period was set to the sim step count of another robot."""

    def controller(self, ctrl):
        ctrl.bundle = _Held(ctrl.bundle, every=_count(self, 2), delay=0)


@dataclass(frozen=True)
class ActionDelay(Fault):
    """The action sent is the one computed N ticks earlier (default 1): an off-by-one buffer."""

    def controller(self, ctrl):
        ctrl.bundle = _Held(ctrl.bundle, every=1, delay=_count(self, 1))


class _Held:
    """A bundle stand-in for one Controller: new actions every `every` calls, each sent `delay`
    calls after it was computed (zeros, the stand pose's action, until then)."""

    def __init__(self, bundle, every: int, delay: int):
        self._bundle, self._every, self._calls = bundle, every, 0
        self._queue: list = [None] * delay
        self._held = None

    def __getattr__(self, name):
        return getattr(self._bundle, name)

    def act(self, obs):
        if self._calls % self._every == 0:
            self._held = self._bundle.act(obs)
        self._calls += 1
        self._queue.append(self._held)
        out = self._queue.pop(0)
        return np.zeros_like(self._held) if out is None else out

    __call__ = act


@dataclass(frozen=True)
class NoNormalizer(Fault):
    """The exported graph without its observation normalizer (mean -> 0, std -> 1)."""

    def bundle(self, bundle):
        return WithoutNormalizer(bundle)


class WithoutNormalizer:
    """A PolicyBundle stand-in whose ONNX graph has its normalizer neutralized."""

    def __init__(self, bundle):
        try:
            import onnx
            from onnx import numpy_helper
        except ModuleNotFoundError:
            raise FaultError("the no_normalizer fault edits the ONNX graph and needs the `onnx` "
                             "package (pip install onnx)") from None
        model = onnx.load(str(bundle.path / "policy.onnx"))
        found = []
        for init in model.graph.initializer:
            if init.name.endswith("normalizer.mean") or init.name.endswith("normalizer.std"):
                value = numpy_helper.to_array(init)
                fill = np.zeros_like(value) if init.name.endswith("mean") else np.ones_like(value)
                init.CopyFrom(numpy_helper.from_array(fill, init.name))
                found.append(init.name)
        if len(found) != 2:
            raise FaultError(f"no_normalizer: expected the initializers normalizer.mean and "
                             f"normalizer.std in {bundle.path / 'policy.onnx'}, found {found}")
        self._bundle = bundle
        self.session = _session_from_bytes(model.SerializeToString())

    def __getattr__(self, name):
        return getattr(self._bundle, name)

    def act(self, obs):
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        x = np.ascontiguousarray(x.reshape(1, -1) if single else x)
        y = self.session.run(["actions"], {"obs": x})[0]
        return y[0] if single else y

    __call__ = act


def _session_from_bytes(data: bytes):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _count(f: Fault, default: int) -> int:
    n = _number(f, default)
    if n != int(n) or not 1 <= n <= 50:
        raise FaultError(f"{f.name} takes a whole number of ticks from 1 to 50, got '{f.arg}'")
    return int(n)


def _number(f: Fault, default: float) -> float:
    if not f.arg:
        return default
    try:
        return float(f.arg)
    except ValueError:
        raise FaultError(f"{f.name} takes a number, got '{f.arg}'") from None


FAULTS: dict[str, tuple[type[Fault], str]] = {
    "swap_joints": (SwapJoints, "swap_joints:A,B  two joints exchanged in the backend's joint map"),
    "action_scale": (ActionScale, "action_scale:F  controller action scale x F (default 2)"),
    "kp_scale": (KpScale, "kp_scale:F  controller policy kp x F (default 0.5)"),
    "no_normalizer": (NoNormalizer, "no_normalizer  observation normalizer removed from the ONNX graph"),
    "latency": (ExtraLatency, "latency:S  S seconds of extra command latency (default 0.04)"),
    "ang_vel_world": (AngVelWorld, "ang_vel_world  IMU angular velocity in the world frame"),
    "encoder_offset": (EncoderOffset, "encoder_offset:J[,R]  joint J's encoder zero off by R rad "
                                      "(default 0.1), state and motor"),
    "joint_vel_scale": (JointVelScale, "joint_vel_scale:F  reported joint velocities x F (default 2)"),
    "motor_inverted": (MotorInverted, "motor_inverted:J  joint J's motor and encoder reversed"),
    "gyro_deg": (GyroDegrees, "gyro_deg  gyro rate reported in deg/s"),
    "kd_scale": (KdScale, "kd_scale:F  controller policy kd x F (default 0.5)"),
    "decimation": (Decimation, "decimation:N  policy every N-th tick, action held (default 2)"),
    "action_delay": (ActionDelay, "action_delay:N  action sent N ticks late (default 1)"),
}


def parse_fault(text: str, spec: RobotSpec | None = None) -> Fault:
    name, _, arg = text.partition(":")
    if name not in FAULTS:
        known = "; ".join(doc for _, doc in FAULTS.values())
        raise FaultError(f"unknown fault '{name}' (known: {known})")
    fault = FAULTS[name][0](name, arg)
    if isinstance(fault, SwapJoints) and spec is not None:
        fault.pair(spec)
    if isinstance(fault, EncoderOffset) and spec is not None:
        fault.parts(spec)
    if isinstance(fault, MotorInverted) and spec is not None:
        fault.backend(spec, None)
    if isinstance(fault, (ActionScale, KpScale, ExtraLatency, JointVelScale, KdScale)):
        _number(fault, 0.0)
    if isinstance(fault, (Decimation, ActionDelay)):
        _count(fault, 1)
    return fault
