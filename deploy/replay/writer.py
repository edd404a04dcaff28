"""The replay writer: a thread that turns the control loop's transitions into segment files.

The loop calls `append(...)` once per tick. It puts the fields, unchecked and uncopied, on a bounded
deque (the Controller's arrays are new every tick); this thread checks them against the layout and
encodes them into records. No lock is taken, nothing waits on the disk, and a malformed transition
is dropped and counted here instead of raising in the loop. When the deque is full the transition
is dropped and counted too, and the count travels in every later record (`dropped`) so a learner
knows where the stream has holes.

Durability policy: a record is handed to the kernel (`os.write`) within `poll_s` of its append,
so a crash of this process (SIGKILL, an exception) loses only what is still queued; it reaches the
disk by `fdatasync` every `fsync_period_s` (0 = after every write, None = only when a segment is
sealed), which bounds what a power cut can take. A failed write (disk full, file size limit,
I/O error) is cut back off the file with `ftruncate` so no torn frame sits between good ones, and
retried after `retry_s`; meanwhile the deque fills and the loop's drops are counted, so logging
degrades and the loop does not notice.

The thread shares the GIL with the loop. Its Python work per batch is tens of microseconds, and
write, fdatasync and rename run without the GIL; but a loop thread at real-time priority can still
wait for the GIL while the OS has preempted the writer thread holding it. bench/replay.py measures
the loop's worst append and tick lateness with and without the writer while the disk is busy.

One writer per directory, enforced with an advisory lock that the kernel drops when the process
dies. On start the writer seals whatever a crashed predecessor left open: the torn tail (bytes
after the last valid frame) is cut off and the segment renamed to sealed. Each session keeps a
manifest of its sealed segments and the directory a high-water mark of session numbers
(segment.py), both replaced atomically by this thread or at start, never by the loop."""
from __future__ import annotations

import collections
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from deploy.replay.record import TransitionLayout
from deploy.durable import fsync_dir
from deploy.replay.segment import (LOCK_FILE, OPEN, SEALED, TMP, ReplayError, SegmentFile,
                                   add_sealed, append_retired, encode_frames, encode_header,
                                   frame_size, list_manifests, list_segments, make_header,
                                   new_manifest, read_header, read_header_file, read_high_water,
                                   read_manifest, read_retired, scan_frames, segment_path,
                                   session_seed, write_high_water, write_manifest)

log = logging.getLogger("deploy.replay")


@dataclass(frozen=True)
class WriterStats:
    """A snapshot for diagnostics; every counter is for this session."""

    session: int
    enqueued: int           # transitions accepted by append()
    dropped: int            # transitions lost: queue full, writer closed, or malformed
    malformed: int          # of those, refused by the layout check (last_error names the field)
    written: int            # records handed to the kernel
    synced: int             # records known to be on disk (fdatasync returned)
    queue_depth: int        # records waiting for the writer thread
    lag_s: float            # age of the oldest record not yet written; 0 when caught up
    bytes_written: int
    segments_sealed: int
    segments_retired: int   # deleted by the disk budget
    io_errors: int
    last_error: str | None
    alive: bool             # the writer thread is running


class ReplayWriter:
    """Append-only transition log for one session in `directory`.

    Use as a context manager, or call start() before and close() after the control loop."""

    def __init__(self, directory: str | Path, layout: TransitionLayout, *, queue_size: int = 4096,
                 segment_bytes: int = 64 << 20, fsync_period_s: float | None = 1.0,
                 disk_budget_bytes: int | None = None, retry_s: float = 1.0, poll_s: float = 0.02,
                 max_batch: int = 1024, header_extra: dict[str, Any] | None = None,
                 enrich: Callable[[dict[str, Any]], None] | None = None):
        self.directory = Path(directory)
        self.layout = layout
        self.frame_size = frame_size(layout)
        if segment_bytes < self.frame_size:
            raise ValueError(f"segment_bytes {segment_bytes} is smaller than one record "
                             f"({self.frame_size} bytes)")
        if disk_budget_bytes is not None and disk_budget_bytes < 2 * segment_bytes:
            raise ValueError(f"disk_budget_bytes {disk_budget_bytes} must hold at least two "
                             f"segments of {segment_bytes} bytes (the open one and a sealed one)")
        self.queue_size = queue_size
        self.segment_bytes = segment_bytes
        self.fsync_period_s = fsync_period_s
        self.disk_budget_bytes = disk_budget_bytes
        self.retry_s = retry_s
        self.poll_s = poll_s
        self.max_batch = max_batch
        # completes each transition on the writer's thread before it is encoded (the task's
        # reward from the measured fields: deploy/robot_rewards.py), never in the control loop
        self.enrich = enrich
        self.header_extra = {"host": socket.gethostname(), "pid": os.getpid(),
                             **(header_extra or {})}
        self._queue: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self._closing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        # counters (each written by one thread only)
        self._enqueued = self._dropped = 0
        self._written = self._synced = self._bytes = 0
        self._sealed = self._retired = self._io_errors = self._malformed = 0
        self._last_error: str | None = None
        # the open segment (writer thread only)
        self._fd: int | None = None
        self._seg: SegmentFile | None = None
        self._seg_size = 0
        self._seg_records = 0
        self._seg_first = 0     # seq of the open segment's first record
        self._manifest: dict[str, Any] = {}
        self._published = False     # the manifest and high-water mark name this session
        self._index = 0
        self._seq = 0
        self._pending: list[tuple[int, bytes]] = []
        self._retry_at = 0.0
        self._degraded = False
        self._close_timeout = 10.0
        self._lost = 0          # records still queued when close() gave up on a failing disk
        self._last_sync = time.monotonic()
        self.session = -1
        self.session_uuid = uuid.uuid4().hex
        self._seed = session_seed(self.session_uuid)
        self._wall0 = self._mono0 = 0    # session start on both clocks, for exports

    # ---- the control loop's side -------------------------------------------------------
    def append(self, **fields: Any) -> bool:
        """Queue one transition; never blocks and never raises. False when it was dropped (queue
        full, closed). This writer's thread checks the names and shapes against the layout and
        encodes the record; a malformed transition is dropped and counted there (stats: malformed,
        last_error), so a logging bug costs records, never the control loop. The arrays are kept,
        not copied: the caller must not write into them afterwards (the Controller's are new
        every tick; backend samples are snapshots)."""
        if self._closing or len(self._queue) >= self.queue_size:
            self._dropped += 1
            return False
        now = time.monotonic_ns()
        fields["dropped"] = self._dropped
        fields.setdefault("time_ns", now)
        self._queue.append((now, fields))
        self._enqueued += 1
        return True

    def stats(self) -> WriterStats:
        oldest = None
        for waiting in (self._pending, self._queue):   # the writer thread may empty either
            try:
                oldest = waiting[0][0]
                break
            except IndexError:
                continue
        lag = 0.0 if oldest is None else max(0.0, (time.monotonic_ns() - oldest) / 1e9)
        return WriterStats(self.session, self._enqueued,
                           self._dropped + self._lost + self._malformed, self._malformed,
                           self._written, self._synced,
                           len(self._queue) + len(self._pending), lag, self._bytes, self._sealed,
                           self._retired, self._io_errors, self._last_error,
                           self._thread is not None and self._thread.is_alive())

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> "ReplayWriter":
        """Lock the directory, seal what a crashed writer left, pick the session number, start the
        thread. Raises ReplayError if another live writer owns the directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.directory)
        try:
            recover_directory(self.directory)
            self.session = next_session(self.directory)
            self._manifest = new_manifest(self.session, self.session_uuid)
            try:
                self._publish_session()
            except OSError as exc:      # a full disk: the thread retries before the first segment
                log.error("replay session %d: cannot write its manifest yet (%s)", self.session,
                          exc)
            self._wall0, self._mono0 = time.time_ns(), time.monotonic_ns()
            if self.disk_budget_bytes is not None:
                self._enforce_budget()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        self._thread = threading.Thread(target=self._run, name=f"replay-writer-{self.session}",
                                        daemon=True)
        self._thread.start()
        log.info("replay session %d (%s) logging to %s", self.session, self.session_uuid,
                 self.directory)
        return self

    def close(self, timeout: float = 10.0) -> WriterStats:
        """Write what is queued (giving up after `timeout` on a failing disk), seal, unlock."""
        self._closing = True
        self._close_timeout = timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
            if self._thread.is_alive():
                log.error("replay session %d: the writer thread is stuck in a system call; the "
                          "directory stays locked until it returns or the process exits",
                          self.session)
            else:
                self._thread = None
        if self._lock_fd is not None and self._thread is None:
            os.close(self._lock_fd)
            self._lock_fd = None
        stats = self.stats()
        log.info("replay session %d closed: %d written, %d dropped, %d I/O errors",
                 self.session, stats.written, stats.dropped, stats.io_errors)
        return stats

    def __enter__(self) -> "ReplayWriter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the writer thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:   # a bug: say so loudly; the loop keeps running, drops count up
            self._last_error = f"writer thread died: {exc!r}"
            log.exception("replay writer thread died; transitions will be dropped from now on")

    def _loop(self) -> None:
        give_up_at = None
        while True:
            if not self._pending:
                self._pending = self._take()
            if self._pending and time.monotonic() >= self._retry_at:
                try:
                    self._write(self._pending)
                except OSError as exc:
                    self._io_failed(exc)
            if self._stop.is_set():
                give_up_at = give_up_at or time.monotonic() + self._close_timeout
                if not self._pending and not self._queue:
                    break
                if time.monotonic() > give_up_at:
                    self._lost = len(self._pending) + len(self._queue)
                    log.error("replay session %d: %d records could not be written before close "
                              "(%s)", self.session, self._lost, self._last_error)
                    break
                wait = self._retry_at - time.monotonic()
                if self._pending and wait > 0:
                    time.sleep(min(self.poll_s, wait))
                continue
            try:
                self._maybe_sync(force=False)
            except OSError as exc:
                self._io_failed(exc)
            if self._pending or not self._queue:
                self._stop.wait(self.poll_s)
        self._finish()

    def _take(self) -> list[tuple[int, bytes]]:
        q, layout = self._queue, self.layout
        out = []
        for _ in range(min(len(q), self.max_batch)):
            t, fields = q.popleft()
            try:
                layout.check(fields)
                fields["dropped"] += self._malformed
                self._enrich(fields)
                payload = layout.encode_checked(fields)
                layout.check_finite(payload)
            except ValueError as exc:
                self._malformed += 1
                self._last_error = f"malformed transition dropped: {exc}"
                if self._malformed == 1:
                    log.error("replay session %d: %s", self.session, self._last_error)
                continue
            out.append((t, payload))
        return out

    def _enrich(self, fields: dict[str, Any]) -> None:
        """The enrich hook; whatever it raises drops this transition as malformed (ValueError)."""
        if self.enrich is None:
            return
        try:
            self.enrich(fields)
        except Exception as exc:   # a hook's bug costs one record, never the writer thread
            raise ValueError(f"enrich hook raised {exc!r}") from exc

    def _write(self, batch: list[tuple[int, bytes]]) -> None:
        """Write a batch, rotating segments so none grows past segment_bytes. On OSError the
        records not yet written stay in `batch` for the retry."""
        while batch:
            if self._fd is not None and self._seg_records and \
                    self._seg_size + self.frame_size > self.segment_bytes:
                self._seal()
            if self._fd is None:
                self._open_segment()
            room = max(1, (self.segment_bytes - self._seg_size) // self.frame_size)
            part = batch[:room]
            data = encode_frames([p for _, p in part], self._seq, self._seed)
            self._write_all(data)
            n = len(part)
            self._seq += n
            self._seg_records += n
            self._written += n
            self._bytes += len(data)
            del batch[:n]
        if self._degraded:
            self._degraded = False
            log.warning("replay session %d: writing again after %d I/O errors", self.session,
                        self._io_errors)

    def _write_all(self, data: bytes | memoryview) -> None:
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError:
            self._cut_back()
            raise
        self._seg_size += len(data)

    def _cut_back(self) -> None:
        """Remove a partly written batch so that the file ends on a frame boundary."""
        try:
            os.ftruncate(self._fd, self._seg_size)
        except OSError as exc:
            # the segment keeps a torn tail; leave it open for the next session's recovery to cut,
            # and continue in a fresh segment
            log.error("replay: cannot cut a torn write off %s (%s); continuing in a new segment",
                      self._seg.path if self._seg else "?", exc)
            os.close(self._fd)
            self._fd, self._seg = None, None
            self._index += 1

    def _io_failed(self, exc: OSError) -> None:
        self._io_errors += 1
        self._degraded = True
        where = self._seg.path if self._seg else self.directory
        self._last_error = f"{where}: {exc}"
        self._retry_at = time.monotonic() + self.retry_s
        if self._io_errors == 1 or self._io_errors % 100 == 0:
            log.error("replay session %d: write failed (%s); %d records waiting, retrying every "
                      "%.1f s, the loop's transitions are dropped while the queue is full "
                      "(I/O errors so far: %d)", self.session, self._last_error,
                      len(self._pending) + len(self._queue), self.retry_s, self._io_errors)

    def _maybe_sync(self, force: bool) -> None:
        if self._fd is None or self._synced == self._written:
            return
        period = self.fsync_period_s
        if force or (period is not None and time.monotonic() - self._last_sync >= period):
            os.fdatasync(self._fd)
            self._synced = self._written
            self._last_sync = time.monotonic()

    def _publish_session(self) -> None:
        """Write this session's manifest, then raise the high-water mark past it (in that order:
        see next_session). Done once, before the session's first segment."""
        write_manifest(self.directory, self._manifest)
        mark = _high_water(self.directory)
        write_high_water(self.directory, self.session + 1, mark["manifests_from"] if mark
                         else min(list_manifests(self.directory)))
        self._published = True

    def _open_segment(self) -> None:
        """Create the next segment: header into a temporary name, fsync, rename, fsync the
        directory, so a `.open` file always starts with a complete header."""
        if not self._published:
            self._publish_session()
        seg = SegmentFile(segment_path(self.directory, self.session, self._index, OPEN),
                          self.session, self._index, OPEN)
        tmp = segment_path(self.directory, self.session, self._index, TMP)
        header = encode_header(make_header(
            self.layout, session=self.session, session_uuid=self.session_uuid, index=self._index,
            first_seq=self._seq, session_wall_ns=self._wall0, session_mono_ns=self._mono0,
            extra=self.header_extra))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            view, done = memoryview(header), 0
            while done < len(header):
                done += os.write(fd, view[done:])
            os.fdatasync(fd)
            os.rename(tmp, seg.path)
            fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        self._fd, self._seg, self._seg_size, self._seg_records = fd, seg, len(header), 0
        self._seg_first = self._seq

    def _seal(self) -> None:
        """fdatasync, list the segment in the session manifest, rename to sealed, fsync the
        directory, close; then apply the disk budget. Safe to call again after any step failed.
        The manifest is written before the rename, so a sealed segment is always listed (one that a
        crash left `.open` and listed is sealed with the same records by the next writer)."""
        if self._seg.state == OPEN:
            self._maybe_sync(force=True)
            add_sealed(self._manifest, self._index, self._seg_first,
                       self._seg_first + self._seg_records - 1, self._seg_records)
            write_manifest(self.directory, self._manifest)
            sealed = segment_path(self.directory, self.session, self._index, SEALED)
            os.rename(self._seg.path, sealed)
            self._seg = SegmentFile(sealed, self.session, self._index, SEALED)
        fsync_dir(self.directory)
        os.close(self._fd)
        self._fd, self._seg = None, None
        self._index += 1
        self._sealed += 1
        if self.disk_budget_bytes is not None:
            self._enforce_budget()

    def _finish(self) -> None:
        """At close: seal a segment that has records, delete one that has none, mark the manifest
        closed."""
        try:
            if self._fd is not None and self._seg_records:
                self._seal()
            elif self._fd is not None:
                os.close(self._fd)
                self._fd = None
                _unlink_quietly(self._seg.path)
            self._manifest["state"] = "closed"
            if self._published:
                write_manifest(self.directory, self._manifest)
            else:
                self._publish_session()
        except OSError as exc:
            self._io_failed(exc)
            log.error("replay session %d: could not seal %s (%s); the next session will",
                      self.session, self._seg.path if self._seg else "?", exc)

    def _enforce_budget(self) -> None:
        """Delete the oldest sealed segments until the directory fits the budget, and say so in the
        log and in the retired journal (which `replay verify` reads to tell retired from lost)."""
        segments = list_segments(self.directory)
        sizes = {s.path: _size(s.path) for s in segments}
        total = sum(sizes.values())
        for seg in segments:
            if total <= self.disk_budget_bytes:
                return
            if not seg.sealed:
                continue
            entry = _retired_entry(seg, sizes[seg.path], self.frame_size)
            append_retired(self.directory, entry)
            seg.path.unlink()
            fsync_dir(self.directory)
            total -= sizes[seg.path]
            self._retired += 1
            log.warning("replay disk budget %d bytes: retired %s (session %s, seq %s..%s, %d bytes)",
                        self.disk_budget_bytes, seg.path.name, entry["session"],
                        entry["first_seq"], entry["last_seq"], entry["bytes"])
        if total > self.disk_budget_bytes:
            log.warning("replay disk budget %d bytes exceeded (%d bytes) with no sealed segment "
                        "left to retire", self.disk_budget_bytes, total)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _retired_entry(seg: SegmentFile, size: int, step: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": seg.path.name, "session": seg.session, "segment": seg.index,
                             "bytes": size, "retired_wall_ns": time.time_ns(),
                             "reason": "disk budget", "first_seq": None, "last_seq": None}
    try:
        head = read_header_file(seg.path)
        records = (size - head.size) // step
        entry.update(first_seq=head.first_seq, last_seq=head.first_seq + records - 1)
    except (OSError, ReplayError) as exc:
        entry["error"] = str(exc)
    return entry


def _lock(directory: Path) -> int:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ReplayError(directory, None, f"another replay writer (pid {holder}) is logging here; "
                          f"one writer per directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def next_session(directory: Path) -> int:
    """One above every session the directory has seen: its segments, retired ones, manifests and
    the high-water mark. Numbers are never reused, even after the newest session's files were
    deleted: a learner stores its cursor as (session, seq) and skips everything at or below it, so
    a reused number would hide the new session's first records from it. The writer writes a
    session's manifest before the mark, so a crash between the two cannot lose the number either."""
    seen = [s.session for s in list_segments(directory)] + list_manifests(directory)
    seen += [int(e["session"]) for e in read_retired(directory) if isinstance(e.get("session"), int)]
    mark = _high_water(directory)
    return max(max(seen, default=-1) + 1, mark["next_session"] if mark else 0)


def _high_water(directory: Path) -> dict[str, int] | None:
    """The high-water mark; a damaged one is logged and rebuilt from what the directory holds."""
    try:
        return read_high_water(directory)
    except ReplayError as exc:
        log.error("replay: %s; continuing from the session numbers on disk", exc)
        return None


def recover_directory(directory: Path) -> None:
    """Seal what a crashed writer left open (the caller holds the directory lock).

    `.open.tmp` files never received a record and are removed. An `.open` segment has its torn
    tail cut off (only bytes after the last valid frame: what a crash interrupted) and is renamed
    sealed, and listed in its session's manifest, which is marked "recovered"; one with no valid
    frame is removed. Damage in the middle is left for the reader to skip and `replay verify` to
    report."""
    for seg in list_segments(directory):
        if seg.state == TMP:
            _unlink_quietly(seg.path)
            log.info("replay recovery: removed %s (a crash interrupted its creation)", seg.path.name)
        elif seg.state == OPEN:
            _recover_segment(directory, seg)
    for session in list_manifests(directory):
        manifest = _manifest(directory, session)
        if manifest is not None and manifest["state"] == "open":
            manifest["state"] = "recovered"
            write_manifest(directory, manifest)
    fsync_dir(directory)


def _manifest(directory: Path, session: int) -> dict[str, Any] | None:
    """A session's manifest for recovery to update; a damaged one is left for verify to report."""
    try:
        return read_manifest(directory, session)
    except ReplayError as exc:
        log.error("replay recovery: %s; left as it is", exc)
        return None


def _recover_segment(directory: Path, seg: SegmentFile) -> None:
    data = seg.path.read_bytes()
    try:
        head = read_header(seg.path, data, seg)
    except ReplayError as exc:
        log.error("replay recovery: leaving %s as it is: %s", seg.path.name, exc)
        return
    scan = scan_frames(seg.path, data, head.size, head.layout, head.seed, head.first_seq - 1)
    for p in scan.problems:
        log.error("replay recovery: %s", p)
    if not scan.runs:
        if scan.tail >= frame_size(head.layout):
            log.error("replay recovery: leaving %s as it is: %d bytes and not one valid record",
                      seg.path.name, scan.tail)
        else:
            seg.path.unlink()
            log.info("replay recovery: removed %s (crashed before its first record was complete; "
                     "%d torn bytes)", seg.path.name, scan.tail)
        return
    if scan.tail:
        with open(seg.path, "r+b") as f:
            f.truncate(scan.end)
            os.fdatasync(f.fileno())
        log.warning("replay recovery: %s: cut %d bytes of a torn write after the last valid record "
                    "(seq %d)", seg.path.name, scan.tail, scan.last_seq)
    manifest = _manifest(directory, seg.session)
    if manifest is not None:
        add_sealed(manifest, seg.index, scan.runs[0][2], scan.last_seq,
                   sum(count for _, count, _ in scan.runs))
        write_manifest(directory, manifest)
    sealed = segment_path(directory, seg.session, seg.index, SEALED)
    os.rename(seg.path, sealed)
    log.info("replay recovery: sealed %s after a crash (last seq %d)", sealed.name, scan.last_seq)
