"""Export a replay directory to MCAP, for people and tools rather than for the learner.

Why MCAP and not Parquet: the people who look at robot logs already open MCAP files. It is the
default storage of ROS 2 bags (rosbag2_storage_mcap) and Foxglove opens, plots and time-aligns it
next to the robot's own bags, with readers in Python, C++, Go, Rust and TypeScript. The learner
does not need an export at all (ReplayReader.load gives it numpy arrays), so the columnar analytics
that Parquet is good at buy little here, while pyarrow would be a heavy binary dependency; `mcap`
is a small package needed only on the machine that exports (the `replay-export` extra).

Two layouts of the file:
  * `export_ros2_mcap` (the default of `sac2real replay export`): the MCAP ROS 2 profile, each
    record as standard ROS 2 messages in CDR with their .msg schemas (deploy/replay/ros2_schemas.py),
    so `ros2 bag info|play` reads it with no package of this project: /joint_states
    (sensor_msgs/JointState), /imu (sensor_msgs/Imu), /cmd_vel (geometry_msgs/TwistStamped: the
    command), /sac2real/obs and /sac2real/action (std_msgs/Float32MultiArray, labelled with the
    observation terms and joint names), /sac2real/reward (std_msgs/Float32; NaN where none);
  * `export_mcap` (`--json`): one channel `/sac2real/transition` per session (channel metadata:
    session, uuid, layout hash), JSON messages with a JSON Schema derived from the record layout
    (NaN, which JSON lacks, becomes null), every field of the record, for Foxglove.
Both: log time = the session's wall clock at start plus the monotonic time elapsed, and one
metadata record per session holding its segment header."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy.replay.reader import Cursor, ReplayReader
from deploy.replay.record import DOCS, TransitionLayout

TOPIC = "/sac2real/transition"


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    messages: int
    sessions: int
    cursor: Cursor


def json_schema(layout: TransitionLayout) -> dict[str, Any]:
    """JSON Schema of one exported message; arrays are flat lists in the layout's shape."""
    props: dict[str, Any] = {"session": {"type": "integer"}, "seq": {"type": "integer"}}
    for f in layout.fields:
        kind = np.dtype(f.dtype).kind
        scalar = {"f": {"type": ["number", "null"]}, "b": {"type": "boolean"},
                  "S": {"type": "string"}}.get(kind, {"type": "integer"})
        prop = scalar if not f.shape else {"type": "array", "items": scalar,
                                            "minItems": f.shape[0], "maxItems": f.shape[0]}
        props[f.name] = {**prop, "description": DOCS.get(f.name, "")}
    return {"type": "object", "title": "sac2real.Transition", "properties": props}


def export_mcap(directory: str | Path, out: str | Path, after: Cursor = Cursor(),
                layout_hash: str | None = None) -> ExportSummary:
    """Write every valid record after `after` to an MCAP file at `out`."""
    from mcap.writer import Writer   # the replay-export extra; the robot never needs it

    out = Path(out)
    reader = ReplayReader(Path(directory), layout_hash=layout_hash)
    channels: dict[int, int] = {}
    schemas: dict[str, int] = {}
    count, cursor = 0, Cursor(*after)
    with open(out, "wb") as stream:
        writer = Writer(stream)
        writer.start(profile="", library="sac2real")
        for chunk in reader.chunks(after):
            head, layout = chunk.header, chunk.header.layout
            if layout.hash not in schemas:
                schemas[layout.hash] = writer.register_schema(
                    "sac2real.Transition", "jsonschema", json.dumps(json_schema(layout)).encode())
            if chunk.session not in channels:
                channels[chunk.session] = writer.register_channel(
                    TOPIC, "json", schemas[layout.hash],
                    {"session": str(chunk.session), "session_uuid": head.data["session_uuid"],
                     "layout_hash": layout.hash})
                writer.add_metadata(f"sac2real.session.{chunk.session}",
                                    {k: v if isinstance(v, str) else json.dumps(v)
                                     for k, v in head.data.items()})
            offset = head.data["session_wall_ns"] - head.data["session_mono_ns"]
            times = (chunk.records["time_ns"] + offset).tolist()
            columns = {f.name: _column(chunk.records[f.name]) for f in layout.fields}
            for i, seq in enumerate(chunk.seq.tolist()):
                msg = {"session": chunk.session, "seq": seq}
                msg.update((name, col[i]) for name, col in columns.items())
                writer.add_message(channels[chunk.session], log_time=times[i],
                                   publish_time=times[i], sequence=seq & 0xFFFFFFFF,
                                   data=json.dumps(msg, allow_nan=False).encode())
            count += len(chunk)
            cursor = chunk.cursor
        writer.finish()
    return ExportSummary(out, count, len(channels), cursor)


def _column(values: np.ndarray) -> list[Any]:
    """One field of a chunk as JSON-ready Python values (bytes as text, NaN and inf as null)."""
    if values.dtype.kind == "S":
        return [v.decode(errors="replace") for v in values.tolist()]
    if values.dtype.kind == "f":
        values = values.astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            return np.where(bad, None, values.astype(object)).tolist()
    return values.tolist()


# ---- ROS 2 ------------------------------------------------------------------------------------
ROS2_TOPICS = {"/joint_states": "sensor_msgs/msg/JointState", "/imu": "sensor_msgs/msg/Imu",
               "/cmd_vel": "geometry_msgs/msg/TwistStamped",
               "/sac2real/obs": "std_msgs/msg/Float32MultiArray",
               "/sac2real/action": "std_msgs/msg/Float32MultiArray",
               "/sac2real/reward": "std_msgs/msg/Float32"}
BASE_FRAME = "base_link"


def export_ros2_mcap(directory: str | Path, out: str | Path, after: Cursor = Cursor(),
                     layout_hash: str | None = None) -> ExportSummary:
    """Write every valid record after `after` as ROS 2 messages (see the module doc)."""
    from mcap_ros2.writer import Writer   # the replay-export extra; the robot never needs it

    from deploy.replay.ros2_schemas import msgdef

    out = Path(out)
    reader = ReplayReader(Path(directory), layout_hash=layout_hash)
    count, cursor, sessions = 0, Cursor(*after), set()
    with open(out, "wb") as stream:
        writer = Writer(stream)
        schemas = {t: writer.register_msgdef(d, msgdef(d)) for t, d in ROS2_TOPICS.items()}
        for chunk in reader.chunks(after):
            head, layout = chunk.header, chunk.header.layout
            if chunk.session not in sessions:
                sessions.add(chunk.session)
                writer.add_metadata(f"sac2real.session.{chunk.session}",
                                    {k: v if isinstance(v, str) else json.dumps(v)
                                     for k, v in head.data.items()})
            offset = head.data["session_wall_ns"] - head.data["session_mono_ns"]
            times = (chunk.records["time_ns"] + offset).tolist()
            build = _Ros2Messages(layout)
            for i, seq in enumerate(chunk.seq.tolist()):
                rec = chunk.records[i]
                for topic, message in build(rec, times[i]).items():
                    writer.write_message(topic, schemas[topic], message, log_time=times[i],
                                         publish_time=times[i], sequence=seq & 0xFFFFFFFF)
            count += len(chunk)
            cursor = chunk.cursor
        writer.finish()
    return ExportSummary(out, count, len(sessions), cursor)


class _Ros2Messages:
    """One record -> {topic: message dict} for the ROS 2 topics above."""

    def __init__(self, layout: TransitionLayout):
        n = dict((f.name, f.shape) for f in layout.fields)
        self.joint_names = list(layout.meta.get("joint_names") or
                                [f"joint_{i}" for i in range(n["joint_pos"][0])])
        terms = layout.meta.get("obs_terms") or []
        self.obs_label = ",".join(str(t.get("term", t)) if isinstance(t, dict) else str(t)
                                  for t in terms)

    @staticmethod
    def _array(values, label: str) -> dict:
        data = np.asarray(values, dtype=np.float32).reshape(-1).tolist()
        return {"layout": {"dim": [{"label": label, "size": len(data), "stride": len(data)}],
                           "data_offset": 0}, "data": data}

    def __call__(self, rec, time_ns: int) -> dict[str, dict]:
        header = {"stamp": {"sec": time_ns // 1_000_000_000, "nanosec": time_ns % 1_000_000_000},
                  "frame_id": BASE_FRAME}
        f = lambda name: np.asarray(rec[name], dtype=np.float64).tolist()   # noqa: E731
        w, x, y, z = f("imu_quat")
        vx, vy, wz = f("command")
        vec = lambda v: {"x": v[0], "y": v[1], "z": v[2]}   # noqa: E731
        return {
            "/joint_states": {"header": header, "name": self.joint_names,
                              "position": f("joint_pos"), "velocity": f("joint_vel"),
                              "effort": f("joint_torque")},
            "/imu": {"header": header, "orientation": {"x": x, "y": y, "z": z, "w": w},
                     "orientation_covariance": [0.0] * 9, "angular_velocity": vec(f("imu_gyro")),
                     "angular_velocity_covariance": [0.0] * 9,
                     "linear_acceleration": vec(f("imu_accel")),
                     "linear_acceleration_covariance": [0.0] * 9},
            "/cmd_vel": {"header": header, "twist": {"linear": {"x": vx, "y": vy, "z": 0.0},
                                                     "angular": {"x": 0.0, "y": 0.0, "z": wz}}},
            "/sac2real/obs": self._array(rec["obs"], self.obs_label or "obs"),
            "/sac2real/action": self._array(rec["action"], ",".join(self.joint_names)),
            "/sac2real/reward": {"data": float(rec["reward"])},
        }
