"""Checks of what the node receives over ROS 2, before anything reaches the Controller.

Every field of a velocity command is checked, not only the three the robot follows: a message is
one unit, and a message with one garbage field says its sender is broken. With the PyPI message
wheels a Python int assigned to a float field is serialized as raw integer bits, so the
subscriber reads `1` as 5e-324 (a subnormal), `-1` as NaN and other small ints as other
subnormals (tests/test_ros2_node.py shows it over DDS): a subnormal is refused as garbage, never
taken as "almost zero". A refused message changes nothing; the caller keeps the previous command
(which the /cmd_vel timeout later zeroes)."""
from __future__ import annotations

import math
import sys

# the axes the robot follows, in the Controller's (vx, vy, wz) order
USED = (("linear", "x"), ("linear", "y"), ("angular", "z"))
UNUSED = (("linear", "z"), ("angular", "x"), ("angular", "y"))
NANOSEC = 1_000_000_000


class InputRefused(ValueError):
    """A message is refused; the message names the field and why."""


def check_float(name: str, value: object, low: float, high: float) -> float:
    """`value` as a float if it is a normal (or zero) finite float inside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, float):
        raise InputRefused(f"{name} is {type(value).__name__} {value!r}, not a float")
    if not math.isfinite(value):
        raise InputRefused(f"{name} is {value!r}: not finite")
    if value != 0.0 and abs(value) < sys.float_info.min:
        raise InputRefused(f"{name} is {value!r}: a subnormal, garbage (an int published into a "
                           f"float field arrives like this)")
    if not low <= value <= high:
        raise InputRefused(f"{name} {value:.6g} is outside [{low:.6g}, {high:.6g}]")
    return value


def twist_command(msg: object, low: tuple, high: tuple) -> tuple[float, float, float]:
    """(vx, vy, wz) of a geometry_msgs Twist or TwistStamped whose every field is valid: the
    followed axes inside [low, high] (the robot's command ranges), the others finite, normal and
    no larger than the largest of those bounds (the robot ignores them); a TwistStamped's stamp
    a valid time. Raises InputRefused naming the first bad field."""
    twist = msg
    if hasattr(msg, "twist"):
        stamp = msg.header.stamp
        if not (isinstance(stamp.sec, int) and isinstance(stamp.nanosec, int)
                and 0 <= stamp.nanosec < NANOSEC):
            raise InputRefused(f"header.stamp {stamp.sec!r}.{stamp.nanosec!r} is not a valid time")
        twist = msg.twist
    bound = max(max(abs(v) for v in low), max(abs(v) for v in high))
    for group, axis in UNUSED:
        check_float(f"{group}.{axis}", getattr(getattr(twist, group), axis), -bound, bound)
    return tuple(check_float(f"{group}.{axis}", getattr(getattr(twist, group), axis), lo, hi)
                 for (group, axis), lo, hi in zip(USED, low, high))
