"""Fuzzing of the Unitree lowstate input (deploy.backends.unitree.LowStateLink.receive: what every
rt/lowstate goes through before the Controller or the velocity estimator sees it), for the Go2
(go messages) and the G1 (hg messages), without DDS.

A simulated robot standing on PD (deploy.bridges.sim_robot, the bridge's own) produces the good
stream at 500 Hz, encoded as the bridge encodes it. Each trial sends a few good lowstates, one
mutation, then good ones again:

    bitflip        one random bit of the message flipped (CRC left as it is)
    bitflip_crc    one random bit of a motor or IMU float flipped, CRC recomputed
    nonfinite      NaN or +-inf in one IMU or motor field of a used motor, CRC recomputed
    huge           +-1e6 .. +-3.4e38 in one such field, CRC recomputed
    frozen_tick    the next reading with the previous tick counter
    repeated       the previous message again, byte for byte
    identical      the sensor data frozen while the tick counts on, for 2 x the link's limit
    truncated      the message cut short;   extended: bytes appended;   header: wrong CDR header

Outcomes: handled = the mutated message was dropped (and counted), or accepted with plausible
content; silently_accepted = a sample the link delivered holds a non-finite or implausible field,
the base velocity the estimator gave or the observation built from it is not finite and
plausible, a frozen or repeated message was delivered, or the next good lowstate was not
delivered (no recovery)."""
from __future__ import annotations

import math
import random

import numpy as np

from bench.fuzzing.tally import Tally
from deploy.backends import unitree_msgs as M
from deploy.backends.hardware_link import (IMU_ACCEL_MAX, IMU_GYRO_MAX, JOINT_RATE_FACTOR,
                                           QUAT_NORM_TOLERANCE)
from deploy.backends.unitree import LowStateLink
from deploy.bridges.sim_robot import SimRobot
from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec

ROBOTS = ("go2", "g1")
MUTATIONS = ("bitflip", "bitflip_crc", "nonfinite", "huge", "frozen_tick", "repeated",
             "identical", "truncated", "extended", "header")
STATE_DT = 1.0 / 500.0
MAX_SPEED_MPS = 10.0       # a base velocity beyond this is not motion (LegOdometry's own bound)
MAX_OBS = 1e3              # no observation term of a sane reading comes near this


class Stream:
    """Good lowstates of one standing robot, and the link they go into."""

    def __init__(self, name: str):
        self.spec = spec = RobotSpec.load(name)
        self.fam = M.family(spec.interface)
        self.robot = SimRobot(spec, STATE_DT)
        self.robot.set_command(spec.default_pos, spec.stand_kp, spec.stand_kd)
        self.link = LowStateLink(spec)
        self.pipeline = ObservationPipeline(spec)
        self.p2h = spec.policy_to_hardware
        self.tick = 0
        self.now = 0.0
        self.last = b""

    def good(self) -> bytes:
        self.robot.step()
        self.tick += 1
        s = self.robot.sensors()
        slots = self.fam.motor_slots
        q, dq, tau = np.zeros(slots), np.zeros(slots), np.zeros(slots)
        q[self.p2h], dq[self.p2h], tau[self.p2h] = s.q, s.dq, s.tau
        return M.encode_state(self.fam, q, dq, tau, s.quat_wxyz, s.gyro, s.accel, self.tick,
                              mode_machine=1 if self.fam.has_mode_machine else 0)

    def send(self, data: bytes) -> tuple[bool, str | None]:
        """(delivered, what is wrong with what was delivered)."""
        self.now += STATE_DT
        before = self.link.read_state()
        delivered = self.link.receive(data, self.now)
        self.last = data
        sample = self.link.read_state()
        if delivered != (sample is not before):
            return delivered, "receive() and read_state() disagree"
        return delivered, self.problem(sample) if delivered else None

    def problem(self, sample) -> str | None:
        st = sample.state
        fields = {"joint_pos": st.joint_pos, "joint_vel": st.joint_vel, "torque": sample.joint_torque,
                  "quat": st.base_quat, "gyro": st.base_ang_vel, "accel": sample.imu_accel,
                  "base_lin_vel": st.base_lin_vel}
        for name, v in fields.items():
            if v is not None and not np.isfinite(v).all():
                return f"non-finite {name} delivered: {np.asarray(v).ravel()[:6]}"
        if np.abs(sample.imu_accel).max() > IMU_ACCEL_MAX or np.abs(st.base_ang_vel).max() > IMU_GYRO_MAX:
            return f"implausible IMU delivered: gyro {st.base_ang_vel}, accel {sample.imu_accel}"
        if abs(float(np.linalg.norm(st.base_quat)) - 1.0) > QUAT_NORM_TOLERANCE:
            return f"quaternion of norm {np.linalg.norm(st.base_quat)} delivered"
        if (np.abs(st.joint_vel) > JOINT_RATE_FACTOR * self.spec.velocity_limit).any():
            return f"joint velocity {st.joint_vel} delivered"
        if st.base_lin_vel is not None and np.abs(st.base_lin_vel).max() > MAX_SPEED_MPS:
            return f"estimated base velocity {st.base_lin_vel} reached the observation"
        obs = self.pipeline.compute(st, np.zeros((1, 3)), np.zeros((1, self.spec.num_joints)),
                                    clock=np.zeros(1))
        if not np.isfinite(obs).all() or np.abs(obs).max() > MAX_OBS:
            return f"observation with |x| up to {np.abs(obs).max():.3g}"
        return None


def _float_fields(stream: Stream, rng: random.Random) -> tuple[str, int]:
    """A random float field the observation or estimator reads: (path, flat index)."""
    lay = stream.fam.state
    path = rng.choice(["imu_state.quaternion", "imu_state.gyroscope", "imu_state.accelerometer",
                       "motor_state.q", "motor_state.dq", "motor_state.tau_est"])
    index = int(rng.choice(stream.p2h.tolist())) if path.startswith("motor") \
        else rng.randrange(lay.leaves[path].shape[0])
    return path, index


def _rewrite(stream: Stream, data: bytes, path: str, index: int, value=None, bit=None) -> bytes:
    """`data` with one float field set to `value` or one of its bits flipped; CRC recomputed."""
    lay = stream.fam.state
    payload = np.frombuffer(data, dtype=np.uint8)[4:].copy()
    leaf = lay.leaves[path]
    offsets = leaf.wire[index]
    if bit is not None:
        payload[offsets[bit // 8]] ^= np.uint8(1 << (bit % 8))
    else:
        payload[offsets] = np.array([value], dtype="<f4").view(np.uint8)
    lay.set(payload, "crc", lay.crc(payload))
    return M.CDR_LE_HEADER + payload.tobytes()


def _mutate(stream: Stream, kind: str, rng: random.Random) -> list[tuple[bytes, bool]]:
    """The bad messages of one trial, each with whether delivering it would be wrong in itself
    (a frozen or repeated message must never be delivered, whatever its content)."""
    if kind == "repeated":
        return [(stream.last, True)]
    if kind == "frozen_tick":
        stream.tick -= 1
        return [(stream.good(), True)]
    if kind == "identical":
        limit = stream.link.max_identical_states
        base = np.frombuffer(stream.good(), dtype=np.uint8)[4:].copy()
        lay, out = stream.fam.state, []
        for k in range(2 * limit):
            stream.tick += 1
            lay.set(base, "tick", stream.tick)
            lay.set(base, "crc", lay.crc(base))
            out.append((M.CDR_LE_HEADER + base.tobytes(), k >= limit))
        return out
    data = stream.good()
    if kind == "bitflip":
        b = bytearray(data)
        b[rng.randrange(4, len(b))] ^= 1 << rng.randrange(8)
        return [(bytes(b), False)]
    if kind == "truncated":
        return [(data[:rng.randrange(len(data))], False)]
    if kind == "extended":
        return [(data + bytes(rng.randrange(1, 64)), False)]
    if kind == "header":
        return [(bytes([rng.randrange(256) for _ in range(4)]) + data[4:], False)]
    path, index = _float_fields(stream, rng)
    if kind == "bitflip_crc":
        return [(_rewrite(stream, data, path, index, bit=rng.randrange(32)), False)]
    if kind == "nonfinite":
        value = rng.choice([math.nan, math.inf, -math.inf])
    else:
        value = rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(6, 38.5)
    return [(_rewrite(stream, data, path, index, value=value), False)]


def _trial(stream: Stream, kind: str, rng: random.Random) -> str:
    for _ in range(rng.randrange(3, 8)):
        delivered, problem = stream.send(stream.good())
        if not delivered or problem:
            return f"silently_accepted: a good lowstate was {'refused' if not delivered else problem}"
    for data, must_drop in _mutate(stream, kind, rng):
        delivered, problem = stream.send(data)
        if problem or (delivered and must_drop):
            return f"silently_accepted: {problem or 'a frozen or repeated lowstate was delivered'}"
    delivered, problem = stream.send(stream.good())
    if not delivered or problem:
        return f"silently_accepted: no recovery ({problem or 'the next good lowstate was dropped'})"
    return "handled"


def fuzz(n: int, seed: int) -> Tally:
    tally = Tally("lowstate")
    rng = random.Random(seed)
    streams = [Stream(name) for name in ROBOTS]
    for i in range(n):
        kind = MUTATIONS[i % len(MUTATIONS)] if i < 2 * len(MUTATIONS) else rng.choice(MUTATIONS)
        stream = streams[i % len(streams)]
        outcome = []

        def attempt() -> str:
            result = _trial(stream, kind, rng)
            outcome.append(result)
            return result.split(":")[0]
        tally.trial(f"{stream.spec.name} {kind} #{i}", attempt)
        if outcome and outcome[0] != "handled" and tally.examples:
            tally.examples[-1] = f"{stream.spec.name} {kind} #{i}: {outcome[0]}"[:500]
    return tally
