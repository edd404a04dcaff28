"""Replay logs under damage: one change per trial to a real small recording.

The recording is written once per run by the real ReplayWriter (three sessions of small segments,
the Go2 record layout). Each trial copies it and changes it in one way:

- bytes: a bit flipped, or a byte range overwritten, in a segment, a manifest or the high-water mark;
- truncation: a file cut at a random byte, or a sealed segment cut by whole records;
- records: one record of a segment duplicated, deleted or swapped with the next;
- segments: one deleted, copied under the next free name, or overwritten with another's bytes;
- sessions: one deleted (its segments and manifest), or only its manifest deleted.

Then it reads the copy with ReplayReader and `sac2real replay verify`. Outcomes: `refused` when the
reader raises ReplayError, or reports the damage as corruption with the file named and verify
fails, and every record it returns is one of the recording's, unchanged; `handled` when nothing is
reported and nothing it returns differs from the recording (the change touched nothing a learner
reads); `silently_accepted` when it returns a changed or extra record, or records are missing and
nothing said so; any other exception is `crashed`. Deleting a session
together with the high-water mark is not tried: the README says no check can see that."""
from __future__ import annotations

import contextlib
import io
import random
import shutil
import tempfile
from pathlib import Path

from bench.fuzzing.tally import Tally

KINDS = ("bit_flip", "overwrite", "truncate", "cut_records", "record_dup", "record_del",
         "record_swap", "segment_del", "segment_copy", "segment_overwrite", "session_del",
         "manifest_del")


def fuzz(n: int, seed: int) -> Tally:
    from deploy.replay.segment import FRAME_OVERHEAD

    rng = random.Random(seed)
    tally = Tally("replay")
    with tempfile.TemporaryDirectory(prefix="fuzz-replay-") as tmp:
        pristine = Path(tmp) / "pristine"
        frame = _record(pristine, seed) + FRAME_OVERHEAD
        clean = _read(pristine)[0]
        for i in range(n):
            trial = Path(tmp) / "trial"
            shutil.rmtree(trial, ignore_errors=True)
            shutil.copytree(pristine, trial)
            kind = KINDS[i % len(KINDS)]
            what = _damage(rng, trial, kind, frame)
            tally.trial(f"{kind}: {what}", lambda: _judge(trial, clean))
    return tally


def _record(directory: Path, seed: int) -> int:
    """Three closed sessions of 23-37 records in segments of about 6; the record size."""
    from deploy.observations import ObservationPipeline
    from deploy.replay import ReplayWriter, TransitionLayout
    from deploy.replay.crashtest import synthetic_transition
    from deploy.spec import RobotSpec

    spec = RobotSpec.load("go2", check_mjcf=False)
    layout = TransitionLayout.from_spec(spec, ObservationPipeline(spec).layout)
    rng = random.Random(seed)
    for _ in range(3):
        with ReplayWriter(directory, layout, segment_bytes=6 * 1024 + 6 * layout.record_size,
                          poll_s=0.001) as writer:
            for i in range(rng.randint(23, 37)):
                writer.append(**synthetic_transition(layout, i))
    return layout.record_size


def _read(directory: Path) -> tuple[dict[tuple[int, int], bytes], bool]:
    """Every record the reader returns by (session, seq), and whether it reported corruption."""
    from deploy.replay import ReplayReader

    reader = ReplayReader(directory, log_problems=False)
    out: dict[tuple[int, int], bytes] = {}
    for chunk in reader.chunks():
        size = chunk.records.dtype.itemsize
        raw = chunk.records.tobytes()
        for k, seq in enumerate(chunk.seq.tolist()):
            if (chunk.session, seq) in out:
                raise AssertionError(f"record ({chunk.session}, {seq}) returned twice")
            out[(chunk.session, seq)] = raw[k * size:(k + 1) * size]
    return out, any(p.corrupt for p in reader.problems) or any(
        p.kind == "bad_manifest" for p in reader.problems)


def _judge(directory: Path, clean: dict[tuple[int, int], bytes]) -> str:
    from deploy.cli import main as cli_main
    from deploy.replay import ReplayError

    try:
        got, reported = _read(directory)
    except ReplayError:
        return "refused"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        verdict = cli_main(["replay", "verify", str(directory)])
    if any(clean.get(key) != raw for key, raw in got.items()):
        return "silently_accepted"         # a damaged or foreign record returned as a record
    if reported and verdict != 0:
        return "refused"
    if got.keys() == clean.keys():
        return "handled"                   # nothing that reaches a learner differs
    return "silently_accepted"             # records are missing and nothing said so


# ---- damage -------------------------------------------------------------------------------
def _damage(rng: random.Random, d: Path, kind: str, frame: int) -> str:
    from deploy.replay.segment import HIGH_WATER, list_manifests, list_segments, manifest_path

    segments = [s.path for s in list_segments(d)]
    files = segments + [manifest_path(d, s) for s in list_manifests(d)] + [d / HIGH_WATER]
    if kind in ("bit_flip", "overwrite", "truncate"):
        path = rng.choice(files)
        data = bytearray(path.read_bytes())
        at = rng.randrange(len(data))
        if kind == "bit_flip":
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            span = rng.randint(1, 64)
            data[at:at + span] = bytes(rng.randrange(256) for _ in range(min(span, len(data) - at)))
        else:
            del data[at:]
        path.write_bytes(bytes(data))
        return f"{path.name} at byte {at}"
    path = rng.choice(segments)
    head, frames = _split(path, frame)
    if kind == "cut_records" or (kind.startswith("record_") and len(frames) < 2):
        k = rng.randint(1, len(frames))
        path.write_bytes(head + b"".join(frames[:-k]))
        return f"{path.name}: last {k} of {len(frames)} records cut"
    if kind.startswith("record_"):
        k = rng.randrange(len(frames) - 1)
        if kind == "record_dup":
            frames.insert(k, frames[k])
        elif kind == "record_del":
            del frames[k]
        else:
            frames[k], frames[k + 1] = frames[k + 1], frames[k]
        path.write_bytes(head + b"".join(frames))
        return f"{path.name}: record {k}"
    if kind == "segment_del":
        path.unlink()
        return path.name
    if kind == "segment_copy":
        session, index = (int(x) for x in path.name.split(".")[0].split("-"))
        last = max(int(p.name[9:15]) for p in segments if p.name.startswith(f"{session:08d}-"))
        target = path.with_name(f"{session:08d}-{last + 1:06d}.seg")
        shutil.copy(path, target)
        return f"{path.name} copied to {target.name}"
    if kind == "segment_overwrite":
        other = rng.choice([p for p in segments if p != path] or [path])
        path.write_bytes(other.read_bytes())
        return f"{path.name} overwritten with {other.name}"
    session = int(path.name[:8])
    manifest_path(d, session).unlink()
    if kind == "session_del":
        for p in segments:
            if p.name.startswith(f"{session:08d}-"):
                p.unlink()
        return f"session {session}"
    return f"manifest of session {session}"


def _split(path: Path, frame: int) -> tuple[bytes, list[bytes]]:
    from deploy.replay.segment import read_header_file

    data = path.read_bytes()
    size = read_header_file(path).size
    body = data[size:]
    return data[:size], [body[o:o + frame] for o in range(0, len(body), frame)]
