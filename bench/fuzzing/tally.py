"""What a fuzz run found at one entry point, in the five outcomes the safety review counts."""
from __future__ import annotations

import dataclasses
import traceback
from typing import Callable

OUTCOMES = ("refused", "handled", "silently_accepted", "crashed")


@dataclasses.dataclass
class Tally:
    """tried = refused (a clear error naming the input) + handled (accepted, and the system stayed
    safe: damping, a dropped sample, a clamp) + silently_accepted (bad input taken as good) +
    crashed (an unexpected exception, or a process death). The last two must stay 0."""
    entry_point: str
    tried: int = 0
    refused: int = 0
    handled: int = 0
    silently_accepted: int = 0
    crashed: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def add(self, outcome: str, example: str = "") -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        self.tried += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome in ("silently_accepted", "crashed") and len(self.examples) < 10:
            self.examples.append(example[:500])

    def trial(self, describe: str, attempt: Callable[[], str]) -> None:
        """Run one input: `attempt` returns "refused", "handled" or "silently_accepted"; an
        exception it does not turn into one of those counts as a crash, with its traceback."""
        try:
            outcome = attempt()
        except Exception:   # the point: anything unexpected is a finding, not a test error
            self.add("crashed", f"{describe}: {traceback.format_exc(limit=3)}")
            return
        self.add(outcome, describe)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
