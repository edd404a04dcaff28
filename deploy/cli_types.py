"""argparse types for the numbers the command lines take. A NaN, an infinity, a count of zero or
a negative seed is refused while the arguments are parsed, naming the flag and what it allows,
instead of crashing later with a traceback or, worse, running with it (a fine-tuner at utd nan).
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

SEED_MAX = 2 ** 32 - 1          # numpy's seed range


def number(low: float | None = None, high: float | None = None,
           open_low: bool = False) -> Callable[[str], float]:
    """A finite float in [low, high] ((low, high] with open_low)."""
    bounds = ([] if low is None else [f"{'>' if open_low else '>='} {low:g}"]) + \
        ([] if high is None else [f"<= {high:g}"])
    allowed = " ".join(["a finite number", " and ".join(bounds)]).strip()

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({allowed})") from None
        below = low is not None and (value <= low if open_low else value < low)
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not {allowed}")
        return value
    return parse


def count(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """A whole number in [low, high]."""
    allowed = f"a whole number >= {low}" + ("" if high is None else f" and <= {high}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not {allowed}")
        return value
    return parse


seed = count(0, SEED_MAX)
dds_domain = count(0, 232)


def seed_list(text: str) -> tuple[int, ...]:
    """A seed list ("0,1,2"): distinct whole numbers >= 0 (the gate's seeds, the fine-tuner's
    gate seeds, the demo's held-out seeds)."""
    try:
        seeds = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got '{text}'") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct and >= 0, got '{text}'")
    return seeds


def exploration(text: str) -> float:
    """An exploration scale the Controller accepts (its MAX_EXPLORATION, imported only when the
    flag is given: the controller is slow to import for every command line)."""
    from deploy.controller import MAX_EXPLORATION
    return number(0.0, MAX_EXPLORATION)(text)
