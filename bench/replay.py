"""Onboard replay benchmark: prints ONE JSON object.

- storage throughput: the writer thread draining a queue of transitions into segments (framing,
  CRC, write, periodic fdatasync, rotation, sealing) against a raw sequential write + fsync of the
  very same bytes, measured in the same run, interleaved, median of `--reps`;
- end to end: a producer calling append() as fast as it can while the writer runs (the encode on
  the caller's thread included), against the same raw write;
- reader throughput: ReplayReader.load() over what was written;
- a 50 Hz loop appending one transition per tick while the writer fsyncs after every write and
  rotates small segments, and another process keeps the disk busy with large fsynced writes:
  the worst append() time and missed deadlines, next to the same loop without a writer;
- a 50 Hz loop appending while the disk is full (the file size limit of a child process), lifted
  after 60 % of the ticks: the worst append() time, missed deadlines, and how many records were
  still dropped after the disk had room again (the writer retries every 0.1 s);
- SIGKILL trials (deploy.replay.crashtest) with their counts.

    python3 bench/replay.py [--records 150000] [--reps 3] [--kill-trials 200] [--loop-s 10]
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploy.observations import ObservationPipeline  # noqa: E402
from deploy.replay import ReplayReader, ReplayWriter, TransitionLayout  # noqa: E402
from deploy.replay.crashtest import disk_full_loop, kill_trials, synthetic_transition  # noqa: E402
from deploy.replay.segment import list_segments  # noqa: E402
from deploy.spec import RobotSpec  # noqa: E402


def progress(msg: str) -> None:
    print(f"[bench/replay] {msg}", file=sys.stderr, flush=True)


def segment_bytes_of(directory: Path) -> bytes:
    return b"".join(s.path.read_bytes() for s in list_segments(directory))


def raw_write(path: Path, data: bytes, chunk: int = 1 << 20) -> float:
    """Seconds to write `data` sequentially and fsync it: the floor for any logger."""
    view = memoryview(data)
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for i in range(0, len(data), chunk):
        os.write(fd, view[i:i + chunk])
    os.fsync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - t
    path.unlink()
    return elapsed


def writer_drain(directory: Path, layout: TransitionLayout, n: int) -> tuple[float, float]:
    """(seconds for the writer to drain n queued transitions to sealed segments, encode s/append)."""
    writer = ReplayWriter(directory, layout, queue_size=n)
    transition = synthetic_transition(layout, 1)
    t = time.perf_counter()
    for _ in range(n):
        writer.append(**transition)
    encode = (time.perf_counter() - t) / n
    t = time.perf_counter()
    writer.start()
    stats = writer.close(timeout=60)
    elapsed = time.perf_counter() - t
    assert stats.written == n, stats
    return elapsed, encode


def end_to_end(directory: Path, layout: TransitionLayout, n: int) -> tuple[float, int]:
    """(seconds from the first append to the sealed last segment, drops) with the writer running."""
    writer = ReplayWriter(directory, layout, queue_size=1 << 16).start()
    transition = synthetic_transition(layout, 1)
    t = time.perf_counter()
    for _ in range(n):
        writer.append(**transition)
    stats = writer.close(timeout=60)
    return time.perf_counter() - t, stats.dropped


def throughput(root: Path, layout: TransitionLayout, n: int, reps: int) -> dict:
    drains, raws, e2es, encodes, drops = [], [], [], [], 0
    reader_rates, reader_bytes = [], 0
    for rep in range(reps):
        progress(f"throughput rep {rep + 1}/{reps}: {n} transitions")
        d = root / f"drain{rep}"
        seconds, encode = writer_drain(d, layout, n)
        drains.append(seconds)
        encodes.append(encode)
        data = segment_bytes_of(d)
        raws.append(raw_write(root / "raw.bin", data))
        t = time.perf_counter()
        loaded = ReplayReader(d).load()
        reader_rates.append(len(loaded) / (time.perf_counter() - t))
        reader_bytes = len(data)
        assert len(loaded) == n
        shutil.rmtree(d)
        d = root / f"e2e{rep}"
        seconds, dropped = end_to_end(d, layout, n)
        e2es.append(seconds)
        drops += dropped
        shutil.rmtree(d)
    drain, raw, e2e = statistics.median(drains), statistics.median(raws), statistics.median(e2es)
    mb = reader_bytes / 1e6
    return {
        "transitions": n,
        "record_bytes": layout.record_size,
        "bytes_per_transition": round(reader_bytes / n, 1),
        "writer": {"transitions_per_s": round(n / drain), "MB_per_s": round(mb / drain, 1)},
        "raw_write": {"transitions_per_s": round(n / raw), "MB_per_s": round(mb / raw, 1)},
        "writer_vs_raw": round(raw / drain, 3),
        "end_to_end": {"transitions_per_s": round(n / e2e), "MB_per_s": round(mb / e2e, 1),
                       "vs_raw": round(raw / e2e, 3), "dropped": drops,
                       "encode_us_per_append": round(statistics.median(encodes) * 1e6, 2)},
        "reader": {"transitions_per_s": round(statistics.median(reader_rates)),
                   "MB_per_s": round(statistics.median(reader_rates) * reader_bytes / n / 1e6, 1)},
    }


def _disk_hog(directory: str, stop, worst) -> None:
    """Keep the disk busy: 16 MiB writes, each fsynced, into a file rewritten in place."""
    block = os.urandom(16 << 20)
    fd = os.open(os.path.join(directory, "hog.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    while not stop.is_set():
        os.lseek(fd, 0, os.SEEK_SET)
        for _ in range(4):
            os.write(fd, block)
            t = time.perf_counter()
            os.fsync(fd)
            worst.value = max(worst.value, time.perf_counter() - t)
    os.close(fd)


def loop_50hz(directory: Path, layout: TransitionLayout, seconds: float, with_writer: bool) -> dict:
    period = 0.02
    ticks = int(seconds / period)
    writer = None
    if with_writer:
        writer = ReplayWriter(directory, layout, fsync_period_s=0.0, segment_bytes=64 * 1024,
                              disk_budget_bytes=4 << 20).start()
    ctx = mp.get_context("fork")
    stop, worst_fsync = ctx.Event(), ctx.Value("d", 0.0)
    hog = ctx.Process(target=_disk_hog, args=(str(directory), stop, worst_fsync))
    hog.start()
    realtime = True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (AttributeError, OSError):
        realtime = False
    appends, late, misses = [], [], 0
    t0 = time.monotonic()
    for tick in range(ticks):
        deadline = t0 + tick * period
        time.sleep(max(0.0, deadline - time.monotonic()))
        late.append(time.monotonic() - deadline)
        transition = synthetic_transition(layout, tick)    # stands in for the controller's work
        if writer is not None:
            t = time.perf_counter()
            writer.append(**transition)
            appends.append(time.perf_counter() - t)
        misses += time.monotonic() > deadline + period
    if realtime:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    stop.set()
    hog.join()
    out = {"ticks": ticks, "realtime_priority": realtime, "missed_deadlines": misses,
           "worst_tick_late_ms": round(max(late) * 1e3, 3),
           "hog_worst_fsync_ms": round(worst_fsync.value * 1e3, 1)}
    if writer is not None:
        stats = writer.close()
        appends.sort()
        out.update(worst_enqueue_us=round(appends[-1] * 1e6, 1),
                   p99_enqueue_us=round(appends[int(0.99 * len(appends))] * 1e6, 1),
                   median_enqueue_us=round(appends[len(appends) // 2] * 1e6, 1),
                   worst_enqueue_vs_period=round(appends[-1] / period, 5),
                   written=stats.written, dropped=stats.dropped,
                   segments_sealed=stats.segments_sealed, segments_retired=stats.segments_retired)
    return out


def loop_50hz_full_disk(directory: Path, layout: TransitionLayout, seconds: float) -> dict:
    ticks = max(150, int(seconds / 0.02))   # the 24 KiB limit fills within the first ~60 ticks
    lifted_at = int(0.6 * ticks)
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=disk_full_loop, args=(str(directory), layout, 24 * 1024, ticks,
                                                       lifted_at, send))
    child.start()
    r = receive.recv()
    child.join(10)
    during, final = r["during"], r["final"]
    return {"ticks": ticks, "lifted_at_tick": lifted_at, "missed_deadlines": r["misses"],
            "worst_append_us": round(r["worst_append_s"] * 1e6, 1),
            "worst_append_vs_period": round(r["worst_append_s"] / 0.02, 5),
            "dropped_while_full": during.dropped, "dropped_after_room": final.dropped - during.dropped,
            "written": final.written, "io_errors": during.io_errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=150_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kill-trials", type=int, default=200)
    ap.add_argument("--loop-s", type=float, default=10.0)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    # the kill trials retire and recover segments by the hundred; keep the log to real errors
    logging.getLogger("deploy.replay").setLevel(logging.ERROR)
    spec = RobotSpec.load("go2", check_mjcf=False)
    layout = TransitionLayout.from_spec(spec, ObservationPipeline(spec).layout)
    root = Path(tempfile.mkdtemp(prefix="replay-bench-", dir=args.dir))
    result: dict = {"robot": spec.name, "cpu_count": os.cpu_count()}
    try:
        progress(f"{args.kill_trials} SIGKILL trials")
        t = time.perf_counter()
        kills = kill_trials(root / "kill", layout, args.kill_trials, seed=12345)
        kills["seconds"] = round(time.perf_counter() - t, 1)
        kills["failures"] = kills["failures"][:5]
        survey = ReplayReader(root / "kill", log_problems=False)
        survey.load()
        kills["corrupt_after_all_trials"] = sum(p.corrupt for p in survey.problems)
        shutil.rmtree(root / "kill")
        result.update(throughput(root, layout, args.records, args.reps))
        progress(f"50 Hz loop for {args.loop_s} s, without and with the writer, disk busy")
        (root / "loop0").mkdir()
        baseline = loop_50hz(root / "loop0", layout, args.loop_s, with_writer=False)
        (root / "loop1").mkdir()
        loaded = loop_50hz(root / "loop1", layout, args.loop_s, with_writer=True)
        result["loop_50hz"] = {"with_writer": loaded, "without_writer": baseline}
        progress(f"50 Hz loop for {args.loop_s} s with the disk full for its first 60 %")
        (root / "full").mkdir()
        result["loop_50hz_full_disk"] = loop_50hz_full_disk(root / "full", layout, args.loop_s)
        result["sigkill"] = kills
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
