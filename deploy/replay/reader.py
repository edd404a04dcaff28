"""The replay reader: every valid record of a directory, in (session, seq) order, exactly once.

It reads sealed segments and tails the open one, stopping at the last complete valid record (a
frame still being written is simply not there yet). Damaged records are skipped, each with an
error naming the file, the offset and what is wrong, and the records around them are kept.

A `Cursor` is the (session, seq) of the last record a consumer has taken. A learner stores it next
to its checkpoint and passes it back as `after=` when it restarts: the reader skips whole segments
it does not need (from their headers) and yields what follows, never a record twice.

Which segment is final: a sealed one, or an open one followed by any later segment (its writer
died before sealing it). Only the last open segment may still grow, so only there is an
unfinished tail "not yet written" rather than "lost"."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from deploy.replay.record import TransitionLayout
from deploy.replay.segment import (FRAME_OVERHEAD, HIGH_WATER, TMP, Header, Problem, ReplayError,
                                   SegmentFile,
                                   frame_dtype, list_manifests, list_segments, manifest_path,
                                   read_header_file, read_high_water, read_manifest, read_retired,
                                   scan_frames)

log = logging.getLogger("deploy.replay")


class Cursor(NamedTuple):
    """The last record consumed; the default is "before everything". A plain pair of ints, so a
    learner can store it in its checkpoint as it is."""

    session: int = -1
    seq: int = -1


@dataclass
class Chunk:
    """Consecutive valid records of one segment."""

    path: Path
    header: Header
    seq: np.ndarray        # (n,) int64
    records: np.ndarray    # (n,) structured, dtype of header.layout

    @property
    def session(self) -> int:
        return self.header.session

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.session, int(self.seq[-1]))

    def __len__(self) -> int:
        return len(self.seq)


class Record(NamedTuple):
    session: int
    seq: int
    data: np.void          # one structured record: data["obs"], data["joint_pos"], ...

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.session, self.seq)


@dataclass
class ReplayArrays:
    """Everything loaded, one row per transition, as an off-policy learner consumes it."""

    obs: np.ndarray             # (N, obs_dim) float32
    actions: np.ndarray         # (N, act_dim) float32
    rewards: np.ndarray         # (N,) float32, NaN where the robot did not compute one
    next_obs: np.ndarray        # (N, obs_dim) float32, the pre-reset observation at episode ends
    terminated: np.ndarray      # (N,) bool: failure, do not bootstrap
    truncated: np.ndarray       # (N,) bool: time limit or operator stop, bootstrap from next_obs
    session: np.ndarray         # (N,) int64
    seq: np.ndarray             # (N,) int64
    contiguous: np.ndarray      # (N,) bool: row i directly follows row i-1 (n-step windows)
    fields: dict[str, np.ndarray]   # every record field by name, raw robot state included
    layout: TransitionLayout | None
    cursor: Cursor              # pass as `after=` to load only what comes next

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def dones(self) -> np.ndarray:
        """Episode ended for either reason (training/replay_buffer.py's `dones`)."""
        return self.terminated | self.truncated

    @property
    def timeouts(self) -> np.ndarray:
        return self.truncated


@dataclass
class _Progress:
    header: Header
    offset: int
    last_seq: int


@dataclass
class _Walk:
    """What one pass over the directory knows so far."""

    cursor: Cursor
    progress: dict[tuple[int, int], _Progress] = field(default_factory=dict)
    done: set[tuple[int, int]] = field(default_factory=set)
    headers: dict[tuple[int, int], Header | None] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)    # session -> last seq read
    skipped: set[int] = field(default_factory=set)        # sessions of another layout
    previous: tuple[int, int] | None = None               # the segment handled last
    jumps: set[tuple[int, int]] = field(default_factory=set)   # index jumps already relisted
    vanished: bool = False                                # a file was renamed or retired under us
    read: dict[tuple[int, int], list[int]] = field(default_factory=dict)   # [first, last, count]


@dataclass
class ReplayReader:
    """Reads a replay directory. With `layout_hash`, sessions recorded with another record layout
    (another robot spec or observation layout) are skipped with a warning."""

    directory: Path
    layout_hash: str | None = None
    log_problems: bool = True       # off for a caller that prints `problems` itself
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if not self.directory.is_dir():
            raise ReplayError(self.directory, None, "not a directory")

    # ---- iteration ---------------------------------------------------------------------
    def chunks(self, after: Cursor = Cursor(), follow: bool = False, poll_s: float = 0.2,
               idle_timeout_s: float | None = None) -> Iterator[Chunk]:
        """Valid records after `after`, in order. With `follow`, keep tailing the open segment
        until `idle_timeout_s` passes with nothing new (None: forever)."""
        walk = _Walk(Cursor(*after))
        idle_since = time.monotonic()
        while True:
            got = relist = False
            segments = [s for s in list_segments(self.directory) if s.state != TMP]
            for i, seg in enumerate(segments):
                if seg.key in walk.done:
                    continue
                if self._jumped(seg, walk):
                    relist = True
                    break
                walk.previous = seg.key
                final = seg.sealed or i + 1 < len(segments)
                if seg.session < walk.cursor.session or self._passed(seg, segments[i + 1:], walk):
                    walk.done.add(seg.key)
                    walk.last.pop(seg.session, None)    # continuity is now judged by the cursor
                    continue
                for chunk in self._read(seg, final, walk):
                    got = True
                    walk.cursor = chunk.cursor
                    yield chunk
                if walk.vanished:
                    walk.vanished, relist = False, True
                    break
                if final:
                    walk.done.add(seg.key)
                    walk.progress.pop(seg.key, None)
            if got:
                idle_since = time.monotonic()
            if relist:
                continue
            if not follow or (idle_timeout_s is not None
                              and time.monotonic() - idle_since > idle_timeout_s):
                self._check_manifests(walk, max(after[0], 0))
                return
            if not got:
                time.sleep(poll_s)

    def records(self, after: Cursor = Cursor(), follow: bool = False, poll_s: float = 0.2,
                idle_timeout_s: float | None = None) -> Iterator[Record]:
        """One record at a time (convenient, slower than chunks())."""
        for chunk in self.chunks(after, follow, poll_s, idle_timeout_s):
            for seq, rec in zip(chunk.seq.tolist(), chunk.records):
                yield Record(chunk.session, seq, rec)

    def load(self, after: Cursor = Cursor()) -> ReplayArrays:
        """Everything after `after` as arrays (what exists now; no tailing). All sessions must share
        one record layout unless the reader was given `layout_hash` to select one."""
        chunks = list(self.chunks(after))
        layouts: dict[str, Chunk] = {}
        for c in chunks:
            layouts.setdefault(c.header.layout.hash, c)
        if len(layouts) > 1:
            listing = "; ".join(f"{h[:12]} (robot {c.header.layout.robot}, first in {c.path.name})"
                                for h, c in layouts.items())
            raise ReplayError(self.directory, None, f"sessions use {len(layouts)} record layouts: "
                              f"{listing}; pass layout_hash to load one")
        layout = chunks[0].header.layout if chunks else None
        if chunks:
            records = np.concatenate([c.records for c in chunks])
            seq = np.concatenate([c.seq for c in chunks])
            session = np.concatenate([np.full(len(c), c.session, np.int64) for c in chunks])
            fields = {name: np.ascontiguousarray(records[name]) for name in layout.names}
        else:
            seq = session = np.zeros(0, np.int64)
            fields = {}
        contiguous = np.zeros(len(seq), bool)
        if len(seq) > 1:
            contiguous[1:] = ((session[1:] == session[:-1]) & (seq[1:] == seq[:-1] + 1)
                              & (fields["dropped"][1:] == fields["dropped"][:-1]))
        empty = np.zeros((0, 0), np.float32)
        return ReplayArrays(
            obs=fields.get("obs", empty), actions=fields.get("action", empty),
            rewards=fields.get("reward", np.zeros(0, np.float32)),
            next_obs=fields.get("next_obs", empty),
            terminated=fields.get("terminated", np.zeros(0, bool)),
            truncated=fields.get("truncated", np.zeros(0, bool)),
            session=session, seq=seq, contiguous=contiguous, fields=fields, layout=layout,
            cursor=chunks[-1].cursor if chunks else Cursor(*after))

    # ---- internals ---------------------------------------------------------------------
    @staticmethod
    def _jumped(seg: SegmentFile, walk: _Walk) -> bool:
        """A segment index skipped within a session: list the directory once more before taking
        it for a gap, in case the listing raced a rename (order matters more than latency)."""
        prev = walk.previous
        if prev is None or prev[0] != seg.session or seg.index == prev[1] + 1 \
                or seg.key in walk.jumps:
            return False
        walk.jumps.add(seg.key)
        return True

    def _header(self, seg: SegmentFile, walk: _Walk) -> Header | None:
        if seg.key not in walk.headers:
            try:
                walk.headers[seg.key] = read_header_file(seg.path, seg)
            except FileNotFoundError:
                walk.vanished = True   # renamed (sealed) or retired: the next listing says which
                return None
            except (OSError, ReplayError) as exc:
                walk.headers[seg.key] = None
                self._report(Problem(str(seg.path), getattr(exc, "offset", None), "bad_header",
                                     f"segment skipped: {getattr(exc, 'problem', exc)}"))
        return walk.headers[seg.key]

    def _passed(self, seg: SegmentFile, later: list[SegmentFile], walk: _Walk) -> bool:
        """The cursor is at or beyond the end of `seg`: the next segment of its session starts at
        or before cursor.seq + 1 (read from that segment's header alone)."""
        if seg.session != walk.cursor.session or seg.key in walk.progress:
            return False
        nxt = next((s for s in later if s.session == seg.session), None)
        head = self._header(nxt, walk) if nxt is not None else None
        return head is not None and head.first_seq <= walk.cursor.seq + 1

    def _read(self, seg: SegmentFile, final: bool, walk: _Walk) -> Iterator[Chunk]:
        state = walk.progress.get(seg.key)
        if state is None:
            head = self._header(seg, walk)
            if head is None or seg.session in walk.skipped:
                return
            if self.layout_hash is not None and head.layout.hash != self.layout_hash:
                walk.skipped.add(seg.session)
                self._report(Problem(str(seg.path), None, "other_layout",
                                     f"session {head.session} skipped: record layout "
                                     f"{head.layout.hash[:12]} is not the requested "
                                     f"{self.layout_hash[:12]}", corrupt=False))
                return
            known = walk.last.get(seg.session)
            self._check_continuity(seg, head, known, walk.cursor)
            start = head.first_seq - 1 if known is None else max(known, head.first_seq - 1)
            state = walk.progress[seg.key] = _Progress(head, head.size, start)
        head, cursor = state.header, walk.cursor
        try:
            with open(seg.path, "rb") as f:
                f.seek(state.offset)
                data = f.read()
        except FileNotFoundError:
            walk.vanished = True
            return
        scan = scan_frames(seg.path, data, 0, head.layout, head.seed, state.last_seq,
                           base=state.offset)
        for p in scan.problems:
            self._report(p)
        step = head.layout.record_size + FRAME_OVERHEAD
        frame = frame_dtype(head.layout.dtype)
        base = state.offset
        state.offset, state.last_seq = scan.end, scan.last_seq
        walk.last[seg.session] = scan.last_seq
        seen = walk.read.setdefault(seg.key, [-1, -1, 0])
        if scan.runs:
            seen[0] = scan.runs[0][2] if seen[2] == 0 else seen[0]
            seen[1], seen[2] = scan.last_seq, seen[2] + sum(count for _, count, _ in scan.runs)
        for offset, count, first in scan.runs:
            lo = 0
            if head.session == cursor.session and first <= cursor.seq:
                lo = min(count, cursor.seq - first + 1)
            if lo == count:
                continue
            local = offset - base + lo * step
            records = np.frombuffer(data, frame, count - lo, local)["payload"].copy()
            yield Chunk(seg.path, head, np.arange(first + lo, first + count, dtype=np.int64),
                        records)
        if final and scan.tail:
            if seg.sealed:
                self._report(Problem(str(seg.path), scan.end, "truncated",
                                     f"sealed segment ends with {scan.tail} bytes that are no valid "
                                     f"record (after seq {scan.last_seq}): truncated or damaged"))
            else:
                self._report(Problem(str(seg.path), scan.end, "torn_tail",
                                     f"its writer stopped without sealing it: {scan.tail} bytes of "
                                     f"an unfinished write after seq {scan.last_seq} are lost",
                                     corrupt=False))

    def _check_continuity(self, seg: SegmentFile, head: Header, known: int | None,
                          cursor: Cursor) -> None:
        """A segment must start where the previous one of its session ended (or, for the first
        segment read, at 0 or just after the cursor), unless the segments between were retired by
        the disk budget, which its journal says."""
        if known is None:
            expected = cursor.seq + 1 if seg.session == cursor.session else 0
            if head.first_seq <= expected:
                return
        else:
            expected = known + 1
            if head.first_seq == expected:
                return
            if head.first_seq < expected:
                self._report(Problem(str(seg.path), None, "overlap",
                                     f"segment starts at seq {head.first_seq}, but seq {known} was "
                                     f"already read from the previous segment", seq=head.first_seq))
                return
        missing = (expected, head.first_seq - 1)
        retired = [e for e in read_retired(self.directory) if e.get("session") == seg.session
                   and isinstance(e.get("first_seq"), int) and isinstance(e.get("last_seq"), int)
                   and e["first_seq"] <= missing[1] and e["last_seq"] >= missing[0]]
        if retired:
            self._report(Problem(str(seg.path), None, "retired",
                                 f"session {seg.session} seq {missing[0]}..{missing[1]} were retired "
                                 f"by the disk budget ({', '.join(e['file'] for e in retired)})",
                                 seq=head.first_seq, corrupt=False))
        else:
            self._report(Problem(str(seg.path), None, "gap",
                                 f"session {seg.session} seq {missing[0]}..{missing[1]} are missing "
                                 f"(no segment holds them)", seq=head.first_seq))

    def _check_manifests(self, walk: _Walk, first_session: int) -> None:
        """What no checksum can see: records, segments or whole sessions that are gone. Each
        session's manifest lists its sealed segments, the high-water mark the sessions started; a
        session recorded before manifests were kept gets a note instead.

        A live writer writes a session's manifest before the mark and before any segment, and
        lists a segment before sealing it. So the mark is read first, the manifests once before
        the files are listed (what they list existed when the files were listed: a loss) and once
        after (every sealed file listed must appear in them: else unlisted)."""
        d = self.directory
        try:
            mark = read_high_water(d)
        except ReplayError as exc:
            mark = None
            self._report(Problem(exc.path, None, "bad_manifest", exc.problem))
        before = self._manifests(report=True)
        files: dict[int, dict[int, SegmentFile]] = {}
        for seg in list_segments(d):
            if seg.state != TMP:
                files.setdefault(seg.session, {})[seg.index] = seg
        after = self._manifests(report=False)
        retired = {(e.get("session"), e.get("segment")) for e in read_retired(d)}
        started = range(mark["manifests_from"], mark["next_session"]) if mark else range(0)
        for session in sorted(set(files) | set(before) | set(started)):
            if session < first_session:
                continue
            if session in before:
                if mark and not mark["manifests_from"] <= session < mark["next_session"]:
                    self._report(Problem(str(d / HIGH_WATER), None, "bad_manifest",
                                         f"the high-water mark (sessions {mark['manifests_from']}.."
                                         f"{mark['next_session'] - 1}) does not cover session "
                                         f"{session}, which has a manifest", corrupt=False))
                if before[session] is not None:
                    self._check_listed(session, before[session], files.get(session, {}), retired,
                                       walk)
                    self._check_unlisted(session, after.get(session), files.get(session, {}))
            elif session not in after:
                self._no_manifest(session, mark, session in files,
                                  any(r[0] == session for r in retired))

    def _manifests(self, report: bool) -> dict[int, dict | None]:
        """Every session's manifest by number (None: unreadable, reported when `report`)."""
        out: dict[int, dict | None] = {}
        for session in list_manifests(self.directory):
            try:
                out[session] = read_manifest(self.directory, session)
            except ReplayError as exc:
                out[session] = None
                if report:
                    self._report(Problem(exc.path, None, "bad_manifest", exc.problem))
        return out

    def _no_manifest(self, session: int, mark: dict | None, has_files: bool,
                     retired: bool) -> None:
        path = str(manifest_path(self.directory, session))
        if has_files and mark and session >= mark["manifests_from"]:
            self._report(Problem(path, None, "missing_manifest",
                                 f"session {session} has segments but no manifest, though every "
                                 f"session from {mark['manifests_from']} on was written with one: "
                                 f"deleted?"))
        elif mark and mark["manifests_from"] <= session < mark["next_session"] and not retired:
            self._report(Problem(path, None, "missing_session",
                                 f"session {session} is missing: the high-water mark says it was "
                                 f"started, but neither its manifest nor any segment of it is "
                                 f"here (deleted?)"))
        elif has_files:
            self._report(Problem(str(self.directory), None, "no_manifest",
                                 f"session {session} has no manifest (recorded before manifests "
                                 f"were kept): a segment missing at its end, or a truncated last "
                                 f"segment, cannot be detected", corrupt=False))

    def _check_listed(self, session: int, manifest: dict, files: dict[int, SegmentFile],
                      retired: set, walk: _Walk) -> None:
        """Every segment the manifest lists is here (or retired) and holds what it lists."""
        name = manifest_path(self.directory, session).name
        for entry in manifest["segments"]:
            seg = files.get(entry["index"])
            span = f"seq {entry['first_seq']}..{entry['last_seq']}, {entry['records']} records"
            if seg is None:
                if (session, entry["index"]) not in retired:
                    self._report(Problem(str(self.directory), None, "missing_segment",
                                         f"session {session} segment {entry['index']} ({span}) is "
                                         f"listed in {name} but is not here: deleted?",
                                         seq=entry["first_seq"]))
                continue
            seen = walk.read.get(seg.key)
            if seen is None or seg.key not in walk.done:
                continue        # not read in this pass (before the cursor, or still growing)
            first, last, count = seen
            header = walk.headers.get(seg.key)
            if header is not None and header.data["session_uuid"] != manifest["session_uuid"]:
                self._report(Problem(str(seg.path), None, "bad_manifest",
                                     f"its session uuid is not the one {name} names"))
            if last < entry["last_seq"]:
                self._report(Problem(str(seg.path), None, "truncated",
                                     f"ends at seq {last}, but {name} lists {span}: "
                                     f"{entry['last_seq'] - last} record(s) cut off its end",
                                     seq=last + 1))
            elif last > entry["last_seq"]:
                self._report(Problem(str(seg.path), None, "unlisted_records",
                                     f"holds records up to seq {last}, beyond the {span} that "
                                     f"{name} lists", seq=entry["last_seq"] + 1))
            elif (first, count) != (entry["first_seq"], entry["records"]):
                self._report(Problem(str(seg.path), None, "bad_manifest",
                                     f"holds {count} records from seq {first}, but {name} lists "
                                     f"{span}"))

    def _check_unlisted(self, session: int, manifest: dict | None,
                        files: dict[int, SegmentFile]) -> None:
        """A sealed segment the manifest does not list was not sealed by its writer."""
        if manifest is None:
            return
        listed = {e["index"] for e in manifest["segments"]}
        for index, seg in files.items():
            if index not in listed and seg.sealed:
                self._report(Problem(str(seg.path), None, "unlisted_segment",
                                     f"sealed, but {manifest_path(self.directory, session).name} "
                                     f"does not list it (a writer lists every segment before "
                                     f"sealing it)"))

    def _report(self, problem: Problem) -> None:
        self.problems.append(problem)
        if self.log_problems:
            (log.error if problem.corrupt else log.warning)("replay: %s", problem)
