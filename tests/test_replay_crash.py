"""Onboard replay under real crashes and live reading: SIGKILLed writer processes, and a reader that
is stopped and restarted from its cursor while another process writes."""
from __future__ import annotations

import multiprocessing as mp
import random
import time

import numpy as np
import pytest

from deploy.cli import main as cli_main
from deploy.observations import ObservationPipeline
from deploy.replay import Cursor, ReplayReader, ReplayWriter, TransitionLayout
from deploy.replay.crashtest import kill_trials, synthetic_transition
from deploy.replay.segment import list_segments
from deploy.spec import RobotSpec


@pytest.fixture(scope="module")
def layout() -> TransitionLayout:
    spec = RobotSpec.load("go2", check_mjcf=False)
    return TransitionLayout.from_spec(spec, ObservationPipeline(spec).layout)


def test_sigkill_at_random_moments_loses_nothing_written(tmp_path, layout):
    counts = kill_trials(tmp_path, layout, trials=50, seed=2024)
    assert counts["failures"] == [] and counts["passed"] == 50, counts
    assert counts["corrupt"] == 0 and counts["records_reported_written"] > 0
    # a new session appends after the last crash, which it seals first
    with ReplayWriter(tmp_path, layout) as writer:
        for i in range(5):
            writer.append(**synthetic_transition(layout, i))
    assert all(s.sealed for s in list_segments(tmp_path))
    reader = ReplayReader(tmp_path)
    data = reader.load()
    assert data.session[-1] == writer.session and list(data.seq[-5:]) == [0, 1, 2, 3, 4]
    assert not [p for p in reader.problems if p.corrupt]
    for session in np.unique(data.session):      # every session: one unbroken run of seqs
        seq = data.seq[data.session == session]
        assert np.all(np.diff(seq) == 1)
        assert np.array_equal(data.obs[data.session == session, 0], seq.astype(np.float32))
    assert cli_main(["replay", "verify", str(tmp_path)]) == 0


def _two_sessions(directory: str, layout: TransitionLayout) -> None:
    rng = random.Random(5)
    for session_records in (900, 400):
        with ReplayWriter(directory, layout, segment_bytes=12 * 1024, poll_s=0.002,
                          fsync_period_s=0.05) as writer:
            for i in range(session_records):
                writer.append(**synthetic_transition(layout, i))
                if i % 25 == 0:
                    time.sleep(rng.uniform(0.0, 0.01))


def test_reader_restarted_from_its_cursor_sees_each_record_once(tmp_path, layout):
    child = mp.get_context("fork").Process(target=_two_sessions, args=(str(tmp_path), layout))
    child.start()
    rng = random.Random(11)
    seen: list[tuple[int, int]] = []
    cursor, restarts = Cursor(), 0
    while True:
        reader = ReplayReader(tmp_path)                # a fresh reader, as after a restart
        taken, stop_after = 0, rng.randint(1, 150)
        for record in reader.records(after=cursor, follow=True, poll_s=0.002,
                                     idle_timeout_s=0.05):
            seen.append((record.session, record.seq))
            assert record.data["obs"][0] == record.seq
            cursor = record.cursor
            taken += 1
            if taken == stop_after:
                break                                   # stopped mid-stream
        assert not reader.problems
        restarts += 1
        if taken < stop_after and not child.is_alive():
            child.join()
            if len(ReplayReader(tmp_path).load(after=cursor)) == 0:
                break
    assert child.exitcode == 0
    assert len(seen) == len(set(seen)) == 1300 and restarts > 10
    assert seen == sorted(seen)
    full = ReplayReader(tmp_path).load()
    assert seen == list(zip(full.session.tolist(), full.seq.tolist()))

