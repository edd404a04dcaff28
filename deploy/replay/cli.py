"""`sac2real replay info|verify|export DIR`: what a replay directory holds and whether it is intact.

Both `info` and `verify` read every record and check every checksum; `info` prints a summary per
session, `verify` also lists every problem and exits 1 when any of them is corruption (damaged or
missing records, a truncated sealed segment, an unreadable header, and against the session
manifests: a segment missing, cut short or not listed, a session or manifest missing). A crashed
writer's unflushed tail, segments retired by the disk budget and sessions recorded before
manifests were kept are reported but are not corruption."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploy.replay.reader import ReplayReader
from deploy.replay.segment import ReplayError, list_segments, read_retired


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="inspect and check onboard replay logs")
    rsub = p.add_subparsers(dest="replay_command", required=True)
    info = rsub.add_parser("info", help="sessions, counts, time span, gaps and disk use")
    info.add_argument("directory", type=Path)
    info.set_defaults(func=_survey, verify=False)
    verify = rsub.add_parser("verify", help="check every record; exit 1 on corruption")
    verify.add_argument("directory", type=Path)
    verify.set_defaults(func=_survey, verify=True)
    export = rsub.add_parser("export", help="write the records to an MCAP file (Foxglove, ROS 2)")
    export.add_argument("directory", type=Path)
    export.add_argument("output", type=Path, help="the .mcap file to write")
    export.add_argument("--json", action="store_true",
                        help="every record field as JSON on /sac2real/transition (Foxglove), "
                             "instead of ROS 2 messages (ros2 bag play)")
    export.set_defaults(func=_export)


@dataclass
class SessionSummary:
    session: int
    robot: str
    spec_hash: str
    layout_hash: str
    started_wall_ns: int
    segments: set[int] = field(default_factory=set)
    records: int = 0
    first_seq: int = -1
    last_seq: int = -1
    first_ns: int = 0
    last_ns: int = 0
    dropped: int = 0


def survey(directory: Path) -> tuple[dict[int, SessionSummary], ReplayReader]:
    """Read everything once; per-session counts plus the reader's problem list."""
    reader = ReplayReader(directory, log_problems=False)
    sessions: dict[int, SessionSummary] = {}
    for chunk in reader.chunks():
        h = chunk.header
        s = sessions.get(chunk.session)
        if s is None:
            s = sessions[chunk.session] = SessionSummary(
                chunk.session, h.layout.robot, h.layout.spec_hash, h.layout.hash,
                h.data["session_wall_ns"], first_seq=int(chunk.seq[0]),
                first_ns=int(chunk.records["time_ns"][0]))
        s.segments.add(int(h.data["segment"]))
        s.records += len(chunk)
        s.last_seq = int(chunk.seq[-1])
        s.last_ns = int(chunk.records["time_ns"][-1])
        s.dropped = max(s.dropped, int(np.max(chunk.records["dropped"])))
    return sessions, reader


def _print_summary(directory: Path, sessions: dict[int, SessionSummary],
                   reader: ReplayReader) -> None:
    segments = list_segments(directory)
    disk = sum(e.stat().st_size for e in os.scandir(directory) if e.is_file())
    sealed = sum(s.sealed for s in segments)
    records = sum(s.records for s in sessions.values())
    print(f"replay {directory}: {len(sessions)} sessions, {records} records, {len(segments)} "
          f"segments ({sealed} sealed, {len(segments) - sealed} open), {_bytes(disk)} on disk")
    retired = read_retired(directory)
    if retired:
        print(f"  retired by the disk budget: {len(retired)} segments, "
              f"{_bytes(sum(int(e.get('bytes', 0)) for e in retired))}")
    for s in sessions.values():
        start = dt.datetime.fromtimestamp(s.started_wall_ns / 1e9, dt.timezone.utc)
        span = (s.last_ns - s.first_ns) / 1e9
        missing = (s.last_seq - s.first_seq + 1) - s.records
        print(f"  session {s.session}: {s.robot} spec {s.spec_hash[:12]} layout "
              f"{s.layout_hash[:12]}, started {start:%Y-%m-%d %H:%M:%S} UTC, {s.records} records "
              f"(seq {s.first_seq}..{s.last_seq}, {missing} missing inside), {span:.1f} s, "
              f"{s.dropped} dropped by the writer, {len(s.segments)} segments")
    kinds: dict[str, int] = {}
    for p in reader.problems:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    corrupt = sum(p.corrupt for p in reader.problems)
    listing = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
    print(f"  problems: {listing}; {corrupt} count as corruption")


def _survey(args: argparse.Namespace) -> int:
    """`info` and `verify` read and check the same; `verify` also lists every problem and fails
    on corruption."""
    try:
        sessions, reader = survey(args.directory)
    except ReplayError as exc:
        print(f"sac2real replay: error: {exc}", file=sys.stderr)
        return 2
    if args.verify:
        for p in reader.problems:
            print(f"{'CORRUPT' if p.corrupt else 'note'}: {p}")
    _print_summary(args.directory, sessions, reader)
    if not args.verify:
        return 0
    corrupt = sum(p.corrupt for p in reader.problems)
    print("verify: FAILED" if corrupt else "verify: OK")
    return 1 if corrupt else 0


def _export(args: argparse.Namespace) -> int:
    from deploy.replay.export import export_mcap, export_ros2_mcap
    try:
        summary = (export_mcap if args.json else export_ros2_mcap)(args.directory, args.output)
    except ReplayError as exc:
        print(f"sac2real replay: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {summary.messages} transitions of {summary.sessions} sessions to {summary.path}")
    return 0


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
