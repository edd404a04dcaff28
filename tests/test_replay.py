"""Onboard replay: record layout, segment format, writer, reader, damage, disk full, CLI, export.
Real files and real processes throughout; the SIGKILL trials are in test_replay_crash.py."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import random
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from deploy.cli import main as cli_main
from deploy.observations import ObservationPipeline
from deploy.replay import Cursor, ReplayError, ReplayReader, ReplayWriter, TransitionLayout
from deploy.replay.crashtest import disk_full_loop, synthetic_transition
from deploy.replay.record import POLICY_ID_BYTES, SCHEMA_VERSION
from deploy.replay.segment import (FRAME_OVERHEAD, RETIRED_JOURNAL, encode_header, list_segments,
                                   read_header_file, read_manifest, session_seed, write_manifest)
from deploy.spec import RobotSpec

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def spec() -> RobotSpec:
    return RobotSpec.load("go2", check_mjcf=False)


@pytest.fixture(scope="module")
def layout(spec: RobotSpec) -> TransitionLayout:
    return TransitionLayout.from_spec(spec, ObservationPipeline(spec).layout)


def write_session(directory: Path, layout: TransitionLayout, n: int, start: int = 0,
                  **options) -> ReplayWriter:
    with ReplayWriter(directory, layout, **options) as writer:
        for i in range(start, start + n):
            assert writer.append(**synthetic_transition(layout, i))
    return writer


def only_segment(directory: Path) -> Path:
    (seg,) = list_segments(directory)
    return seg.path


def frame_offset(path: Path, layout: TransitionLayout, k: int) -> int:
    return read_header_file(path).size + k * (layout.record_size + FRAME_OVERHEAD)


# ---- the record --------------------------------------------------------------------------
def test_layout_sizes_come_from_the_spec(spec, layout):
    obs_dim = ObservationPipeline(spec).dim
    rough = TransitionLayout.from_spec(spec, ObservationPipeline(spec, height_scan=True).layout)
    shapes = {f.name: f.shape for f in layout.fields}
    assert shapes["obs"] == shapes["next_obs"] == (obs_dim,)
    assert shapes["action"] == shapes["joint_pos"] == shapes["joint_torque"] == (spec.num_joints,)
    assert shapes["imu_quat"] == (4,) and shapes["imu_gyro"] == shapes["imu_accel"] == (3,)
    assert rough.record_size - layout.record_size == 2 * 4 * spec.height_scan.num_rays
    assert rough.hash != layout.hash
    assert layout.spec_hash == spec.hash
    again = TransitionLayout.from_header(json.loads(json.dumps(layout.to_header())))
    assert again.dtype == layout.dtype and again.hash == layout.hash


def test_encode_refuses_bad_transitions(layout):
    good = synthetic_transition(layout, 3)
    rec = np.frombuffer(layout.encode(good), layout.dtype)[0]
    assert np.isnan(np.frombuffer(layout.encode({k: v for k, v in good.items() if k != "reward"}),
                                  layout.dtype)[0]["reward"])
    assert rec["obs"][0] == 3 and rec["policy_id"] == b"policy-3" and rec["time_ns"] > 0
    with pytest.raises(ValueError, match="'action' has shape \\(11,\\), expected \\(12,\\)"):
        layout.encode({**good, "action": np.zeros(11)})
    with pytest.raises(ValueError, match="no field 'actions'"):
        layout.encode({**good, "actions": np.zeros(12)})
    with pytest.raises(ValueError, match="missing required fields: joint_vel"):
        layout.encode({k: v for k, v in good.items() if k != "joint_vel"})
    with pytest.raises(ValueError, match="longer than"):
        layout.encode({**good, "policy_id": "x" * (POLICY_ID_BYTES + 1)})


# ---- writer and reader -------------------------------------------------------------------
def test_round_trip_with_rotation_and_arrays(tmp_path, layout, spec):
    frame = layout.record_size + FRAME_OVERHEAD
    write_session(tmp_path, layout, 200, segment_bytes=20 * frame + 4096)
    segments = list_segments(tmp_path)
    assert len(segments) > 5 and all(s.sealed for s in segments)
    assert all(s.path.stat().st_size <= 20 * frame + 4096 for s in segments)
    head = read_header_file(segments[1].path).data
    assert head["spec_hash"] == spec.hash and head["session"] == 0 and head["segment"] == 1
    assert head["obs_hash"] == ObservationPipeline(spec).layout.hash
    assert head["schema_version"] == SCHEMA_VERSION and len(head["session_uuid"]) == 32
    data = ReplayReader(tmp_path).load()
    assert len(data) == 200 and data.cursor == Cursor(0, 199)
    assert np.array_equal(data.seq, np.arange(200))
    assert np.array_equal(data.obs[:, 5], np.arange(200, dtype=np.float32))
    assert data.obs.dtype == np.float32 and data.obs.shape == (200, ObservationPipeline(spec).dim)
    assert data.actions.shape == (200, spec.num_joints) and data.rewards.shape == (200,)
    assert np.array_equal(data.timeouts, np.arange(200) % 50 == 49)
    assert not data.terminated.any() and np.array_equal(data.dones, data.truncated)
    assert data.contiguous[1:].all() and np.all(np.diff(data.fields["time_ns"]) > 0)
    assert data.fields["joint_torque"].shape == (200, spec.num_joints)


def test_reader_tails_the_open_segment(tmp_path, layout):
    with ReplayWriter(tmp_path, layout, fsync_period_s=None, poll_s=0.001) as writer:
        for i in range(10):
            writer.append(**synthetic_transition(layout, i))
        while writer.stats().written < 10:
            time.sleep(0.001)
        assert [s.state for s in list_segments(tmp_path)] == [".open"]
        reader = ReplayReader(tmp_path)
        first = reader.load()
        assert len(first) == 10 and not reader.problems
        for i in range(10, 15):
            writer.append(**synthetic_transition(layout, i))
        while writer.stats().written < 15:
            time.sleep(0.001)
        assert list(reader.load(after=first.cursor).seq) == [10, 11, 12, 13, 14]


def test_sessions_append_and_cursor_skips_what_was_read(tmp_path, layout):
    write_session(tmp_path, layout, 30, segment_bytes=8192)
    write_session(tmp_path, layout, 20, start=1000, segment_bytes=8192)
    reader = ReplayReader(tmp_path)
    data = reader.load()
    assert list(np.unique(data.session)) == [0, 1] and len(data) == 50
    assert not data.contiguous[30]          # a new session never continues the last one
    rest = reader.load(after=Cursor(0, 24))
    assert list(zip(rest.session, rest.seq))[:6] == [(0, 25), (0, 26), (0, 27), (0, 28), (0, 29),
                                                     (1, 0)]
    assert len(reader.load(after=Cursor(1, 19))) == 0
    assert len(reader.load(after=Cursor(1, 19)).obs) == 0


def test_a_malformed_transition_is_dropped_by_the_writer_not_raised_in_the_loop(tmp_path, layout):
    bad = {**synthetic_transition(layout, 1), "action": np.zeros(11, np.float32)}
    with ReplayWriter(tmp_path, layout) as writer:
        assert writer.append(**synthetic_transition(layout, 0))
        assert writer.append(**bad)                  # the loop's call returns at once
        assert writer.append(**synthetic_transition(layout, 2))
    stats = writer.stats()
    assert (stats.written, stats.malformed, stats.dropped) == (2, 1, 1)
    assert "'action' has shape (11,), expected (12,)" in stats.last_error
    data = ReplayReader(tmp_path).load()
    assert list(data.obs[:, 0]) == [0.0, 2.0]
    assert list(data.fields["dropped"]) == [0, 1]     # the hole is visible to a learner


def test_queue_full_drops_are_counted_and_recorded(tmp_path, layout):
    writer = ReplayWriter(tmp_path, layout, queue_size=10)
    accepted = [writer.append(**synthetic_transition(layout, i)) for i in range(25)]
    assert accepted == [True] * 10 + [False] * 15
    stats = writer.stats()
    assert stats.dropped == 15 and stats.queue_depth == 10 and stats.lag_s >= 0
    with writer:
        writer.append(**synthetic_transition(layout, 25))
    final = writer.stats()
    assert final.written == 11 and final.dropped == 15 and final.queue_depth == 0
    data = ReplayReader(tmp_path).load()
    assert list(data.fields["dropped"]) == [0] * 10 + [15]
    assert not data.contiguous[10] and data.contiguous[1:10].all()


def test_one_writer_per_directory(tmp_path, layout):
    with ReplayWriter(tmp_path, layout):
        with pytest.raises(ReplayError, match=f"another replay writer \\(pid {os.getpid()}\\)"):
            ReplayWriter(tmp_path, layout).start()


def test_sessions_with_another_layout_are_kept_apart(tmp_path, spec, layout):
    rough = TransitionLayout.from_spec(spec, ObservationPipeline(spec, height_scan=True).layout)
    write_session(tmp_path, layout, 5)
    write_session(tmp_path, rough, 7)
    with pytest.raises(ReplayError, match="2 record layouts"):
        ReplayReader(tmp_path).load()
    reader = ReplayReader(tmp_path, layout_hash=rough.hash)
    data = reader.load()
    assert len(data) == 7 and data.obs.shape[1] == rough.dtype["obs"].shape[0]
    assert [p.kind for p in reader.problems] == ["other_layout"]


def test_disk_budget_retires_oldest_sealed_segments_and_says_so(tmp_path, layout, caplog):
    frame = layout.record_size + FRAME_OVERHEAD
    segment = 10 * frame + 4096
    caplog.set_level(logging.WARNING, "deploy.replay")
    writer = write_session(tmp_path, layout, 300, segment_bytes=segment,
                           disk_budget_bytes=3 * segment)
    assert writer.stats().segments_retired > 0
    sizes = sum(s.path.stat().st_size for s in list_segments(tmp_path))
    assert sizes <= 3 * segment
    retired = [json.loads(line) for line in (tmp_path / RETIRED_JOURNAL).read_text().splitlines()]
    assert len(retired) == writer.stats().segments_retired and retired[0]["first_seq"] == 0
    assert any("retired 00000000-000000.seg" in r.message for r in caplog.records)
    reader = ReplayReader(tmp_path)
    data = reader.load()
    assert data.seq[-1] == 299 and np.all(np.diff(data.seq) == 1)
    assert [p.kind for p in reader.problems] == ["retired"] and not reader.problems[0].corrupt
    assert cli_main(["replay", "verify", str(tmp_path)]) == 0


# ---- damage: every bad record is skipped with an error, every other one survives -----------
def damaged_copy(tmp_path: Path, layout: TransitionLayout, n: int = 60) -> Path:
    write_session(tmp_path, layout, n)
    return only_segment(tmp_path)


def assert_only_missing(directory: Path, layout: TransitionLayout, missing: set[int],
                        n: int = 60) -> ReplayReader:
    reader = ReplayReader(directory)
    data = reader.load()
    expected = [i for i in range(n) if i not in missing]
    assert list(data.seq) == expected
    assert np.array_equal(data.obs[:, 0], np.array(expected, np.float32))
    assert any(p.corrupt for p in reader.problems)
    return reader


def test_bit_flips_are_detected_anywhere_in_a_record(tmp_path, layout, caplog):
    path = damaged_copy(tmp_path, layout)
    pristine = path.read_bytes()
    frame = layout.record_size + FRAME_OVERHEAD
    rng = random.Random(7)
    positions = [0, 3, 4, 7, 8, 15, 16, frame - 4, frame - 1] + rng.sample(range(frame), 25)
    caplog.set_level(logging.ERROR, "deploy.replay")
    for byte in positions:
        k = rng.randrange(60)
        damaged = bytearray(pristine)
        damaged[frame_offset(path, layout, k) + byte] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        caplog.clear()
        reader = assert_only_missing(tmp_path, layout, {k})
        offset = frame_offset(path, layout, k)
        assert any(path.name in r.message and f"offset {offset}" in r.message
                   for r in caplog.records), (byte, [r.message for r in caplog.records])
        assert cli_main(["replay", "verify", str(tmp_path)]) == 1, byte
        assert sum(p.kind == "corrupt" for p in reader.problems) == 1


def test_forged_payload_with_valid_length_fails_its_checksum(tmp_path, layout, caplog):
    path = damaged_copy(tmp_path, layout)
    data = bytearray(path.read_bytes())
    k = 17
    o = frame_offset(path, layout, k)
    forged = layout.encode(synthetic_transition(layout, 999))
    data[o + 16:o + 16 + len(forged)] = forged          # magic, length, seq and CRC untouched
    path.write_bytes(data)
    caplog.set_level(logging.ERROR, "deploy.replay")
    assert_only_missing(tmp_path, layout, {k})
    assert any("seq 17: checksum mismatch" in r.message and path.name in r.message
               for r in caplog.records)


def test_forged_checksum_and_replayed_frames_are_caught(tmp_path, layout):
    path = damaged_copy(tmp_path, layout)
    frame = layout.record_size + FRAME_OVERHEAD
    pristine = path.read_bytes()
    # a forger who recomputes a plain CRC-32 does not know the session seed
    data = bytearray(pristine)
    o = frame_offset(path, layout, 30)
    data[o + 16:o + 16 + layout.record_size] = layout.encode(synthetic_transition(layout, 999))
    data[o + frame - 4:o + frame] = struct.pack("<I", zlib.crc32(bytes(data[o + 4:o + frame - 4])))
    path.write_bytes(data)
    assert_only_missing(tmp_path, layout, {30})
    # a valid frame copied over the next one: its CRC checks out, its sequence number does not
    data = bytearray(pristine)
    o = frame_offset(path, layout, 40)
    data[o + frame:o + 2 * frame] = data[o:o + frame]
    path.write_bytes(data)
    reader = assert_only_missing(tmp_path, layout, {41})
    assert any("not after seq 40" in p.message for p in reader.problems)
    assert session_seed(read_header_file(path).data["session_uuid"]) != 0


def test_a_damaged_length_field_resynchronises_on_the_next_frame(tmp_path, layout):
    path = damaged_copy(tmp_path, layout)
    data = bytearray(path.read_bytes())
    o = frame_offset(path, layout, 9)
    data[o + 4:o + 8] = struct.pack("<I", 1 << 30)
    del data[o + 100:o + 300]                        # and the frame is short: alignment lost
    path.write_bytes(data)
    reader = assert_only_missing(tmp_path, layout, {9})
    assert any("skipped" in p.message for p in reader.problems)


def test_truncated_sealed_segment_keeps_everything_before_the_cut(tmp_path, layout, caplog):
    frame = layout.record_size + FRAME_OVERHEAD
    write_session(tmp_path, layout, 60, segment_bytes=30 * frame + 4096)
    first = list_segments(tmp_path)[0].path
    cut = frame_offset(first, layout, 12) + frame // 2
    with open(first, "r+b") as f:
        f.truncate(cut)
    caplog.set_level(logging.ERROR, "deploy.replay")
    reader = ReplayReader(tmp_path)
    data = reader.load()
    kept = [s for s in range(60) if s < 12 or s >= read_header_file(
        list_segments(tmp_path)[1].path).first_seq]
    assert list(data.seq) == kept
    kinds = {p.kind for p in reader.problems}
    assert kinds == {"truncated", "gap"}
    assert any("truncated" in r.message and first.name in r.message and f"offset {cut - frame // 2}"
               in r.message for r in caplog.records)
    assert cli_main(["replay", "verify", str(tmp_path)]) == 1


def test_random_damage_never_costs_an_intact_record(tmp_path, layout):
    """Fuzz: overwrite random byte ranges after the header; the reader must not fail, and every
    record whose bytes were not touched must come back exactly."""
    path = damaged_copy(tmp_path, layout)
    pristine = path.read_bytes()
    start, frame = read_header_file(path).size, layout.record_size + FRAME_OVERHEAD
    rng = random.Random(3)
    for _ in range(150):
        data = bytearray(pristine)
        touched = set()
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(start, len(data))
            length = rng.choice([1, 2, 8, rng.randint(1, 3 * frame)])
            chunk = bytes(rng.randrange(256) for _ in range(length))
            data[at:at + length] = chunk[:len(data) - at]
            touched.update(range((at - start) // frame, (min(at + length, len(data)) - 1 - start)
                                 // frame + 1))
        path.write_bytes(data)
        reader = ReplayReader(tmp_path, log_problems=False)
        loaded = reader.load()
        intact = set(range(60)) - touched
        assert intact <= set(loaded.seq.tolist())
        assert np.array_equal(loaded.obs[:, 1], loaded.seq.astype(np.float32))
        assert set(loaded.seq.tolist()) <= set(range(60))


@pytest.mark.parametrize("damage", ["garbage", "short", "bad_json", "header_crc", "wrong_name",
                                    "object_dtype", "future_format"])
def test_a_malformed_segment_is_refused_by_name_and_nothing_else_is_lost(tmp_path, layout,
                                                                        damage, capsys):
    write_session(tmp_path, layout, 10)
    write_session(tmp_path, layout, 10, start=10)
    victim = list_segments(tmp_path)[0].path
    head = victim.read_bytes()
    size = read_header_file(victim).size
    if damage == "garbage":
        victim.write_bytes(os.urandom(len(head)))
    elif damage == "short":
        victim.write_bytes(head[:size - 10])
    elif damage == "bad_json":
        body = b'{"format": 1}'
        victim.write_bytes(struct.pack("<8sII", head[:8], len(body), zlib.crc32(body)) + body)
    elif damage == "header_crc":
        victim.write_bytes(head[:20] + bytes([head[20] ^ 0x20]) + head[21:])
    elif damage in ("object_dtype", "future_format"):
        header = read_header_file(victim).data
        if damage == "object_dtype":
            header["fields"][0]["dtype"] = "O"
        else:
            header["format"] = 99
        victim.write_bytes(encode_header(header) + head[size:])
    else:
        victim.rename(victim.with_name("00000007-000000.seg"))
        victim = victim.with_name("00000007-000000.seg")
    reader = ReplayReader(tmp_path)
    data = reader.load()
    assert list(data.seq) == list(range(10)) and list(data.session) == [1] * 10
    (problem,) = [p for p in reader.problems if p.kind == "bad_header"]
    assert problem.path == str(victim)
    # a renamed segment is also missing from its session's manifest; nothing else is corrupt
    others = {p.kind for p in reader.problems if p.kind != "bad_header" and p.corrupt}
    assert others == ({"missing_segment", "missing_manifest"} if damage == "wrong_name" else set())
    assert cli_main(["replay", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"CORRUPT: {victim}" in out and "verify: FAILED" in out


def test_a_crashed_writers_torn_tail_is_not_corruption_and_gets_sealed(tmp_path, layout):
    write_session(tmp_path, layout, 20)
    seg = only_segment(tmp_path)
    crashed = seg.with_name(seg.name.replace(".seg", ".open"))
    seg.rename(crashed)
    with open(crashed, "r+b") as f:
        f.truncate(frame_offset(crashed, layout, 15) + 33)
    manifest = read_manifest(tmp_path, 0)    # as its writer left it: open, nothing sealed yet
    write_manifest(tmp_path, {**manifest, "state": "open", "segments": []})
    reader = ReplayReader(tmp_path)
    assert len(reader.load()) == 15          # nothing more was ever complete
    assert cli_main(["replay", "verify", str(tmp_path)]) == 0
    write_session(tmp_path, layout, 5)       # the next session seals it first
    assert [s.state for s in list_segments(tmp_path)] == [".seg", ".seg"]
    reader = ReplayReader(tmp_path)
    data = reader.load()
    assert list(zip(data.session, data.seq))[14:16] == [(0, 14), (1, 0)]
    assert not reader.problems
    recovered = read_manifest(tmp_path, 0)   # the recovery listed what it sealed
    assert recovered["state"] == "recovered"
    assert recovered["segments"] == [{"index": 0, "first_seq": 0, "last_seq": 14, "records": 15}]


# ---- a full disk degrades logging, not the loop ------------------------------------------
def test_full_disk_drops_what_it_must_counts_every_drop_and_recovers(tmp_path, layout):
    """A full disk (RLIMIT_FSIZE in a child process) costs records, never integrity: every
    append is either written or counted as dropped, nothing written is corrupt or out of order,
    the records' own `dropped` field shows the hole, and once there is room again every queued
    record reaches the disk. What holds under any load only: the loop's deadlines under a full
    disk are measured by bench/replay.py (loop_50hz_full_disk)."""
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=disk_full_loop, args=(str(tmp_path), layout, 24 * 1024, 150, 90, send))
    child.start()
    result = receive.recv()
    child.join(10)
    during, final = result["during"], result["final"]
    assert during.io_errors >= 1 and "File too large" in during.last_error
    assert during.dropped > 0 and during.queue_depth > 0     # the queue filled while writes failed
    assert final.enqueued + final.dropped == result["ticks"]  # every append accounted for
    assert final.written == final.enqueued                   # the writer recovered: all queued written
    assert final.queue_depth == 0
    reader = ReplayReader(tmp_path)
    data = reader.load()
    assert not reader.problems and len(data) == final.written
    assert np.all(np.diff(data.seq) == 1) and np.all(np.diff(data.obs[:, 0]) >= 1)
    assert data.fields["dropped"][-1] == final.dropped



# ---- command line, export, dependencies --------------------------------------------------
def test_cli_info_and_verify_report_sessions_gaps_and_disk_use(tmp_path, layout, capsys):
    write_session(tmp_path, layout, 40)
    write_session(tmp_path, layout, 10)
    assert cli_main(["replay", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 sessions, 50 records" in out and "on disk" in out
    assert "session 0: go2" in out and "40 records (seq 0..39, 0 missing inside)" in out
    assert cli_main(["replay", "verify", str(tmp_path)]) == 0
    assert "verify: OK" in capsys.readouterr().out
    path = list_segments(tmp_path)[0].path
    data = bytearray(path.read_bytes())
    data[frame_offset(path, layout, 5) + 200] ^= 0xFF
    path.write_bytes(data)
    assert cli_main(["replay", "info", str(tmp_path)]) == 0
    assert "(seq 0..39, 1 missing inside)" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "deploy.cli", "replay", "verify", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "checksum mismatch" in proc.stdout
    assert cli_main(["replay", "verify", str(tmp_path / "nope")]) == 2


def test_export_to_mcap(tmp_path, layout):
    mcap_reader = pytest.importorskip("mcap.reader")
    log_dir = tmp_path / "log"
    write_session(log_dir, layout, 25)
    with ReplayWriter(log_dir, layout) as writer:      # no reward, no base pose: NaN in the log
        for i in range(5):
            transition = synthetic_transition(layout, i)
            del transition["reward"], transition["base_pos"], transition["base_quat"]
            writer.append(**transition)
    out = tmp_path / "replay.mcap"
    assert cli_main(["replay", "export", "--json", str(log_dir), str(out)]) == 0
    with open(out, "rb") as f:
        reader = mcap_reader.make_reader(f)
        messages = [(c.topic, json.loads(m.data), m.log_time) for _, c, m in reader.iter_messages()]
        schema = json.loads(next(iter(reader.get_summary().schemas.values())).data)
    assert len(messages) == 30 and {t for t, _, _ in messages} == {"/sac2real/transition"}
    first = messages[0][1]
    assert first["session"] == 0 and first["seq"] == 0 and first["obs"][0] == 0.0
    assert first["reward"] == 0.0 and first["policy_id"] == "policy-0"
    last = messages[-1][1]
    assert last["session"] == 1 and last["obs"][0] == 4.0
    assert last["reward"] is None and last["base_quat"] == [None] * 4
    assert abs(messages[0][2] - time.time_ns()) < 60e9
    assert set(schema["properties"]) >= set(layout.names)


def test_deploy_replay_never_imports_torch():
    code = ("import sys, deploy.replay, deploy.replay.cli, deploy.replay.export, "
            "deploy.replay.crashtest; assert not [m for m in sys.modules if m.startswith('torch')]")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
