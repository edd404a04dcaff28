"""Onboard replay: a crash-safe, append-only log of the robot's transitions for fine-tuning.

    layout = TransitionLayout.from_spec(spec, pipeline.layout)
    with ReplayWriter("runs/replay", layout) as log:      # on the robot, beside the control loop
        log.append(obs=..., action=..., next_obs=..., ...)  # once per tick, never blocks
    ReplayReader("runs/replay").load(after=cursor)         # in the learner: numpy arrays

record.py is the record layout, segment.py the file format, writer.py the writer thread,
reader.py the reader, export.py the MCAP export, cli.py `sac2real replay ...`, crashtest.py the
SIGKILL harness shared by CI and bench/replay.py."""
from deploy.replay.reader import Chunk, Cursor, Record, ReplayArrays, ReplayReader
from deploy.replay.record import TransitionLayout
from deploy.replay.segment import Problem, ReplayError
from deploy.replay.writer import ReplayWriter, WriterStats

__all__ = ["Chunk", "Cursor", "Problem", "Record", "ReplayArrays", "ReplayError", "ReplayReader",
           "ReplayWriter", "TransitionLayout", "WriterStats"]
