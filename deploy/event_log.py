"""Event logs as JSON lines: what the runner (episodes, swaps, rollbacks) and the fine-tuner
(promotions) append one line at a time while they run, and what `sac2real demo` and people read
afterwards. Appended with a single write per event, so a reader never sees half a line other
than the last one of a process that was killed."""
from __future__ import annotations

import json
from pathlib import Path


def append_event(path: str | Path, event: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def read_events(path: str | Path) -> list[dict]:
    """Every event of `path`, oldest first; none when it does not exist yet."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
