"""Fuzzing of the ROS 2 node's /cmd_vel check (policy_runner.inputs.twist_command) with real
geometry_msgs Twist and TwistStamped objects, each passed through rclpy's serializer first so the
check sees what DDS delivers: with the PyPI wheels a Python int in a float field arrives as raw
integer bits (1 -> 5e-324, -1 -> NaN).

Field values mix valid ones (inside the Go2's command ranges, the range ends, zero, -0.0, the
smallest normal float) with bad ones (NaN, inf, subnormals, ints and bools, out of range, the
largest float) and, for TwistStamped, invalid stamps. An independent oracle says whether what
arrived is a valid command. Outcomes: refused = InputRefused for an invalid message; handled = a
valid message accepted with exactly its values; silently_accepted = an invalid message accepted;
crashed = any other exception, or a valid message refused or altered (a finding all the same)."""
from __future__ import annotations

import math
import random
import sys

from bench.fuzzing.tally import Tally
from deploy.spec import REPO_ROOT, RobotSpec

PKG = REPO_ROOT / "ros2_ws" / "src" / "policy_runner"
FIELDS = (("linear", "x"), ("linear", "y"), ("angular", "z"),      # followed, in command order
          ("linear", "z"), ("angular", "x"), ("angular", "y"))
BAD = [math.nan, -math.nan, math.inf, -math.inf, 5e-324, -1e-310, 2.2e-308, sys.float_info.max,
       -1e9, 1e300, 1, -1, 2, 7, True, False, 10**6]


def _valid_values(lo: float, hi: float) -> list[float]:
    return [lo, hi, 0.0, -0.0, sys.float_info.min, (lo + hi) / 2, lo * 0.999, hi * 0.5]


def _is_valid(value: object, lo: float, hi: float) -> bool:
    """The oracle, written apart from the check under test."""
    if type(value) is not float or value != value or value in (math.inf, -math.inf):
        return False
    return (value == 0.0 or abs(value) >= 2.2250738585072014e-308) and lo <= value <= hi


def _message(rng: random.Random, ranges: list[tuple[float, float]], Twist, TwistStamped):
    stamped = rng.random() < 0.4
    msg = TwistStamped() if stamped else Twist()
    twist = msg.twist if stamped else msg
    p_bad = rng.choice([0.0, 0.1, 0.3, 1.0])
    for (group, axis), (lo, hi) in zip(FIELDS, ranges):
        if rng.random() < p_bad:
            value = rng.choice(BAD + [hi + rng.choice([1e-9, 0.1, 10.0]), lo - rng.choice([1e-9, 1.0])])
        else:
            value = rng.choice(_valid_values(lo, hi) + [rng.uniform(lo, hi)])
        setattr(getattr(twist, group), axis, value)
    if stamped and rng.random() < 0.2:
        msg.header.stamp.nanosec = rng.choice([1_000_000_000, 2**32 - 1])
    return msg


def _arrived_valid(msg, ranges) -> bool:
    twist = getattr(msg, "twist", msg)
    if hasattr(msg, "twist") and not msg.header.stamp.nanosec < 1_000_000_000:
        return False
    return all(_is_valid(getattr(getattr(twist, g), a), lo, hi) for (g, a), (lo, hi) in zip(FIELDS, ranges))


def fuzz(n: int, seed: int) -> Tally:
    if str(PKG) not in sys.path:
        sys.path.insert(0, str(PKG))
    from geometry_msgs.msg import Twist, TwistStamped
    from policy_runner.inputs import InputRefused, twist_command
    from rclpy.serialization import deserialize_message, serialize_message

    spec = RobotSpec.load("go2")
    low, high = tuple(float(v) for v in spec.commands.low), tuple(float(v) for v in spec.commands.high)
    bound = max(abs(v) for v in low + high)
    ranges = list(zip(low, high)) + [(-bound, bound)] * 3
    tally = Tally("ros2_cmd_vel")
    rng = random.Random(seed)

    def attempt(msg) -> str:
        arrived = deserialize_message(serialize_message(msg), type(msg))
        valid = _arrived_valid(arrived, ranges)
        try:
            got = twist_command(arrived, low, high)
        except InputRefused:
            if valid:
                raise AssertionError(f"a valid message was refused: {arrived}")
            return "refused"
        if not valid:
            return "silently_accepted"
        twist = getattr(arrived, "twist", arrived)
        want = tuple(getattr(getattr(twist, g), a) for g, a in FIELDS[:3])
        if got != want:
            raise AssertionError(f"accepted {want} as {got}")
        return "handled"

    for _ in range(n):
        msg = _message(rng, ranges, Twist, TwistStamped)
        tally.trial(repr(msg)[:300], lambda: attempt(msg))
    return tally

