"""The segment file format: what makes the log crash-safe and every bad byte findable.

    segment := header frame*
    header  := b"S2RSEG\\r\\n" | u32 json_len | u32 crc32(json) | json (UTF-8)
    frame   := u32 FRAME_MAGIC | u32 payload_len | u64 seq | payload | u32 crc

All integers are little-endian. The header JSON carries the format and schema versions, the session
(number and random uuid), the segment index and first sequence number, the spec, observation and
record-layout hashes and the record layout itself. Frames are fixed-size within a session, so a
record can be located by arithmetic, and a damaged one costs only itself.

Why each part is there:
- the per-frame CRC-32 (zlib's, fast and in the standard library) covers length, seq and payload and
  is seeded with the session uuid, so a frame pasted in from another session is rejected as well;
  a random payload forged at the right length passes with probability 2^-32;
- the frame magic lets a reader resynchronise after a damaged length field by searching for the
  next frame that checks out, instead of giving up on the rest of the file;
- the sequence number must rise within a session, which catches a duplicated or reordered frame
  that a checksum alone would accept, and makes every lost record visible as a gap;
- names encode the state: `.open.tmp` (header being written), `.open` (being appended), `.seg`
  (sealed: complete, fsynced and renamed atomically, so "sealed" is never a lie after a crash);
- beside the segments, `<session>.manifest.json` lists a session's sealed segments (index, first
  and last seq, record count) and `sessions.json` is the high-water mark of session numbers: what
  finds whole records, segments or sessions that are gone, which no per-record check can.
"""
from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.durable import atomic_write_text
from deploy.replay.record import SCHEMA_VERSION, TransitionLayout

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"S2RSEG\r\n"
FRAME_MAGIC = 0x52325389            # bytes 89 53 32 52: "\x89S2R", high bit set as in PNG
FRAME_MAGIC_BYTES = struct.pack("<I", FRAME_MAGIC)
_HEAD = struct.Struct("<IIQ")       # magic, payload length, seq
_CRC = struct.Struct("<I")
FRAME_OVERHEAD = _HEAD.size + _CRC.size
_PREFIX = struct.Struct("<8sII")    # segment magic, json length, json crc
MAX_HEADER_JSON = 1 << 20

SEALED, OPEN, TMP = ".seg", ".open", ".open.tmp"
_NAME = re.compile(r"^(\d{8})-(\d{6})(\.seg|\.open|\.open\.tmp)$")


class ReplayError(ValueError):
    """A replay file is malformed; the message names the file, the offset and what is wrong."""

    def __init__(self, path: str | Path, offset: int | None, problem: str):
        self.path = str(path)
        self.offset = offset
        self.problem = problem
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {problem}")


@dataclass(frozen=True)
class SegmentFile:
    path: Path
    session: int
    index: int
    state: str   # SEALED, OPEN or TMP

    @property
    def sealed(self) -> bool:
        return self.state == SEALED

    @property
    def key(self) -> tuple[int, int]:
        return self.session, self.index


def segment_path(directory: Path, session: int, index: int, state: str) -> Path:
    return directory / f"{session:08d}-{index:06d}{state}"


def list_segments(directory: str | Path) -> list[SegmentFile]:
    """Segment files in (session, index) order; other files in the directory are ignored."""
    out = []
    for entry in os.scandir(directory):
        m = _NAME.match(entry.name)
        if m and entry.is_file():
            out.append(SegmentFile(Path(entry.path), int(m[1]), int(m[2]), m[3]))
    return sorted(out, key=lambda s: (s.session, s.index, s.state))


def session_seed(session_uuid: str) -> int:
    """The CRC seed that ties a session's frames to it."""
    return zlib.crc32(session_uuid.encode())


# ---- header ---------------------------------------------------------------------------------
def encode_header(header: dict[str, Any]) -> bytes:
    body = json.dumps(header, sort_keys=True).encode()
    return _PREFIX.pack(SEGMENT_MAGIC, len(body), zlib.crc32(body)) + body


def make_header(layout: TransitionLayout, *, session: int, session_uuid: str, index: int,
                first_seq: int, session_wall_ns: int, session_mono_ns: int,
                extra: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "schema_version": SCHEMA_VERSION, "session": session,
            "session_uuid": session_uuid, "segment": index, "first_seq": first_seq,
            "session_wall_ns": session_wall_ns, "session_mono_ns": session_mono_ns,
            **extra, **layout.to_header()}


@dataclass
class Header:
    data: dict[str, Any]
    layout: TransitionLayout
    size: int   # bytes before the first frame

    @property
    def session(self) -> int:
        return int(self.data["session"])

    @property
    def first_seq(self) -> int:
        return int(self.data["first_seq"])

    @property
    def seed(self) -> int:
        return session_seed(self.data["session_uuid"])


def read_header(path: Path, data: bytes, expect: SegmentFile | None = None) -> Header:
    """Parse and check a segment header; ReplayError naming the file says exactly what is wrong."""
    if len(data) < _PREFIX.size:
        raise ReplayError(path, 0, f"file is {len(data)} bytes, too short for a segment header "
                          f"({_PREFIX.size} bytes before the JSON)")
    magic, length, crc = _PREFIX.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise ReplayError(path, 0, f"not a replay segment (magic {magic!r}, expected {SEGMENT_MAGIC!r})")
    if length > MAX_HEADER_JSON:
        raise ReplayError(path, 8, f"header length {length} exceeds {MAX_HEADER_JSON} bytes")
    body = data[_PREFIX.size:_PREFIX.size + length]
    if len(body) < length:
        raise ReplayError(path, _PREFIX.size, f"header truncated: {len(body)} of {length} bytes")
    if zlib.crc32(body) != crc:
        raise ReplayError(path, _PREFIX.size, "header checksum mismatch")
    try:
        header = json.loads(body)
        if header["format"] != FORMAT_VERSION:
            raise ValueError(f"format version {header['format']} (this reader knows {FORMAT_VERSION})")
        if header["schema_version"] > SCHEMA_VERSION:
            raise ValueError(f"schema version {header['schema_version']} is newer than this "
                             f"reader's {SCHEMA_VERSION}")
        layout = TransitionLayout.from_header(header)
        if layout.record_size != header["record_size"]:
            raise ValueError(f"fields add up to {layout.record_size} bytes, header says "
                             f"{header['record_size']}")
        for key in ("session", "segment", "first_seq", "session_wall_ns", "session_mono_ns"):
            if not isinstance(header[key], int):
                raise ValueError(f"'{key}' is {header[key]!r}, expected an integer")
        str(header["session_uuid"])
    except (KeyError, TypeError, ValueError) as exc:
        what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ReplayError(path, _PREFIX.size, f"bad header: {what}") from None
    if expect is not None and (header["session"], header["segment"]) != expect.key:
        raise ReplayError(path, _PREFIX.size, f"header says session {header['session']} segment "
                          f"{header['segment']}, the file name says {expect.session} {expect.index}")
    return Header(header, layout, _PREFIX.size + length)


def read_header_file(path: Path, expect: SegmentFile | None = None) -> Header:
    """The header of a segment on disk, reading only its bytes."""
    with open(path, "rb") as f:
        data = f.read(_PREFIX.size)
        if len(data) == _PREFIX.size and data[:8] == SEGMENT_MAGIC:
            data += f.read(min(_PREFIX.unpack(data)[1], MAX_HEADER_JSON))
    return read_header(path, data, expect)


# ---- frames ---------------------------------------------------------------------------------
def frame_size(layout: TransitionLayout) -> int:
    return layout.record_size + FRAME_OVERHEAD


def frame_dtype(payload: np.dtype | int) -> np.dtype:
    """One frame as a numpy record; `payload` is the record dtype or just its size in bytes."""
    body = payload if isinstance(payload, np.dtype) else f"V{payload}"
    return np.dtype([("magic", "<u4"), ("length", "<u4"), ("seq", "<u8"), ("payload", body),
                     ("crc", "<u4")])


def encode_frames(payloads: list[bytes], first_seq: int, seed: int) -> memoryview:
    """Frames for consecutive sequence numbers, as one buffer for a single write."""
    size = len(payloads[0])
    step = size + FRAME_OVERHEAD
    frames = np.empty(len(payloads), frame_dtype(size))
    frames["magic"] = FRAME_MAGIC
    frames["length"] = size
    frames["seq"] = np.arange(first_seq, first_seq + len(payloads))
    frames["payload"] = np.frombuffer(b"".join(payloads), f"V{size}")
    view = memoryview(frames).cast("B")
    crc32 = zlib.crc32
    frames["crc"] = [crc32(view[o + 4:o + step - 4], seed) for o in range(0, len(view), step)]
    return view


@dataclass
class Problem:
    """Something wrong at one place in one file. `corrupt` problems fail `replay verify`;
    the others (a crashed writer's unflushed tail, records retired by the disk budget) are expected."""

    path: str
    offset: int | None
    kind: str
    message: str
    seq: int | None = None
    corrupt: bool = True

    def __str__(self) -> str:
        where = f" offset {self.offset}" if self.offset is not None else ""
        rec = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{self.path}:{where}{rec}: {self.message}"


@dataclass
class FrameScan:
    """Result of scanning a byte range of one segment."""

    runs: list[tuple[int, int, int]] = field(default_factory=list)   # (offset, count, first seq)
    problems: list[Problem] = field(default_factory=list)
    end: int = 0            # offset just past the last valid frame
    last_seq: int = -1      # seq of the last valid frame
    tail: int = 0           # bytes after `end` that hold no valid frame (torn or truncated)


def scan_frames(path: Path, data: bytes, start: int, layout: TransitionLayout, seed: int,
                last_seq: int, base: int = 0) -> FrameScan:
    """Valid frames in data[start:], skipping damaged ones with a Problem each. `data` holds the
    file from offset `base` on; every offset in the result is an offset in the file.

    A frame is valid when its magic, length and CRC check out and its seq is above the previous
    one. After a damaged frame the scan resumes at the next valid frame (one frame later when only
    the contents were damaged, else at the next magic that checks out); bytes with no valid frame
    after them are the tail, which the caller judges (torn write vs. truncation)."""
    size = layout.record_size
    step = size + FRAME_OVERHEAD
    view = memoryview(data)
    scan = FrameScan(end=start, last_seq=last_seq)
    dtype = frame_dtype(size)
    crc32 = zlib.crc32
    pos = start
    while True:
        n = (len(data) - pos) // step
        if n == 0:
            break
        frames = np.frombuffer(data, dtype=dtype, count=n, offset=pos)
        shape_ok = ((frames["magic"] == FRAME_MAGIC) & (frames["length"] == size)).tolist()
        seqs, crcs = frames["seq"].tolist(), frames["crc"].tolist()
        good, prev = 0, scan.last_seq
        for i in range(n):
            o = pos + i * step
            if not (shape_ok[i] and seqs[i] > prev and crc32(view[o + 4:o + step - 4], seed) == crcs[i]):
                break
            prev = seqs[i]
            good += 1
        if good:
            _add_runs(scan, path, pos, step, seqs[:good])
            pos += good * step
            scan.end, scan.last_seq = pos, prev
        if good == n:
            break
        nxt = _resync(data, view, pos, step, size, seed, scan.last_seq)
        if nxt is None:
            break
        scan.problems.append(Problem(str(path), pos, "corrupt",
                                     f"{_diagnose(data, view, pos, step, size, seed, scan.last_seq)}; "
                                     f"skipped {nxt - pos} bytes to the next valid record at "
                                     f"offset {base + nxt}"))
        pos = nxt
    scan.tail = len(data) - scan.end
    scan.end += base
    scan.runs = [(base + o, n, first) for o, n, first in scan.runs]
    for p in scan.problems:
        p.offset += base
    return scan


def _add_runs(scan: FrameScan, path: Path, pos: int, step: int, seqs: list[int]) -> None:
    """Split a block of valid frames into runs of consecutive seqs; each jump is a reported gap."""
    begin, prev = 0, scan.last_seq
    for i in range(len(seqs) + 1):
        if i == len(seqs) or seqs[i] != prev + 1:
            if i > begin:
                scan.runs.append((pos + begin * step, i - begin, seqs[begin]))
            if i < len(seqs):
                scan.problems.append(Problem(str(path), pos + i * step, "gap",
                                             f"sequence jumps from {prev} to {seqs[i]}: "
                                             f"{seqs[i] - prev - 1} record(s) missing", seq=seqs[i]))
            begin = i
        if i < len(seqs):
            prev = seqs[i]


def _frame_ok(data: bytes, view: memoryview, o: int, step: int, size: int, seed: int,
              last_seq: int) -> bool:
    if o + step > len(data):
        return False
    magic, length, seq = _HEAD.unpack_from(data, o)
    return (magic == FRAME_MAGIC and length == size and seq > last_seq
            and zlib.crc32(view[o + 4:o + step - 4], seed) == _CRC.unpack_from(data, o + step - 4)[0])


def _resync(data: bytes, view: memoryview, pos: int, step: int, size: int, seed: int,
            last_seq: int) -> int | None:
    """Offset of the next valid frame after a damaged one at `pos`, or None if there is none."""
    if _frame_ok(data, view, pos + step, step, size, seed, last_seq):
        return pos + step
    o = data.find(FRAME_MAGIC_BYTES, pos + 1)
    while o != -1:
        if _frame_ok(data, view, o, step, size, seed, last_seq):
            return o
        o = data.find(FRAME_MAGIC_BYTES, o + 1)
    return None


def _diagnose(data: bytes, view: memoryview, o: int, step: int, size: int, seed: int,
              last_seq: int) -> str:
    """What is wrong with the frame at `o`, in words."""
    magic, length, seq = _HEAD.unpack_from(data, o)
    if magic != FRAME_MAGIC:
        return f"bad record magic 0x{magic:08x} (expected 0x{FRAME_MAGIC:08x})"
    if length != size:
        return f"record length {length} does not match the session's record size {size}"
    stored = _CRC.unpack_from(data, o + step - 4)[0]
    computed = zlib.crc32(view[o + 4:o + step - 4], seed)
    if stored != computed:
        return (f"record claiming seq {seq}: checksum mismatch (stored 0x{stored:08x}, "
                f"computed 0x{computed:08x})")
    return f"record seq {seq} is not after seq {last_seq} (duplicated or out of order)"


# ---- directory ------------------------------------------------------------------------------
RETIRED_JOURNAL = "retired.jsonl"
LOCK_FILE = "writer.lock"


def read_retired(directory: str | Path) -> list[dict[str, Any]]:
    """Segments the disk budget deleted, oldest first (lines that do not parse are ignored: a
    crash can tear the last one, and the journal only explains gaps, it holds no data)."""
    path = Path(directory) / RETIRED_JOURNAL
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def append_retired(directory: Path, entry: dict[str, Any]) -> None:
    fd = os.open(directory / RETIRED_JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- session manifests and the session high-water mark -------------------------------------
# A checksum finds a damaged record; it cannot find a record, segment or session that is simply
# gone. Each session therefore keeps a manifest listing every segment it sealed (index, first and
# last seq, record count), rewritten atomically at start, at every seal and at close, and the
# directory keeps a high-water mark of session numbers. `replay verify` compares the files with both.
HIGH_WATER = "sessions.json"
MANIFEST_SUFFIX = ".manifest.json"
_MANIFEST_NAME = re.compile(r"^(\d{8})\.manifest\.json$")
MANIFEST_STATES = ("open", "closed", "recovered")    # recovered: its writer died, the next sealed it


def manifest_path(directory: str | Path, session: int) -> Path:
    return Path(directory) / f"{session:08d}{MANIFEST_SUFFIX}"


def list_manifests(directory: str | Path) -> list[int]:
    """Session numbers that have a manifest file, ascending."""
    return sorted(int(m[1]) for e in os.scandir(directory) if (m := _MANIFEST_NAME.match(e.name)))


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    """Replace a session's manifest atomically (a crash leaves the old one or the new one)."""
    atomic_write_text(manifest_path(directory, int(manifest["session"])),
                      json.dumps(manifest, sort_keys=True))


def read_manifest(directory: str | Path, session: int) -> dict[str, Any] | None:
    """A session's manifest, None when it has none; ReplayError when it does not parse."""
    path = manifest_path(directory, session)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ReplayError(path, None, f"unreadable session manifest ({exc})") from None
    try:
        if (data["format"], data["session"]) != (FORMAT_VERSION, session) \
                or data["state"] not in MANIFEST_STATES or not isinstance(data["session_uuid"], str):
            raise ValueError(f"format {data['format']!r}, session {data['session']!r}, state "
                             f"{data['state']!r}, uuid {data['session_uuid']!r}")
        for s in data["segments"]:
            if not all(isinstance(s[k], int) for k in ("index", "first_seq", "last_seq", "records")):
                raise ValueError(f"segment entry {s!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ReplayError(path, None, f"bad session manifest: {exc}") from None
    return data


def new_manifest(session: int, session_uuid: str) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "session": session, "session_uuid": session_uuid,
            "state": "open", "segments": []}


def add_sealed(manifest: dict[str, Any], index: int, first_seq: int, last_seq: int,
               records: int) -> None:
    """List a sealed segment (once: a seal retried after an I/O error does not list it twice)."""
    if any(s["index"] == index for s in manifest["segments"]):
        return
    manifest["segments"].append({"index": index, "first_seq": first_seq, "last_seq": last_seq,
                                 "records": records})


def read_high_water(directory: str | Path) -> dict[str, int] | None:
    """{"next_session": n, "manifests_from": k} or None (a directory older than manifests, or one
    whose mark was deleted); ReplayError when it does not parse."""
    path = Path(directory) / HIGH_WATER
    try:
        data = json.loads(path.read_text())
        mark = {"next_session": int(data["next_session"]),
                "manifests_from": int(data["manifests_from"])}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReplayError(path, None, f"unreadable session high-water mark ({exc!r})") from None
    return mark


def write_high_water(directory: str | Path, next_session: int, manifests_from: int) -> None:
    atomic_write_text(Path(directory) / HIGH_WATER,
                      json.dumps({"next_session": next_session, "manifests_from": manifests_from}))
