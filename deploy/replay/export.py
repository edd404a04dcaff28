"""Export a replay directory to MCAP, for people and tools rather than for the learner.

Why MCAP and not Parquet: the people who look at robot logs already open MCAP files. It is the
default storage of ROS 2 bags (rosbag2_storage_mcap) and Foxglove opens, plots and time-aligns it
next to the robot's own bags, with readers in Python, C++, Go, Rust and TypeScript. The learner
does not need an export at all (ReplayReader.load gives it numpy arrays), so the columnar analytics
that Parquet is good at buy little here, while pyarrow would be a heavy binary dependency; `mcap`
is a small package needed only on the machine that exports (the `replay-export` extra).

Layout of the file: one channel `/sac2real/transition` per session (channel metadata: session,
uuid, layout hash), JSON messages with a JSON Schema derived from the record layout (NaN, which
JSON lacks, becomes null), log time = the session's wall clock at start plus the monotonic time
elapsed, and one metadata record per session holding its segment header."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy.replay.reader import Cursor, ReplayReader
from deploy.replay.record import DOCS, TransitionLayout

TOPIC = "/sac2real/transition"


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    messages: int
    sessions: int
    cursor: Cursor


def json_schema(layout: TransitionLayout) -> dict[str, Any]:
    """JSON Schema of one exported message; arrays are flat lists in the layout's shape."""
    props: dict[str, Any] = {"session": {"type": "integer"}, "seq": {"type": "integer"}}
    for f in layout.fields:
        kind = np.dtype(f.dtype).kind
        scalar = {"f": {"type": ["number", "null"]}, "b": {"type": "boolean"},
                  "S": {"type": "string"}}.get(kind, {"type": "integer"})
        prop = scalar if not f.shape else {"type": "array", "items": scalar,
                                            "minItems": f.shape[0], "maxItems": f.shape[0]}
        props[f.name] = {**prop, "description": DOCS.get(f.name, "")}
    return {"type": "object", "title": "sac2real.Transition", "properties": props}


def export_mcap(directory: str | Path, out: str | Path, after: Cursor = Cursor(),
                layout_hash: str | None = None) -> ExportSummary:
    """Write every valid record after `after` to an MCAP file at `out`."""
    from mcap.writer import Writer   # the replay-export extra; the robot never needs it

    out = Path(out)
    reader = ReplayReader(Path(directory), layout_hash=layout_hash)
    channels: dict[int, int] = {}
    schemas: dict[str, int] = {}
    count, cursor = 0, Cursor(*after)
    with open(out, "wb") as stream:
        writer = Writer(stream)
        writer.start(profile="", library="sac2real")
        for chunk in reader.chunks(after):
            head, layout = chunk.header, chunk.header.layout
            if layout.hash not in schemas:
                schemas[layout.hash] = writer.register_schema(
                    "sac2real.Transition", "jsonschema", json.dumps(json_schema(layout)).encode())
            if chunk.session not in channels:
                channels[chunk.session] = writer.register_channel(
                    TOPIC, "json", schemas[layout.hash],
                    {"session": str(chunk.session), "session_uuid": head.data["session_uuid"],
                     "layout_hash": layout.hash})
                writer.add_metadata(f"sac2real.session.{chunk.session}",
                                    {k: v if isinstance(v, str) else json.dumps(v)
                                     for k, v in head.data.items()})
            offset = head.data["session_wall_ns"] - head.data["session_mono_ns"]
            times = (chunk.records["time_ns"] + offset).tolist()
            columns = {f.name: _column(chunk.records[f.name]) for f in layout.fields}
            for i, seq in enumerate(chunk.seq.tolist()):
                msg = {"session": chunk.session, "seq": seq}
                msg.update((name, col[i]) for name, col in columns.items())
                writer.add_message(channels[chunk.session], log_time=times[i],
                                   publish_time=times[i], sequence=seq & 0xFFFFFFFF,
                                   data=json.dumps(msg, allow_nan=False).encode())
            count += len(chunk)
            cursor = chunk.cursor
        writer.finish()
    return ExportSummary(out, count, len(channels), cursor)


def _column(values: np.ndarray) -> list[Any]:
    """One field of a chunk as JSON-ready Python values (bytes as text, NaN and inf as null)."""
    if values.dtype.kind == "S":
        return [v.decode(errors="replace") for v in values.tolist()]
    if values.dtype.kind == "f":
        values = values.astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            return np.where(bad, None, values.astype(object)).tolist()
    return values.tolist()
