"""Fixed-size ring buffers of loop timings (no allocation per tick) and their percentiles."""
from __future__ import annotations

import numpy as np


class Ring:
    """The last `size` values of one quantity, in seconds."""

    def __init__(self, size: int = 8192):
        self.buf = np.zeros(size)
        self.size = size
        self.count = 0

    def add(self, value: float) -> None:
        self.buf[self.count % self.size] = value
        self.count += 1

    def values(self) -> np.ndarray:
        return self.buf[:min(self.count, self.size)].copy()

    def summary(self, scale: float = 1e6) -> dict | None:
        """p50, p99, p99.9, max and mean in `scale` units (microseconds by default)."""
        v = self.values()
        if len(v) == 0:
            return None
        p = np.percentile(v, [50, 99, 99.9]) * scale
        return {"p50": round(float(p[0]), 2), "p99": round(float(p[1]), 2),
                "p99.9": round(float(p[2]), 2), "max": round(float(v.max() * scale), 2),
                "mean": round(float(v.mean() * scale), 2), "n": int(len(v))}


class LoopTimer:
    """Per-stage latencies of each tick, plus period and lateness of a paced loop."""

    def __init__(self, stages: tuple[str, ...], size: int = 8192):
        self.stages = {name: Ring(size) for name in stages}
        self.period = Ring(size)
        self.jitter = Ring(size)        # wake time - deadline (>= 0)
        self.overruns = 0               # ticks that ended after the next deadline
        self.missed = 0                 # deadlines skipped after an overrun
        self.budget_exceeded = 0        # ticks whose own duration exceeded the period

    def reset(self) -> None:
        size = self.period.size
        self.__init__(tuple(self.stages), size)

    def snapshot(self) -> dict:
        return {"stages_us": {k: r.summary() for k, r in self.stages.items()},
                "period_ms": self.period.summary(1e3), "jitter_ms": self.jitter.summary(1e3),
                "overruns": self.overruns, "missed_deadlines": self.missed,
                "ticks_over_budget": self.budget_exceeded}
