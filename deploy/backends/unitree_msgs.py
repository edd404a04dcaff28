"""Unitree low-level messages (hg for G1, go for Go2) as bytes: layouts, CRC, decode and encode.

Why bytes and not the SDK's message objects: Python cyclonedds turns an hg `LowState_` (35 motor
records) into Python objects and back at about 0.4 ms a message each way on a 2-core machine, so a
500 Hz state stream plus a 500 Hz command stream costs most of a core before any control happens.
Here each message is a fixed byte layout read and written with numpy gathers (tens of
microseconds), while the DDS topic still carries the SDK's own IDL type (`unitree_sdk2py.idl`), so
peers see exactly the messages `unitree_sdk2py` and the robot's firmware exchange.

Two layouts per message, both derived from one field list below (names, types and order as in the
SDK's IDL files):
  * the wire layout: XCDR1 little-endian, 4-byte encapsulation header, each primitive aligned to
    its size relative to the payload start, no padding after nested structs;
  * the C layout: the robot firmware's C struct (natural alignment, structs padded to their
    alignment). The message CRC is computed over this layout, all 32-bit words but the last (the
    `crc` field): CRC-32, polynomial 0x04C11DB7, initial value 0xFFFFFFFF, each word taken most
    significant bit first, no reflection and no final XOR.
tests/test_unitree_msgs.py checks both against unitree_sdk2py's serializer and its CRC.

Quaternions: Unitree's `imu_state.quaternion` is w, x, y, z, the project's own order, so the
conversion at this edge is the identity (and stated here so nobody adds a reorder)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# ---- field lists (facts from unitree_sdk2py/idl/unitree_{hg,go}/msg/dds_/*.py) ---------------
# (name, primitive code or nested field list, count or None for a scalar)
_U1, _I1, _U2, _I2, _U4, _I4, _F4 = "u1", "i1", "u2", "i2", "u4", "i4", "f4"
_SIZE = {_U1: 1, _I1: 1, _U2: 2, _I2: 2, _U4: 4, _I4: 4, _F4: 4}

HG_MOTOR_CMD = [("mode", _U1, None), ("q", _F4, None), ("dq", _F4, None), ("tau", _F4, None),
                ("kp", _F4, None), ("kd", _F4, None), ("reserve", _U4, None)]
HG_MOTOR_STATE = [("mode", _U1, None), ("q", _F4, None), ("dq", _F4, None), ("ddq", _F4, None),
                  ("tau_est", _F4, None), ("temperature", _I2, 2), ("vol", _F4, None),
                  ("sensor", _U4, 2), ("motorstate", _U4, None), ("reserve", _U4, 4)]
HG_IMU = [("quaternion", _F4, 4), ("gyroscope", _F4, 3), ("accelerometer", _F4, 3),
          ("rpy", _F4, 3), ("temperature", _I2, None)]
HG_LOW_CMD = [("mode_pr", _U1, None), ("mode_machine", _U1, None), ("motor_cmd", HG_MOTOR_CMD, 35),
              ("reserve", _U4, 4), ("crc", _U4, None)]
HG_LOW_STATE = [("version", _U4, 2), ("mode_pr", _U1, None), ("mode_machine", _U1, None),
                ("tick", _U4, None), ("imu_state", HG_IMU, None), ("motor_state", HG_MOTOR_STATE, 35),
                ("wireless_remote", _U1, 40), ("reserve", _U4, 4), ("crc", _U4, None)]

GO_MOTOR_CMD = [("mode", _U1, None), ("q", _F4, None), ("dq", _F4, None), ("tau", _F4, None),
                ("kp", _F4, None), ("kd", _F4, None), ("reserve", _U4, 3)]
GO_MOTOR_STATE = [("mode", _U1, None), ("q", _F4, None), ("dq", _F4, None), ("ddq", _F4, None),
                  ("tau_est", _F4, None), ("q_raw", _F4, None), ("dq_raw", _F4, None),
                  ("ddq_raw", _F4, None), ("temperature", _U1, None), ("lost", _U4, None),
                  ("reserve", _U4, 2)]
GO_IMU = [("quaternion", _F4, 4), ("gyroscope", _F4, 3), ("accelerometer", _F4, 3),
          ("rpy", _F4, 3), ("temperature", _U1, None)]
GO_BMS_CMD = [("off", _U1, None), ("reserve", _U1, 3)]
GO_BMS_STATE = [("version_high", _U1, None), ("version_low", _U1, None), ("status", _U1, None),
                ("soc", _U1, None), ("current", _I4, None), ("cycle", _U2, None),
                ("bq_ntc", _U1, 2), ("mcu_ntc", _U1, 2), ("cell_vol", _U2, 15)]
GO_LOW_CMD = [("head", _U1, 2), ("level_flag", _U1, None), ("frame_reserve", _U1, None),
              ("sn", _U4, 2), ("version", _U4, 2), ("bandwidth", _U2, None),
              ("motor_cmd", GO_MOTOR_CMD, 20), ("bms_cmd", GO_BMS_CMD, None),
              ("wireless_remote", _U1, 40), ("led", _U1, 12), ("fan", _U1, 2), ("gpio", _U1, None),
              ("reserve", _U4, None), ("crc", _U4, None)]
GO_LOW_STATE = [("head", _U1, 2), ("level_flag", _U1, None), ("frame_reserve", _U1, None),
                ("sn", _U4, 2), ("version", _U4, 2), ("bandwidth", _U2, None),
                ("imu_state", GO_IMU, None), ("motor_state", GO_MOTOR_STATE, 20),
                ("bms_state", GO_BMS_STATE, None), ("foot_force", _I2, 4), ("foot_force_est", _I2, 4),
                ("tick", _U4, None), ("wireless_remote", _U1, 40), ("bit_flag", _U1, None),
                ("adc_reel", _F4, None), ("temperature_ntc1", _U1, None),
                ("temperature_ntc2", _U1, None), ("power_v", _F4, None), ("power_a", _F4, None),
                ("fan_frequency", _U2, 4), ("reserve", _U4, None), ("crc", _U4, None)]

CDR_LE_HEADER = b"\x00\x01\x00\x00"   # XCDR1 little-endian encapsulation, as cyclonedds writes it

# go-family motor constants (Unitree's Go2 low-level examples): a motor slot driven by position
# control uses mode 0x01; an unused slot gets mode 0 and the "stop" sentinels for q and dq.
GO_HEAD = (0xFE, 0xEF)
GO_LEVEL_LOW = 0xFF
GO_MODE_SERVO = 0x01
# go LowState_ foot_force: one int16 per leg in Unitree's leg order (the motor order's legs,
# unitree_sdk2 go2 examples: FR, FL, RR, RL), raw sensor counts: Unitree documents no unit
GO_FOOT_ORDER = ("FR", "FL", "RR", "RL")
GO_FOOT_FORCE_RAIL = 32767    # |reading| at the int16 rails: a saturated or broken sensor
GO_POS_STOP = 2.146e9
GO_VEL_STOP = 16000.0
HG_MODE_ENABLE = 1


def _align(offset: int, alignment: int) -> int:
    return (offset + alignment - 1) // alignment * alignment


def _c_align(fields) -> int:
    return max(_SIZE[t] if isinstance(t, str) else _c_align(t) for _, t, _ in fields)


def _c_size(fields) -> int:
    off = 0
    for _, t, n in fields:
        size, align = (_SIZE[t], _SIZE[t]) if isinstance(t, str) else (_c_size(t), _c_align(t))
        off = _align(off, align) + size * (n or 1)
    return _align(off, _c_align(fields))


# ---- CRC ------------------------------------------------------------------------------------
_POLY = 0x04C11DB7
_MASK = 0xFFFFFFFF


def _shift(x: int) -> int:
    """One bit step of the register without input: shift left, feed back the polynomial."""
    return ((x << 1) & _MASK) ^ _POLY if x & 0x80000000 else (x << 1) & _MASK


class WordCrc32:
    """The CRC over `nwords` 32-bit words, vectorized by linearity over GF(2): the register after
    all bits is (the register that an all-zero input leaves) XOR (for every set input bit, that
    bit's own contribution), and bit k's contribution is the polynomial carried through the
    remaining shifts. Tables are built once per length (16,704 bits for an hg LowState_)."""

    def __init__(self, nwords: int):
        nbits = 32 * nwords
        contrib = np.empty(nbits, dtype=np.uint32)
        v = _POLY
        for k in range(nbits - 1, -1, -1):
            contrib[k] = v
            v = _shift(v)
        reg = _MASK
        for _ in range(nbits):
            reg = _shift(reg)
        self.nwords = nwords
        self._contrib = contrib
        self._zero = np.uint32(reg)

    def __call__(self, words: np.ndarray) -> int:
        """`words`: uint32 array of length nwords (little-endian values as the firmware sees them)."""
        bits = np.unpackbits(np.asarray(words, dtype=">u4").view(np.uint8)).view(bool)
        return int(self._zero ^ np.bitwise_xor.reduce(self._contrib[bits]))


@lru_cache(maxsize=None)
def word_crc(nwords: int) -> WordCrc32:
    return WordCrc32(nwords)


# ---- layouts --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Leaf:
    prim: str
    shape: tuple[int, ...]
    wire: np.ndarray     # (*shape, size) byte offsets in the wire payload (header excluded)
    c: np.ndarray        # (*shape, size) byte offsets in the C struct


class MessageLayout:
    """One message type's two layouts, with leaf fields addressed by dotted path
    (`motor_state.q` has shape (35,), `imu_state.quaternion` (4,), `tick` ())."""

    def __init__(self, typename: str, fields: list):
        self.typename = typename
        self.fields = fields
        rows: dict[str, list] = {}
        wire_end = self._walk(fields, 0, 0, "", (), rows)
        self.wire_size = wire_end                  # payload bytes after the 4-byte header
        self.c_size = _c_size(fields)
        self.leaves: dict[str, Leaf] = {}
        for path, entries in rows.items():
            prim = entries[0][1]
            size = _SIZE[prim]
            shape = tuple(max(e[0][d] for e in entries) + 1 for d in range(len(entries[0][0])))
            wire = np.zeros(shape + (size,), dtype=np.int64)
            c = np.zeros(shape + (size,), dtype=np.int64)
            for idx, _, w, co in entries:
                wire[idx] = w + np.arange(size)
                c[idx] = co + np.arange(size)
            self.leaves[path] = Leaf(prim, shape, wire, c)
        every = list(self.leaves.values())
        self._wire_all = np.concatenate([lf.wire.ravel() for lf in every])
        self._c_all = np.concatenate([lf.c.ravel() for lf in every])
        if self.c_size % 4 or self.leaves["crc"].c.ravel()[0] != self.c_size - 4:
            raise AssertionError(f"{typename}: the crc must be the last 32-bit word of the C layout")
        self._crc = word_crc(self.c_size // 4 - 1)

    def _walk(self, fields, c_base: int, wire: int, prefix: str, idx: tuple, rows: dict) -> int:
        c_off = 0
        for name, t, n in fields:
            path = prefix + name
            count = n or 1
            if isinstance(t, str):
                size = _SIZE[t]
                c_off = _align(c_off, size)
                wire = _align(wire, size)
                for k in range(count):
                    key = idx + ((k,) if n else ())
                    rows.setdefault(path, []).append((key, t, wire + k * size, c_base + c_off + k * size))
                c_off += count * size
                wire += count * size
            else:
                c_off = _align(c_off, _c_align(t))
                stride = _c_size(t)
                for k in range(count):
                    wire = self._walk(t, c_base + c_off + k * stride, wire, path + ".",
                                      idx + ((k,) if n else ()), rows)
                c_off += count * stride
        return wire

    # ---- field access on a uint8 payload (header excluded) --------------------------------
    def get(self, payload: np.ndarray, path: str) -> np.ndarray:
        leaf = self.leaves[path]
        raw = payload[leaf.wire]
        return raw.view("<" + leaf.prim).reshape(leaf.shape)

    def set(self, payload: np.ndarray, path: str, values) -> None:
        leaf = self.leaves[path]
        v = np.asarray(values).astype("<" + leaf.prim)
        if v.shape != leaf.shape:
            v = np.ascontiguousarray(np.broadcast_to(v, leaf.shape))
        payload[leaf.wire] = np.ascontiguousarray(v).reshape(-1).view(np.uint8).reshape(leaf.wire.shape)

    def c_struct(self, payload: np.ndarray) -> np.ndarray:
        """The firmware's C struct bytes of a wire payload (padding zero)."""
        out = np.zeros(self.c_size, dtype=np.uint8)
        out[self._c_all] = payload[self._wire_all]
        return out

    def crc(self, payload: np.ndarray) -> int:
        words = self.c_struct(payload).view("<u4")[:-1]
        return self._crc(words)

    def blank(self) -> np.ndarray:
        return np.zeros(self.wire_size, dtype=np.uint8)


@dataclass(frozen=True)
class MessageFamily:
    """The low-level messages of one hardware interface (`unitree_hg` or `unitree_go`)."""

    interface: str
    motor_slots: int
    state: MessageLayout
    cmd: MessageLayout

    @property
    def has_mode_machine(self) -> bool:
        return self.interface == "unitree_hg"


FAMILIES = {
    "unitree_hg": MessageFamily("unitree_hg", 35, MessageLayout("unitree_hg.msg.dds_.LowState_", HG_LOW_STATE),
                                MessageLayout("unitree_hg.msg.dds_.LowCmd_", HG_LOW_CMD)),
    "unitree_go": MessageFamily("unitree_go", 20, MessageLayout("unitree_go.msg.dds_.LowState_", GO_LOW_STATE),
                                MessageLayout("unitree_go.msg.dds_.LowCmd_", GO_LOW_CMD)),
}


def family(interface: str) -> MessageFamily:
    try:
        return FAMILIES[interface]
    except KeyError:
        raise ValueError(f"no Unitree message family for hardware interface '{interface}' "
                         f"(known: {', '.join(FAMILIES)})") from None


def sdk_types(interface: str):
    """(LowState_, LowCmd_) IDL classes of unitree_sdk2py for the topic registration."""
    if interface == "unitree_hg":
        from unitree_sdk2py.idl.unitree_hg.msg.dds_ import LowCmd_, LowState_
    elif interface == "unitree_go":
        from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowCmd_, LowState_
    else:
        family(interface)  # raises with the known names
    return LowState_, LowCmd_


# ---- decoding and encoding ------------------------------------------------------------------
class MalformedMessage(ValueError):
    """A message that must not reach the controller; `reason` is the drop counter's key."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


@dataclass
class LowStateReading:
    """One decoded lowstate, arrays indexed by motor slot (hardware order)."""

    q: np.ndarray
    dq: np.ndarray
    tau_est: np.ndarray
    quat_wxyz: np.ndarray
    gyro: np.ndarray
    accel: np.ndarray
    tick: int
    mode_machine: int
    remote: bytes = bytes(40)               # wireless_remote (deploy/remote.py decodes it)
    temperature: np.ndarray | None = None   # per slot, deg C (hg: the hotter of its two sensors)
    motor_error: np.ndarray | None = None   # per slot, the driver's error word (hg only)
    battery_soc: float | None = None        # %, go only (the G1 reports its battery elsewhere)
    foot_force: np.ndarray | None = None    # go only: raw counts in GO_FOOT_ORDER (the G1 has none)


def _checked_payload(fam: MessageFamily, lay: MessageLayout,
                     data: bytes | bytearray | memoryview) -> np.ndarray:
    """The CDR payload of a lowstate or lowcmd whose size, header and CRC are right: what the
    robot checks before it trusts a message, and what the backend checks before the controller
    sees one (raises MalformedMessage)."""
    if len(data) != 4 + lay.wire_size:
        raise MalformedMessage("size", f"{lay.typename} is {4 + lay.wire_size} bytes "
                               f"({fam.motor_slots} motor records), received {len(data)}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if bytes(buf[:4]) != CDR_LE_HEADER:
        raise MalformedMessage("header", f"encapsulation {bytes(buf[:4]).hex()} is not CDR_LE")
    payload = buf[4:]
    crc = int(lay.get(payload, "crc"))
    want = lay.crc(payload)
    if crc != want:
        raise MalformedMessage("crc", f"crc {crc:#010x}, computed {want:#010x}")
    return payload


def decode_state(fam: MessageFamily, data: bytes | bytearray | memoryview) -> LowStateReading:
    """Check size, header, CRC and finiteness of the joint and IMU fields; raise
    MalformedMessage(reason) on any failure. The backend then checks plausibility of the motors
    it uses (deploy.backends.unitree.LowStateLink)."""
    lay = fam.state
    payload = _checked_payload(fam, lay, data)
    reading = LowStateReading(
        q=lay.get(payload, "motor_state.q").astype(np.float64),
        dq=lay.get(payload, "motor_state.dq").astype(np.float64),
        tau_est=lay.get(payload, "motor_state.tau_est").astype(np.float64),
        quat_wxyz=lay.get(payload, "imu_state.quaternion").astype(np.float64),
        gyro=lay.get(payload, "imu_state.gyroscope").astype(np.float64),
        accel=lay.get(payload, "imu_state.accelerometer").astype(np.float64),
        tick=int(lay.get(payload, "tick")),
        mode_machine=int(lay.get(payload, "mode_machine")) if fam.has_mode_machine else 0,
        remote=lay.get(payload, "wireless_remote").tobytes())
    temp = lay.get(payload, "motor_state.temperature")
    if fam.has_mode_machine:
        reading.temperature = temp.max(axis=1).astype(np.float64)
        reading.motor_error = lay.get(payload, "motor_state.motorstate")
    else:
        reading.temperature = temp.astype(np.float64)
        reading.battery_soc = float(lay.get(payload, "bms_state.soc"))
        reading.foot_force = lay.get(payload, "foot_force").astype(np.float64)
    for name in ("q", "dq", "quat_wxyz", "gyro", "accel"):
        if not np.all(np.isfinite(getattr(reading, name))):
            raise MalformedMessage("nonfinite", f"non-finite {name}")
    return reading


def encode_state(fam: MessageFamily, q, dq, tau_est, quat_wxyz, gyro, accel, tick: int,
                 mode_machine: int = 0, remote: bytes | None = None, temperature=None,
                 motor_error=None, battery_soc: float | None = None, foot_force=None) -> bytes:
    """A lowstate as the robot sends it (the MuJoCo bridge plays the robot with it). The
    optional health fields are per motor slot; where left out they read 0 (battery: 100 %).
    `foot_force` (go only): raw counts in GO_FOOT_ORDER, 0 where left out."""
    lay = fam.state
    p = lay.blank()
    if fam.interface == "unitree_go":
        lay.set(p, "head", GO_HEAD)
        lay.set(p, "level_flag", GO_LEVEL_LOW)
        lay.set(p, "bms_state.soc", 100 if battery_soc is None else battery_soc)
        if foot_force is not None:
            lay.set(p, "foot_force", foot_force)
        if temperature is not None:
            lay.set(p, "motor_state.temperature", temperature)
    else:
        lay.set(p, "mode_machine", mode_machine)
        if temperature is not None:
            t = np.asarray(temperature)
            lay.set(p, "motor_state.temperature", np.stack([t, t], axis=-1))
        if motor_error is not None:
            lay.set(p, "motor_state.motorstate", motor_error)
    if remote is not None:
        lay.set(p, "wireless_remote", np.frombuffer(remote, dtype=np.uint8))
    lay.set(p, "motor_state.mode", 1)
    lay.set(p, "motor_state.q", q)
    lay.set(p, "motor_state.dq", dq)
    lay.set(p, "motor_state.tau_est", tau_est)
    lay.set(p, "imu_state.quaternion", quat_wxyz)
    lay.set(p, "imu_state.gyroscope", gyro)
    lay.set(p, "imu_state.accelerometer", accel)
    lay.set(p, "tick", tick & _MASK)
    lay.set(p, "crc", lay.crc(p))
    return CDR_LE_HEADER + p.tobytes()


class LowCmdEncoder:
    """Builds LowCmd_ bytes from per-slot arrays; constant fields are written once."""

    def __init__(self, fam: MessageFamily):
        self.fam = fam
        lay = fam.cmd
        self._p = lay.blank()
        if fam.interface == "unitree_go":
            lay.set(self._p, "head", GO_HEAD)
            lay.set(self._p, "level_flag", GO_LEVEL_LOW)

    def encode(self, mode, q, dq, tau, kp, kd, mode_machine: int = 0) -> bytes:
        """Arrays of length motor_slots (hardware order). The CRC is filled in last."""
        lay, p = self.fam.cmd, self._p
        if self.fam.has_mode_machine:
            lay.set(p, "mode_machine", mode_machine)
        lay.set(p, "motor_cmd.mode", mode)
        lay.set(p, "motor_cmd.q", q)
        lay.set(p, "motor_cmd.dq", dq)
        lay.set(p, "motor_cmd.tau", tau)
        lay.set(p, "motor_cmd.kp", kp)
        lay.set(p, "motor_cmd.kd", kd)
        lay.set(p, "crc", lay.crc(p))
        return CDR_LE_HEADER + p.tobytes()


@dataclass
class LowCmdReading:
    mode: np.ndarray
    q: np.ndarray
    dq: np.ndarray
    tau: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    mode_machine: int


def decode_cmd(fam: MessageFamily, data: bytes | bytearray | memoryview) -> LowCmdReading:
    """What the robot checks before it drives a motor: size, header, CRC (raises MalformedMessage)."""
    lay = fam.cmd
    payload = _checked_payload(fam, lay, data)
    get = lambda f: lay.get(payload, f"motor_cmd.{f}").astype(np.float64)
    return LowCmdReading(mode=lay.get(payload, "motor_cmd.mode").astype(np.int64), q=get("q"),
                         dq=get("dq"), tau=get("tau"), kp=get("kp"), kd=get("kd"),
                         mode_machine=int(lay.get(payload, "mode_machine")) if fam.has_mode_machine else 0)
