"""Replay integrity beyond the per-record checksum (issue 16, "Replay"): whole records cut off a
sealed segment, a deleted segment or session, reused session numbers, and non-finite values. Each
finding is reproduced first on a real recording; `replay verify` and the reader must report it."""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from deploy.cli import main as cli_main
from deploy.observations import ObservationPipeline
from deploy.replay import Cursor, ReplayReader, ReplayWriter, TransitionLayout
from deploy.replay.crashtest import kill_trials, synthetic_transition
from deploy.replay.segment import (FRAME_OVERHEAD, HIGH_WATER, encode_header, list_manifests,
                                   list_segments, make_header, manifest_path, read_header_file,
                                   read_manifest)
from deploy.spec import RobotSpec


@pytest.fixture(scope="module")
def layout() -> TransitionLayout:
    spec = RobotSpec.load("go2", check_mjcf=False)
    return TransitionLayout.from_spec(spec, ObservationPipeline(spec).layout)


def record(directory: Path, layout: TransitionLayout, n: int, segment_records: int = 10) -> int:
    """One closed session of n records in segments of `segment_records`; its session number."""
    size = read_size(layout, segment_records)
    with ReplayWriter(directory, layout, segment_bytes=size, poll_s=0.001) as writer:
        for i in range(n):
            assert writer.append(**synthetic_transition(layout, i))
    return writer.session


def read_size(layout: TransitionLayout, records: int) -> int:
    """segment_bytes that hold a header and exactly `records` frames (half a frame of slack for
    the header's varying digits)."""
    frame = layout.record_size + FRAME_OVERHEAD
    header = encode_header(make_header(layout, session=0, session_uuid="0" * 32, index=0,
                                       first_seq=0, session_wall_ns=time.time_ns(),
                                       session_mono_ns=time.monotonic_ns(),
                                       extra={"host": socket.gethostname(), "pid": os.getpid()}))
    return len(header) + records * frame + frame // 2


def problems(directory: Path, after: Cursor = Cursor()) -> tuple[ReplayReader, set[str]]:
    reader = ReplayReader(directory, log_problems=False)
    reader.load(after)
    return reader, {p.kind for p in reader.problems if p.corrupt}


def verify(directory: Path, capsys) -> tuple[int, str]:
    code = cli_main(["replay", "verify", str(directory)])
    return code, capsys.readouterr().out


def sealed(directory: Path, session: int) -> list[Path]:
    return [s.path for s in list_segments(directory) if s.session == session and s.sealed]


# ---- what the manifest records -------------------------------------------------------------
def test_each_session_lists_its_sealed_segments_with_counts_and_sequence_numbers(tmp_path, layout):
    session = record(tmp_path, layout, 35)
    manifest = read_manifest(tmp_path, session)
    assert manifest["state"] == "closed" and manifest["session"] == session
    segments = sealed(tmp_path, session)
    assert [e["index"] for e in manifest["segments"]] == list(range(len(segments))) != []
    data = ReplayReader(tmp_path).load()
    for entry, path in zip(manifest["segments"], segments):
        first = read_header_file(path).first_seq
        body = path.stat().st_size - read_header_file(path).size
        assert entry["first_seq"] == first
        assert entry["records"] == body // (layout.record_size + FRAME_OVERHEAD)
        assert entry["last_seq"] == first + entry["records"] - 1
    assert sum(e["records"] for e in manifest["segments"]) == len(data) == 35
    assert json.loads((tmp_path / HIGH_WATER).read_text())["next_session"] == session + 1


def test_the_manifest_is_rewritten_as_segments_are_sealed_not_only_at_close(tmp_path, layout):
    writer = ReplayWriter(tmp_path, layout, segment_bytes=read_size(layout, 5), poll_s=0.001).start()
    assert read_manifest(tmp_path, writer.session) == {**read_manifest(tmp_path, writer.session),
                                                       "state": "open", "segments": []}
    for i in range(23):
        writer.append(**synthetic_transition(layout, i))
    deadline = time.monotonic() + 10.0
    while writer.stats().segments_sealed < 4 and time.monotonic() < deadline:
        time.sleep(0.002)
    listed = read_manifest(tmp_path, writer.session)["segments"]
    assert listed[:4] == [{"index": k, "first_seq": 5 * k, "last_seq": 5 * k + 4, "records": 5}
                          for k in range(4)]
    assert read_manifest(tmp_path, writer.session)["state"] == "open"
    writer.close()
    assert read_manifest(tmp_path, writer.session)["state"] == "closed"


# ---- the review's findings -----------------------------------------------------------------
def test_whole_records_cut_off_the_last_sealed_segment_fail_verify(tmp_path, layout, capsys):
    record(tmp_path, layout, 25)
    last = sealed(tmp_path, 0)[-1]
    frame = layout.record_size + FRAME_OVERHEAD
    with open(last, "r+b") as f:             # cut exactly two whole frames: no torn byte left
        f.truncate(last.stat().st_size - 2 * frame)
    reader, kinds = problems(tmp_path)
    assert kinds == {"truncated"}
    (p,) = reader.problems
    assert p.path == str(last) and "ends at seq 22" in p.message and "2 record(s) cut off" in p.message
    code, out = verify(tmp_path, capsys)
    assert code == 1 and "verify: FAILED" in out and f"CORRUPT: {last}" in out


def test_a_deleted_last_segment_fails_verify(tmp_path, layout, capsys):
    record(tmp_path, layout, 25)
    sealed(tmp_path, 0)[-1].unlink()
    reader, kinds = problems(tmp_path)
    assert kinds == {"missing_segment"}
    assert "session 0 segment 2 (seq 20..24, 5 records)" in reader.problems[0].message
    assert verify(tmp_path, capsys)[0] == 1


@pytest.mark.parametrize("which", ["newest", "middle"])
def test_a_deleted_session_fails_verify(tmp_path, layout, capsys, which):
    for _ in range(3):
        record(tmp_path, layout, 12)
    victim = 2 if which == "newest" else 1
    for path in sealed(tmp_path, victim):
        path.unlink()
    manifest_path(tmp_path, victim).unlink()
    reader, kinds = problems(tmp_path)
    assert kinds == {"missing_session"}
    assert f"session {victim} is missing" in reader.problems[0].message
    code, out = verify(tmp_path, capsys)
    assert code == 1 and f"session {victim} is missing" in out


def test_segments_kept_with_their_manifest_deleted_fail_verify(tmp_path, layout, capsys):
    record(tmp_path, layout, 12)
    record(tmp_path, layout, 12)
    manifest_path(tmp_path, 1).unlink()
    assert problems(tmp_path)[1] == {"missing_manifest"}
    assert verify(tmp_path, capsys)[0] == 1


def test_a_session_number_is_never_reused_after_the_newest_session_is_deleted(tmp_path, layout):
    record(tmp_path, layout, 10)
    newest = record(tmp_path, layout, 10)
    cursor = ReplayReader(tmp_path).load().cursor          # a learner took everything
    assert cursor == Cursor(newest, 9)
    for path in sealed(tmp_path, newest):
        path.unlink()
    manifest_path(tmp_path, newest).unlink()
    again = record(tmp_path, layout, 10)
    assert again == newest + 1
    fresh = ReplayReader(tmp_path, log_problems=False).load(after=cursor)
    assert len(fresh) == 10 and set(fresh.session) == {again}      # the cursor skips none of it


def test_a_damaged_high_water_mark_does_not_stop_logging_and_numbers_still_rise(tmp_path, layout):
    record(tmp_path, layout, 5)
    (tmp_path / HIGH_WATER).write_text("{not json")
    assert record(tmp_path, layout, 5) == 1
    assert json.loads((tmp_path / HIGH_WATER).read_text()) == {"next_session": 2,
                                                               "manifests_from": 0}
    assert problems(tmp_path)[1] == set()


def test_a_recording_without_manifests_still_reads_with_a_note(tmp_path, layout, capsys):
    record(tmp_path, layout, 15)
    record(tmp_path, layout, 15)
    for session in list_manifests(tmp_path):                 # as written before manifests
        manifest_path(tmp_path, session).unlink()
    (tmp_path / HIGH_WATER).unlink()
    reader = ReplayReader(tmp_path, log_problems=False)
    assert len(reader.load()) == 30
    assert [p.kind for p in reader.problems] == ["no_manifest", "no_manifest"]
    assert not any(p.corrupt for p in reader.problems)
    code, out = verify(tmp_path, capsys)
    assert code == 0 and "no manifest" in out and "verify: OK" in out


def test_sessions_killed_mid_segment_are_not_missing_data(tmp_path, layout, capsys):
    counts = kill_trials(tmp_path, layout, trials=12, seed=7)
    assert counts["failures"] == [], counts
    record(tmp_path, layout, 5)        # recovers the last crash
    reader, kinds = problems(tmp_path)
    assert kinds == set(), reader.problems
    states = {read_manifest(tmp_path, s)["state"] for s in list_manifests(tmp_path)}
    assert states <= {"recovered", "closed"} and "recovered" in states
    assert verify(tmp_path, capsys)[0] == 0


def test_a_copied_segment_is_refused(tmp_path, layout, capsys):
    record(tmp_path, layout, 25)
    first = sealed(tmp_path, 0)[0]
    shutil.copy(first, first.with_name("00000000-000003.seg"))
    kinds = problems(tmp_path)[1]
    assert "bad_header" in kinds and "unlisted_segment" in kinds
    assert verify(tmp_path, capsys)[0] == 1


# ---- non-finite values never enter the log -------------------------------------------------
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")   # 1e39 -> f4
@pytest.mark.parametrize("field,value", [("joint_torque", np.nan), ("imu_accel", np.inf),
                                         ("obs", -np.inf), ("action", np.nan),
                                         ("base_pos", np.inf), ("joint_vel", 1e39)])
def test_a_transition_with_a_non_finite_value_is_dropped_and_counted(tmp_path, layout, field, value):
    with ReplayWriter(tmp_path, layout, poll_s=0.001) as writer:
        for i in range(10):
            t = synthetic_transition(layout, i)
            if i == 4:
                bad = np.array(t[field], np.float64)
                bad.flat[-1] = value
                t[field] = bad
            writer.append(**t)
    stats = writer.stats()
    assert stats.malformed == 1 and stats.written == 9
    assert field in stats.last_error
    data = ReplayReader(tmp_path).load()
    assert 4 not in data.obs[:, 0]
    for name, column in data.fields.items():
        if column.dtype.kind == "f" and name not in ("reward", "base_pos", "base_quat"):
            assert np.isfinite(column).all(), name
    assert list(data.fields["dropped"]) == [0] * 4 + [1] * 5    # the hole is visible


def test_unknown_values_may_stay_nan(tmp_path, layout):
    """reward and the base pose are NaN when the robot does not know them: that is not damage."""
    with ReplayWriter(tmp_path, layout, poll_s=0.001) as writer:
        for i in range(3):
            t = synthetic_transition(layout, i)
            t.pop("base_pos", None), t.pop("base_quat", None)
            t["reward"] = np.nan
            writer.append(**t)
    assert writer.stats().malformed == 0
    data = ReplayReader(tmp_path).load()
    assert len(data) == 3 and np.isnan(data.rewards).all() and np.isnan(data.fields["base_pos"]).all()


def _start_on_a_full_disk(directory: str, layout: TransitionLayout, conn) -> None:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # EFBIG instead of death past the limit
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))   # not even a manifest fits
    try:
        writer = ReplayWriter(directory, layout, retry_s=0.05, poll_s=0.001).start()
    except Exception as exc:                                  # noqa: BLE001 - reported below
        conn.send(repr(exc))
        return
    for i in range(10):
        writer.append(**synthetic_transition(layout, i))
    time.sleep(0.2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    conn.send(writer.close(timeout=5.0))


def test_a_full_disk_at_start_defers_the_manifest_instead_of_failing_the_start(tmp_path, layout):
    import multiprocessing as mp

    receive, send = mp.Pipe(duplex=False)
    child = mp.get_context("fork").Process(target=_start_on_a_full_disk,
                                           args=(str(tmp_path), layout, send))
    child.start()
    stats = receive.recv()
    child.join(10)
    assert not isinstance(stats, str), stats            # start() did not raise
    assert stats.io_errors >= 1 and stats.written == 10
    manifest = read_manifest(tmp_path, stats.session)
    assert manifest["state"] == "closed" and manifest["segments"][0]["records"] == 10
    assert problems(tmp_path)[1] == set()
