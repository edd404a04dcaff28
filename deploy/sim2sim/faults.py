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
}


def parse_fault(text: str, spec: RobotSpec | None = None) -> Fault:
    name, _, arg = text.partition(":")
    if name not in FAULTS:
        known = "; ".join(doc for _, doc in FAULTS.values())
        raise FaultError(f"unknown fault '{name}' (known: {known})")
    fault = FAULTS[name][0](name, arg)
    if isinstance(fault, SwapJoints) and spec is not None:
        fault.pair(spec)
    if isinstance(fault, (ActionScale, KpScale, ExtraLatency)):
        _number(fault, 0.0)
    return fault
