"""The transition record: one fixed binary layout per session, derived from the RobotSpec and the
observation layout so that no field size is ever typed by hand.

A record is one control tick's completed transition (obs, action -> next_obs) plus the raw robot
state measured with next_obs, so a learner can recompute rewards long after the fact with reward
terms that did not exist when the robot ran. Every array is little-endian float32 (the precision
the motor drivers report in), except the monotonic time (int64 ns) and the counters. Unknown
values (a reward the controller cannot compute on the robot, a base pose without a motion-capture
system) are NaN, never a made-up zero.

The layout is written into every segment header as a list of (name, dtype, shape), so a reader needs
neither the spec nor this module's version to decode a file."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Mapping

import numpy as np

from deploy.observations import ObservationLayout
from deploy.spec import RobotSpec

# Bump when the meaning of a field changes; a reader refuses schema versions it does not know.
SCHEMA_VERSION = 2     # 2: what a learner needs (applied action, contacts, reward pieces, end reason)
POLICY_ID_BYTES = 32

# (name, dtype, shape from (spec, obs_dim), how a missing value is filled, meaning)
# fill: None = required from the caller, a number = default when the caller omits it.
_NAN = float("nan")
_FIELDS: tuple[tuple[str, str, Callable[[RobotSpec, int], tuple[int, ...]], Any, str], ...] = (
    ("time_ns", "<i8", lambda s, o: (), "now",
     "monotonic clock (ns) of the tick that measured next_obs"),
    ("dropped", "<u8", lambda s, o: (), 0,
     "transitions this session's writer dropped before this one (queue full, malformed)"),
    ("obs", "<f4", lambda s, o: (o,), None, "policy observation at the start of the transition"),
    ("action", "<f4", lambda s, o: (s.num_joints,), None, "env action the policy emitted"),
    ("reward", "<f4", lambda s, o: (), _NAN, "reward when the controller computes one, else NaN"),
    ("next_obs", "<f4", lambda s, o: (o,), None,
     "observation after the action (the pre-reset one when the episode ended)"),
    ("terminated", "?", lambda s, o: (), None, "the episode ended in a failure (no bootstrap)"),
    ("truncated", "?", lambda s, o: (), None, "the episode was cut by a time limit or an operator"),
    ("command", "<f4", lambda s, o: (3,), None, "velocity command vx, vy, wz"),
    ("joint_pos", "<f4", lambda s, o: (s.num_joints,), None, "joint positions, policy order (rad)"),
    ("joint_vel", "<f4", lambda s, o: (s.num_joints,), None, "joint velocities, policy order (rad/s)"),
    ("joint_torque", "<f4", lambda s, o: (s.num_joints,), None,
     "measured joint torques, policy order (N m)"),
    ("imu_quat", "<f4", lambda s, o: (4,), None, "IMU orientation w, x, y, z (world from body)"),
    ("imu_gyro", "<f4", lambda s, o: (3,), None, "IMU angular velocity, body frame (rad/s)"),
    ("imu_accel", "<f4", lambda s, o: (3,), None, "IMU specific force, body frame (m/s^2)"),
    ("base_pos", "<f4", lambda s, o: (3,), _NAN, "base position in the world (m), NaN if unknown"),
    ("base_quat", "<f4", lambda s, o: (4,), _NAN,
     "base orientation w, x, y, z in the world, NaN if unknown"),
    ("policy_id", f"S{POLICY_ID_BYTES}", lambda s, o: (), None, "id of the policy bundle that acted"),
    ("joint_target", "<f4", lambda s, o: (s.num_joints,), _NAN,
     "joint position target sent for `action` after the safety filter (rad), NaN if none went out"),
    ("applied_action", "<f4", lambda s, o: (s.num_joints,), _NAN,
     "env action of joint_target, (joint_target - default) / scale: what the robot executed"),
    ("action_filtered", "?", lambda s, o: (), False, "the safety filter changed the policy's action"),
    ("base_lin_vel", "<f4", lambda s, o: (3,), _NAN,
     "base linear velocity, body frame (m/s): the estimator's on a robot, NaN without one"),
    ("foot_force", "<f4", lambda s, o: (len(s.foot_bodies),), _NAN,
     "contact force per foot, spec feet order: N from a simulator, the sensor's raw counts from a "
     "Go2 (deploy/contacts.py); NaN where not measured"),
    ("foot_contact", "<f4", lambda s, o: (len(s.foot_bodies),), _NAN,
     "1 foot in contact, 0 in the air, NaN unknown"),
    ("reward_velocity", "<f4", lambda s, o: (3,), _NAN,
     "body velocity vx, vy, wz the tracking terms paid for (hindsight relabeling)"),
    ("reward_air", "<f4", lambda s, o: (), _NAN, "weighted air-time reward before its moving gate"),
    ("reward_base", "<f4", lambda s, o: (), _NAN, "the reward less its command-dependent terms"),
    ("end_reason", "u1", lambda s, o: (), 0,
     "0 episode goes on, 1 fall, 2 operator stop, 3 safety stop, 4 time limit, 5 data gap"),
    ("exploration_scale", "<f4", lambda s, o: (), 0.0,
     "runtime scale of the bundle's std the action was sampled with (0: deterministic)"),
)
END_REASONS = ("running", "fall", "operator", "safety", "time_limit", "gap")
DOCS = {name: doc for name, _, _, _, doc in _FIELDS}
_FILL = {name: fill for name, _, _, fill, _ in _FIELDS}


@dataclass(frozen=True)
class FieldDef:
    name: str
    dtype: str
    shape: tuple[int, ...]
    fill: Any   # None: required; "now": monotonic time; else a default value


class TransitionLayout:
    """The record layout of one session: a packed numpy structured dtype plus the identity of the
    robot spec and observation layout it was derived from."""

    def __init__(self, fields: tuple[FieldDef, ...], spec_hash: str, obs_hash: str,
                 robot: str, meta: Mapping[str, Any] | None = None):
        self.fields = fields
        self.spec_hash = spec_hash
        self.obs_hash = obs_hash
        self.robot = robot
        self.meta = dict(meta or {})   # joint names, obs terms: for people and exports, not decoding
        self.dtype = np.dtype([(f.name, f.dtype, f.shape) for f in fields])
        self._by_name = {f.name: f for f in fields}
        self._required = {f.name for f in fields if f.fill is None}
        self._template = np.zeros((), self.dtype)   # defaults filled in once, copied per record
        for f in fields:
            if f.fill is not None and f.fill != "now":
                self._template[f.name] = f.fill
        self._local = threading.local()   # each encoding thread reuses its own record
        self._float_runs = _float_runs(self.dtype, fields)

    @classmethod
    def from_spec(cls, spec: RobotSpec, obs: ObservationLayout) -> "TransitionLayout":
        fields = tuple(FieldDef(name, dtype, shape(spec, obs.dim), fill)
                       for name, dtype, shape, fill, _ in _FIELDS)
        meta = {"joint_names": spec.joint_names, "obs_terms": obs.to_list()}
        return cls(fields, spec.hash, obs.hash, spec.name, meta)

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> "TransitionLayout":
        """Rebuild the layout a segment header describes (KeyError/TypeError/ValueError if malformed)."""
        fields = tuple(FieldDef(str(f["name"]), str(f["dtype"]), tuple(int(d) for d in f["shape"]),
                                _FILL.get(str(f["name"]))) for f in header["fields"])
        for f in fields:
            if np.dtype(f.dtype).kind not in "biufS" or min(f.shape, default=1) < 1:
                raise ValueError(f"field '{f.name}' has dtype {f.dtype} shape {f.shape}; records "
                                 f"hold only plain numbers and byte strings")
        return cls(fields, str(header["spec_hash"]), str(header["obs_hash"]), str(header["robot"]),
                   header.get("layout_meta", {}))

    def to_header(self) -> dict[str, Any]:
        return {"robot": self.robot, "spec_hash": self.spec_hash, "obs_hash": self.obs_hash,
                "fields": [{"name": f.name, "dtype": f.dtype, "shape": list(f.shape)}
                           for f in self.fields],
                "record_size": self.record_size, "layout_hash": self.hash,
                "layout_meta": self.meta}

    @property
    def record_size(self) -> int:
        return self.dtype.itemsize

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    @cached_property
    def hash(self) -> str:
        """Two sessions with the same hash can be concatenated into one array by a learner."""
        content = {"fields": [[f.name, f.dtype, list(f.shape)] for f in self.fields],
                   "spec_hash": self.spec_hash, "obs_hash": self.obs_hash}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """One record's payload (ValueError as for `check`)."""
        self.check(values)
        return self.encode_checked(values)

    def check(self, values: Mapping[str, Any]) -> None:
        """Refuses unknown names, missing required fields, wrong shapes and over-long policy ids
        with a ValueError naming the field (the replay writer's thread drops and counts such a
        transition; the Controller's replay tests find the bug before the robot does)."""
        for name, value in values.items():
            f = self._by_name.get(name)
            if f is None:
                raise ValueError(f"transition has no field '{name}' (fields: {', '.join(self.names)})")
            if name == "policy_id":
                self._policy_id_bytes(value)
            elif getattr(value, "shape", None) != f.shape and np.shape(value) != f.shape:
                raise ValueError(f"transition field '{name}' has shape {np.shape(value)}, "
                                 f"expected {f.shape}")
        missing = self._required.difference(values)
        if missing:
            raise ValueError(f"transition is missing required fields: {', '.join(sorted(missing))}")

    def check_finite(self, payload: bytes) -> None:
        """ValueError naming the float field of an encoded record that holds an infinity, or a NaN
        where NaN does not mean "unknown" (only fields whose missing value is NaN may hold one:
        reward, base pose). Checked on the encoded float32, so a float64 that overflowed it is
        caught too; a learner must never be handed a poisoned transition."""
        for names, dtype, offset, count, may_be_nan in self._float_runs:
            x = np.frombuffer(payload, dtype, count, offset)
            bad = np.isinf(x) if may_be_nan else ~np.isfinite(x)
            if bad.any():
                rec = np.frombuffer(payload, self.dtype, 1)[0]
                for name in names:
                    values = np.asarray(rec[name]).ravel()
                    wrong = np.isinf(values) if may_be_nan else ~np.isfinite(values)
                    if wrong.any():
                        raise ValueError(f"transition field '{name}' holds {values[wrong][0]} "
                                         f"(non-finite values never enter the replay log)")

    def encode_checked(self, values: Mapping[str, Any]) -> bytes:
        """The payload of values that passed `check` (the replay writer's thread calls this)."""
        rec, views = self._scratch()
        rec[...] = self._template
        for name, value in values.items():
            views[name][...] = self._policy_id_bytes(value) if name == "policy_id" else value
        if "time_ns" not in values:
            views["time_ns"][...] = time.monotonic_ns()
        return rec.tobytes()

    def _scratch(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """This thread's record and a view of each of its fields (encode runs every tick)."""
        local = self._local
        if not hasattr(local, "record"):
            local.record = self._template.copy()
            local.views = {f.name: local.record[f.name] for f in self.fields}
        return local.record, local.views

    def _policy_id_bytes(self, value: str | bytes) -> bytes:
        cached = getattr(self._local, "policy_id", (None, b""))
        if cached[0] == value:
            return cached[1]
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if len(raw) > POLICY_ID_BYTES:
            raise ValueError(f"policy_id {raw!r} is longer than {POLICY_ID_BYTES} bytes")
        self._local.policy_id = (value, raw)
        return raw


def _float_runs(dtype: np.dtype, fields: tuple[FieldDef, ...]
                ) -> list[tuple[list[str], np.dtype, int, int, bool]]:
    """Adjacent float fields of one kind (NaN allowed or not) merged into (names, dtype, byte
    offset, element count, NaN allowed) runs, so a record is checked in a few numpy calls."""
    runs: list[tuple[list[str], np.dtype, int, int, bool]] = []
    for f in fields:
        sub, offset = dtype.fields[f.name][:2]
        base = sub.base
        if base.kind != "f":
            continue
        count = int(np.prod(sub.shape, dtype=np.int64))
        may_be_nan = isinstance(f.fill, float) and f.fill != f.fill
        last = runs[-1] if runs else None
        if last and last[1] == base and last[4] == may_be_nan \
                and last[2] + last[3] * base.itemsize == offset:
            runs[-1] = (last[0] + [f.name], base, last[2], last[3] + count, may_be_nan)
        else:
            runs.append(([f.name], base, offset, count, may_be_nan))
    return runs
