"""`sac2real replay export` as ROS 2 messages: a replay directory written by the real ReplayWriter,
exported through the CLI, read back with the MCAP ROS 2 decoder (mcap-ros2-support), which decodes
each message's CDR bytes with the schema text stored in the file, as rosbag2 and Foxglove do."""
from __future__ import annotations

import os

import numpy as np
import pytest

from deploy.cli import main as cli_main
from deploy.observations import ObservationPipeline
from deploy.replay import ReplayWriter, TransitionLayout
from deploy.replay.crashtest import synthetic_transition
from deploy.spec import RobotSpec

if os.environ.get("CI"):
    import mcap_ros2  # noqa: F401  (the test extra installs it)
else:
    pytest.importorskip("mcap_ros2", reason="mcap-ros2-support not installed (pip install -e '.[test]')")


def _transition(layout, spec, k):
    t = synthetic_transition(layout, k)
    j = spec.num_joints
    t["joint_pos"] = np.arange(j, dtype=np.float32) * 0.01 + k
    t["imu_quat"] = np.array([0.9, 0.1, 0.2, 0.3], np.float32)      # w, x, y, z
    t["command"] = np.array([0.5, -0.2, 0.3], np.float32)
    t["action"] = np.linspace(-1, 1, j).astype(np.float32)
    if k == 2:
        del t["reward"]                                              # NaN in the log
    return t


def test_export_writes_standard_ros2_messages_that_decode_with_their_own_schemas(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    spec = RobotSpec.load("go2", check_mjcf=False)
    layout = TransitionLayout.from_spec(spec, ObservationPipeline(spec).layout)
    log = tmp_path / "log"
    with ReplayWriter(log, layout) as writer:
        for k in range(4):
            assert writer.append(**_transition(layout, spec, k))
    out = tmp_path / "replay.mcap"
    assert cli_main(["replay", "export", str(log), str(out)]) == 0

    with open(out, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        summary = reader.get_summary()
        decoded = [(ch.topic, sch.name, sch.encoding, ch.message_encoding, msg, ros)
                   for sch, ch, msg, ros in reader.iter_decoded_messages()]
    assert header.profile == "ros2"
    kinds = {(t, n, e, me) for t, n, e, me, _, _ in decoded}
    assert kinds == {("/joint_states", "sensor_msgs/msg/JointState", "ros2msg", "cdr"),
                     ("/imu", "sensor_msgs/msg/Imu", "ros2msg", "cdr"),
                     ("/cmd_vel", "geometry_msgs/msg/TwistStamped", "ros2msg", "cdr"),
                     ("/sac2real/obs", "std_msgs/msg/Float32MultiArray", "ros2msg", "cdr"),
                     ("/sac2real/action", "std_msgs/msg/Float32MultiArray", "ros2msg", "cdr"),
                     ("/sac2real/reward", "std_msgs/msg/Float32", "ros2msg", "cdr")}
    by_topic: dict[str, list] = {}
    for topic, _, _, _, msg, ros in decoded:
        by_topic.setdefault(topic, []).append((msg, ros))
    assert all(len(v) == 4 for v in by_topic.values())
    msg, ros = by_topic["/joint_states"][3]
    assert list(ros.name) == spec.joint_names
    np.testing.assert_allclose(ros.position, np.arange(12) * 0.01 + 3, rtol=1e-6)
    stamp = ros.header.stamp.sec * 10**9 + ros.header.stamp.nanosec
    assert stamp == msg.log_time and ros.header.frame_id == "base_link"
    imu = by_topic["/imu"][0][1]
    assert (imu.orientation.w, imu.orientation.x, imu.orientation.y, imu.orientation.z) == \
        pytest.approx((0.9, 0.1, 0.2, 0.3), abs=1e-6)
    cmd = by_topic["/cmd_vel"][0][1].twist
    assert (cmd.linear.x, cmd.linear.y, cmd.angular.z) == pytest.approx((0.5, -0.2, 0.3), abs=1e-6)
    action = by_topic["/sac2real/action"][1][1]
    np.testing.assert_allclose(action.data, np.linspace(-1, 1, 12), rtol=1e-6)
    assert action.layout.dim[0].label == ",".join(spec.joint_names)
    rewards = [r.data for _, r in by_topic["/sac2real/reward"]]
    assert np.isnan(rewards[2]) and rewards[1] == 1.0
    assert len(summary.metadata_indexes) == 1            # one session's header as metadata
