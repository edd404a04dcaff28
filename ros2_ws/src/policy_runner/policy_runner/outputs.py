"""What the node publishes about the robot, built from one StateSample: sensor_msgs/JointState and
sensor_msgs/Imu stamped at measurement time, and the odom -> base transform from the state
estimate (REP 105: odom is continuous and drifts; the base pose there is the integral of the
estimated body velocity, rotated by the IMU's orientation).

Message objects are passed in (constructed by the node from its ROS 2 imports), so this module
imports no ROS and its arithmetic is tested without a middleware."""
from __future__ import annotations

import time

import numpy as np

from deploy.observations import quat_rotate_inverse


def ros_stamp(ros_now, sample_stamp: float, monotonic_now: float | None = None):
    """The ROS time at which a sample was measured: now on the node's clock, less how long ago
    (time.monotonic) the backend received it. Returns a builtin_interfaces/Time message."""
    age = (time.monotonic() if monotonic_now is None else monotonic_now) - sample_stamp
    ns = ros_now.nanoseconds - int(max(0.0, age) * 1e9)
    from rclpy.time import Time
    return Time(nanoseconds=ns, clock_type=ros_now.clock_type).to_msg()


def joint_state_message(msg, sample, spec, stamp, frame_id: str):
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.name = spec.joint_names
    st = sample.state
    msg.position = st.joint_pos[0].tolist()
    msg.velocity = st.joint_vel[0].tolist()
    msg.effort = np.asarray(sample.joint_torque, dtype=np.float64).tolist()
    return msg


def imu_message(msg, sample, stamp, frame_id: str):
    """Orientation x, y, z, w from the project's w, x, y, z; covariances unknown (all 0, as
    sensor_msgs/Imu documents for 'unknown')."""
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    w, x, y, z = sample.state.base_quat[0].tolist()
    msg.orientation.w, msg.orientation.x, msg.orientation.y, msg.orientation.z = w, x, y, z
    gx, gy, gz = sample.state.base_ang_vel[0].tolist()
    msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = gx, gy, gz
    ax, ay, az = np.asarray(sample.imu_accel, dtype=np.float64).tolist()
    msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z = ax, ay, az
    return msg


class Odometry:
    """Integrates the estimated body-frame base velocity into an odom-frame position. A sample
    without a velocity estimate (base_lin_vel None) or a non-finite one leaves the position where
    it was; a gap longer than `max_gap_s` is not integrated across (the robot was not seen)."""

    def __init__(self, max_gap_s: float = 0.2):
        self.position = np.zeros(3)
        self.max_gap_s = max_gap_s
        self._last: float | None = None

    def update(self, sample) -> tuple[np.ndarray, np.ndarray] | None:
        """(position (3,), quaternion w, x, y, z) after this sample, or None before a first one."""
        quat = sample.state.base_quat[0]
        v = sample.state.base_lin_vel
        last, self._last = self._last, sample.stamp
        if last is not None and v is not None and np.isfinite(v).all():
            dt = sample.stamp - last
            if 0.0 < dt <= self.max_gap_s:
                conj = quat * np.array([1.0, -1.0, -1.0, -1.0])     # body -> odom rotation
                self.position = self.position + quat_rotate_inverse(conj[None], v)[0] * dt
        return self.position.copy(), quat.copy()


def tf_message(msg, pose, stamp, parent: str, child: str):
    """A tf2_msgs/TFMessage holding parent -> child at `pose` (position, quaternion w, x, y, z)."""
    from geometry_msgs.msg import TransformStamped

    pos, quat = pose
    t = TransformStamped()
    t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, parent, child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = pos.tolist()
    w, x, y, z = quat.tolist()
    t.transform.rotation.w, t.transform.rotation.x = w, x
    t.transform.rotation.y, t.transform.rotation.z = y, z
    msg.transforms = [t]
    return msg
