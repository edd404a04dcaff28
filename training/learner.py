"""The update loop shared by pretraining and fine-tuning (DESIGN.md: one Learner).

Pretraining draws every batch from the simulation replay; fine-tuning draws from the robot's replay
and, on a schedule, from prior simulation data. Both run the same SAC update on the same batch
layout, so "the same algorithm in simulation and on the robot" (rsl_rl_sac.md) holds by
construction: a second copy of the update could drift from the first.

A `Source` is anything that returns n-step `Batch`es; its share of each batch is a weight that may
change over time (a callable), renormalised over the sources at every draw. The update-to-data ratio
(`utd`) is how many updates one new transition buys: a learner fed by a robot waits for data rather
than exceeding it."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from training.replay_buffer import Batch
from training.sac import SAC

Weight = float | Callable[[], float]


@dataclass
class Source:
    """One stream of training data: `sample(size, generator)` returns a Batch of that size."""
    name: str
    sample: Callable[[int, torch.Generator], Batch]
    weight: Weight = 1.0

    def current_weight(self) -> float:
        w = float(self.weight() if callable(self.weight) else self.weight)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"source '{self.name}': weight {w} must be finite and >= 0")
        return w


def split_batch(size: int, weights: Sequence[float]) -> list[int]:
    """Integer shares of `size` proportional to `weights` (largest remainder), summing to `size`."""
    total = sum(weights)
    if total <= 0:
        raise ValueError(f"every source has weight 0 ({list(weights)}): nothing to sample from")
    exact = [size * w / total for w in weights]
    shares = [int(math.floor(x)) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: shares[i] - exact[i])
    for i in order[:size - sum(shares)]:
        shares[i] += 1
    return shares


def concat_batches(batches: Sequence[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    return Batch(**{f.name: torch.cat([getattr(b, f.name) for b in batches])
                    for f in dataclasses.fields(Batch)})


class Learner:
    """Draws batches from its sources, augments them and runs `agent.update` on them."""

    def __init__(self, agent: SAC, sources: Sequence[Source], batch_size: int,
                 generator: torch.Generator, augment: Callable[[Batch, torch.Generator], Batch] | None = None,
                 utd: float | None = None):
        if not sources:
            raise ValueError("a Learner needs at least one data source")
        if utd is not None and not (math.isfinite(utd) and utd > 0):
            raise ValueError(f"update-to-data ratio {utd} must be finite and > 0")
        self.agent, self.sources, self.batch_size = agent, list(sources), batch_size
        self.generator, self.augment, self.utd = generator, augment, utd
        self.updates = 0
        self.drawn = {s.name: 0 for s in self.sources}   # samples taken from each source

    def sample(self) -> Batch:
        shares = split_batch(self.batch_size, [s.current_weight() for s in self.sources])
        parts = []
        for source, share in zip(self.sources, shares):
            if share:
                parts.append(source.sample(share, self.generator))
                self.drawn[source.name] += share
        batch = concat_batches(parts)
        return batch if self.augment is None else self.augment(batch, self.generator)

    def update(self, n: int) -> dict[str, float]:
        """n gradient steps; the logs of the last one as floats."""
        logs: dict = {}
        for _ in range(n):
            logs = self.agent.update(self.sample())
            self.updates += 1
        return {k: float(v) for k, v in logs.items()}

    def due(self, data_steps: int) -> int:
        """Updates the ratio allows after `data_steps` transitions of new data, minus those done."""
        if self.utd is None:
            raise ValueError("this Learner has no update-to-data ratio")
        return max(0, int(math.floor(data_steps * self.utd + 1e-9)) - self.updates)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "drawn": dict(self.drawn)}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.drawn.update({k: int(v) for k, v in state.get("drawn", {}).items()})
