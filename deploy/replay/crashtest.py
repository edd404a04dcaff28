"""Kill-test harness: SIGKILL a real writer process at random moments and check what survives.

Shared by CI (tests/test_replay_crash.py, a few dozen trials) and bench/replay.py (hundreds; with
`--dir` it runs on the robot's own storage, which is what ultimately has to survive).

Each trial forks a child that starts a ReplayWriter in the same directory (so it first recovers the
previous trial's crash) and appends synthetic transitions in bursts, publishing how many records
its writer had handed to the kernel; the parent kills it after a random delay and reads the
child's session back. In a third of the trials the child queues a backlog of thousands of records
before starting the writer, so that the kill tends to land inside a large write (the kernel stops
a write to a regular file at a page boundary on SIGKILL, which leaves a torn frame). A trial
passes when the reader finds no corrupt record and every record the child reported written is
there, in sequence, with the values written. Fork is used because a child that re-imports numpy
would spend most of a trial starting up; call this only while the calling process runs no other
Python threads."""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from deploy.replay.reader import Cursor, ReplayReader
from deploy.replay.record import TransitionLayout
from deploy.replay.segment import FRAME_OVERHEAD, OPEN, TMP, list_segments, read_header_file
from deploy.replay.writer import ReplayWriter


def synthetic_transition(layout: TransitionLayout, i: int) -> dict[str, Any]:
    """A transition whose every float encodes `i`, so a reader can check content, not just CRCs."""
    values: dict[str, Any] = {}
    for f in layout.fields:
        if f.name in ("time_ns", "dropped"):
            continue
        if f.name == "policy_id":
            values[f.name] = f"policy-{i % 7}"
        elif np.dtype(f.dtype).kind == "b":
            values[f.name] = (i % 50 == 49) if f.name == "truncated" else False
        else:
            values[f.name] = np.full(f.shape, i, np.float32)
    return values


def _child(directory: str, layout: TransitionLayout, written: Any, started: Any,
           options: dict[str, Any], backlog: int, seed: int) -> None:
    rng = random.Random(seed)
    writer = ReplayWriter(directory, layout, queue_size=max(4096, backlog), **options)
    for i in range(backlog):
        writer.append(**synthetic_transition(layout, i))
    writer.start()
    started.set()
    deadline = time.monotonic() + 10.0
    i = backlog
    while backlog and writer.stats().queue_depth and time.monotonic() < deadline:
        written.value = writer.stats().written
        time.sleep(0.0002)
    while time.monotonic() < deadline:
        for _ in range(rng.randint(1, 40)):
            writer.append(**synthetic_transition(layout, i))
            i += 1
        written.value = writer.stats().written
        time.sleep(rng.uniform(0.0, 0.004))
    os._exit(0)


def kill_trials(directory: str | Path, layout: TransitionLayout, trials: int, seed: int = 0,
                max_delay_s: float = 0.08) -> dict[str, Any]:
    """Run `trials` kill trials in `directory`; returns counts (and the failures, if any)."""
    ctx = mp.get_context("fork")
    rng = random.Random(seed)
    directory = Path(directory)
    counts = {"trials": trials, "passed": 0, "records_reported_written": 0, "records_found": 0,
              "records_beyond_reported": 0, "corrupt": 0, "torn_tails": 0, "failures": []}
    for trial in range(trials):
        options = {"segment_bytes": rng.choice([4096, 16384, 1 << 20]),
                   "fsync_period_s": rng.choice([0.0, 0.01, 1.0, None]),
                   "poll_s": rng.choice([0.0005, 0.005]),
                   "disk_budget_bytes": rng.choice([None, 1 << 20])}
        backlog = rng.choice([0, 0, rng.randint(1000, 4000)])
        if backlog:
            options["segment_bytes"] = 4 << 20
        if options["disk_budget_bytes"] is not None:
            options["disk_budget_bytes"] = max(options["disk_budget_bytes"],
                                               2 * options["segment_bytes"])
        written, started = ctx.Value("q", 0, lock=False), ctx.Event()
        child = ctx.Process(target=_child, args=(str(directory), layout, written, started, options,
                                                 backlog, rng.randrange(1 << 30)))
        child.start()
        if backlog:
            while not started.wait(0.005) and child.is_alive():
                pass
            time.sleep(rng.uniform(0.0, 0.02))
        else:
            time.sleep(rng.uniform(0.0, max_delay_s))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        reported = written.value
        result = check_last_session(directory, reported)
        if child.exitcode != -signal.SIGKILL:
            result.update(ok=False, exitcode=child.exitcode)
        counts["records_reported_written"] += reported
        counts["records_found"] += result["found"]
        counts["records_beyond_reported"] += max(0, result["found"] - reported)
        counts["corrupt"] += len(result["corrupt"])
        counts["torn_tails"] += result["torn_tails"]
        if result["ok"]:
            counts["passed"] += 1
        else:
            counts["failures"].append({"trial": trial, "options": options, **result})
    return counts


def check_last_session(directory: Path, reported_written: int) -> dict[str, Any]:
    """Read the newest session: no corruption, seqs contiguous from its first record, values
    matching their seq, and at least `reported_written` records (all but retired ones)."""
    segments = list_segments(directory)
    if not segments:
        return {"ok": reported_written == 0, "found": 0, "corrupt": [], "torn_tails": 0}
    session = segments[-1].session
    reader = ReplayReader(directory, log_problems=False)
    seqs, values = [], []
    for chunk in reader.chunks(after=Cursor(session, -1)):
        seqs.append(chunk.seq)
        values.append(chunk.records["obs"][:, 0])
    seq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    val = np.concatenate(values) if values else np.zeros(0, np.float32)
    corrupt = [str(p) for p in reader.problems if p.corrupt]
    contiguous = bool(np.all(np.diff(seq) == 1)) if len(seq) else True
    content = bool(np.array_equal(val, seq.astype(np.float32)))
    last = int(seq[-1]) if len(seq) else -1
    ok = not corrupt and contiguous and content and last + 1 >= reported_written
    return {"ok": ok, "found": len(seq), "last_seq": last, "corrupt": corrupt,
            "contiguous": contiguous, "content_ok": content, "torn_tails": _torn(directory)}


def _torn(directory: Path) -> int:
    """1 if the newest segment is unsealed and ends inside a frame (a write the kill tore)."""
    segments = [s for s in list_segments(directory) if s.state != TMP]
    if not segments or segments[-1].state != OPEN:
        return 0
    head = read_header_file(segments[-1].path)
    body = segments[-1].path.stat().st_size - head.size
    return int(body % (head.layout.record_size + FRAME_OVERHEAD) != 0)


def disk_full_loop(directory: str, layout: TransitionLayout, limit_bytes: int, ticks: int,
                   lifted_at: int, conn, period: float = 0.02) -> None:
    """A child's 50 Hz loop appending one transition per tick while the file size limit is
    `limit_bytes` (a full disk: EFBIG on write), lifted after tick `lifted_at`. Sends the writer's
    stats during the outage and after close, with the loop's worst append and missed deadlines
    (tests assert the former, bench/replay.py reports the latter). Run it in a forked child."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # EFBIG instead of death past the limit
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    writer = ReplayWriter(directory, layout, queue_size=16, retry_s=0.1, fsync_period_s=0.0,
                          poll_s=0.005).start()
    try:    # as a control loop would: real-time priority for this thread, not the writer's
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except OSError:
        pass
    worst_append, misses, during = 0.0, 0, None
    t0 = time.monotonic()
    for tick in range(ticks):
        deadline = t0 + tick * period
        time.sleep(max(0.0, deadline - time.monotonic()))
        t = time.perf_counter()
        writer.append(**synthetic_transition(layout, tick))
        worst_append = max(worst_append, time.perf_counter() - t)
        misses += time.monotonic() > deadline + period      # this tick's work ran into the next
        if tick == lifted_at:
            during = writer.stats()
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    conn.send({"during": during, "final": writer.close(timeout=2.0), "ticks": ticks,
               "worst_append_s": worst_append, "misses": misses})
    conn.close()
