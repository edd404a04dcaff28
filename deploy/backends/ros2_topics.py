"""Ros2TopicsBackend: ANYmal D (or any robot with the `anymal_ros2` interface) over ROS 2 topics.

No public low-level ROS 2 interface to ANYmal exists, so this project defines the contract below
(also in ros2_ws/src/policy_runner/README.md, "ANYmal topic contract"); a robot-side driver (or
deploy/bridges/anymal_ros2.py in simulation) implements the other end.

    <ns>/joint_states   sensor_msgs/JointState      robot -> controller, at the robot's state rate
                        name: the spec's joint names (any order, matched by name); position rad,
                        velocity rad/s, effort N m; header.stamp the measurement time
    <ns>/imu            sensor_msgs/Imu              robot -> controller, at the same rate
                        orientation: base in world, ROS order x, y, z, w; angular_velocity base
                        frame rad/s; linear_acceleration base-frame specific force m/s^2
    <ns>/joint_command  std_msgs/Float64MultiArray   controller -> robot, one per joint_states
                        layout.dim[0]: label = the joint names, comma separated, in motor-slot
                        order (the spec's `motor` index), size J, stride 5 J
                        layout.dim[1]: label "q,dq,tau,kp,kd", size 5, stride 5
                        data[5 i + k]: joint i's position target, velocity target, feed-forward
                        torque, kp, kd; the drive applies
                        tau = kp (q - q_meas) + kd (dq - dq_meas) + tau, clamped to its limits
    QoS: best effort, keep last 1, volatile, on all three (sensor data).
    The drive goes to damping by itself when no valid joint_command arrived for 0.1 s, and drops
    a command whose layout labels or sizes differ from the contract.

The backend: the latest joint_states and imu become one StateSample (policy order, quaternion
converted to w, x, y, z here, once); each joint_states is answered at once by a joint_command
from the latest targets the Controller wrote. Stale or missing input (`stale_timeout_s`) makes it
send damping (kp 0, the deploy config's damping kd) from a timer at the state rate, and it keeps
damping after input returns until the Controller writes a newer command. Malformed input (unknown
or missing joint names, wrong lengths, non-finite values, a quaternion far from unit, a reading
outside HardwareLink's physical bounds, joint_states whose header stamp did not move) is dropped,
counted and counts as missing.

rclpy is imported here only; the backend has its own rclpy context, so it can live in the same
process as the policy_runner node or without one."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from deploy.backend import StateSample
from deploy.backends.hardware_link import QUAT_NORM_TOLERANCE, HardwareLink
from deploy.observations import RobotState
from deploy.spec import RobotSpec

log = logging.getLogger("deploy.backends.ros2_topics")

STATE_RATE_HZ = 400.0            # ANYmal's joint state rate
DEFAULT_NAMESPACE = "/anymal"
COMMAND_FIELDS = ("q", "dq", "tau", "kp", "kd")
COMMAND_FIELDS_LABEL = ",".join(COMMAND_FIELDS)
DRIVE_COMMAND_TIMEOUT_S = 0.1


class Ros2BackendError(RuntimeError):
    pass


def quat_xyzw_to_wxyz(x: float, y: float, z: float, w: float) -> np.ndarray:
    """ROS geometry_msgs/Quaternion order -> the project's w, x, y, z (the one conversion)."""
    return np.array([w, x, y, z], dtype=np.float64)


def quat_wxyz_to_xyzw(q) -> tuple[float, float, float, float]:
    return float(q[1]), float(q[2]), float(q[3]), float(q[0])


def command_layout_labels(spec: RobotSpec) -> tuple[str, str]:
    """(dim[0].label, dim[1].label) of the joint_command layout for this spec."""
    order = np.argsort(spec.policy_to_hardware)
    return ",".join(spec.joint_names[i] for i in order), COMMAND_FIELDS_LABEL


def qos_sensor():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


def make_executor(context):
    """rclpy's EventsExecutor where this rclpy has it (fastest here), else the single-threaded one."""
    try:
        from rclpy.experimental import EventsExecutor
        return EventsExecutor(context=context)
    except Exception:
        from rclpy.executors import SingleThreadedExecutor
        return SingleThreadedExecutor(context=context)


class Ros2TopicsBackend(HardwareLink):
    state_name = state_topic = "joint_states"
    input_name = "input"
    log = log

    def __init__(self, spec: RobotSpec, namespace: str = DEFAULT_NAMESPACE, domain: int | None = None,
                 *, state_rate_hz: float = STATE_RATE_HZ, stale_timeout_s: float = 0.1,
                 damping_kd: np.ndarray | None = None, close_damping_s: float = 0.05,
                 node_name: str = "sac2real_anymal_backend"):
        if spec.interface != "anymal_ros2":
            raise Ros2BackendError(f"robot '{spec.name}' uses hardware interface '{spec.interface}', "
                                   f"not anymal_ros2 (this backend's topic contract)")
        try:
            import rclpy
            from sensor_msgs.msg import Imu, JointState
            from std_msgs.msg import Float64MultiArray, MultiArrayDimension
        except ModuleNotFoundError as exc:
            raise Ros2BackendError(f"rclpy or its messages are not installed ({exc.name}): "
                                   f"pip install -e '.[ros2]' or source a ROS 2 install") from exc
        super().__init__(spec, state_rate_hz=state_rate_hz, stale_timeout_s=stale_timeout_s,
                         damping_kd=damping_kd, close_damping_s=close_damping_s)
        self.namespace = namespace.rstrip("/") or ""
        j = spec.num_joints
        self._slot_order = np.argsort(spec.policy_to_hardware)   # slot k -> policy joint
        self._names = spec.joint_names
        self._name_index = {n: i for i, n in enumerate(self._names)}
        self._map_cache: tuple[tuple[str, ...], np.ndarray] | None = None
        self._imu = None                 # (quat_wxyz, gyro, accel, stamp)
        self._last_stamp_ns: int | None = None
        self._closing = False

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(node_name, context=self.context)
        qos = qos_sensor()
        ns = self.namespace
        self._msg = Float64MultiArray()
        names_label, fields_label = command_layout_labels(spec)
        self._msg.layout.dim = [MultiArrayDimension(label=names_label, size=j, stride=5 * j),
                                MultiArrayDimension(label=fields_label, size=5, stride=5)]
        self._pub = self.node.create_publisher(Float64MultiArray, f"{ns}/joint_command", qos)
        self.node.create_subscription(JointState, f"{ns}/joint_states", self._on_joint_states, qos)
        self.node.create_subscription(Imu, f"{ns}/imu", self._on_imu, qos)
        self.node.create_timer(self.period, self._on_timer)
        self._executor = make_executor(self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="ros2-backend", daemon=True)
        self._thread.start()

    # ---- RobotBackend (read_state, write_command: HardwareLink) ------------------------------
    def close(self) -> None:
        if self._closing:
            return
        self._damp_before_leaving()
        self._closing = True
        try:
            self._executor.shutdown(timeout_sec=1.0)
        except Exception:
            pass
        self._thread.join(2.0)
        try:
            self.node.destroy_node()
        finally:
            self._rclpy.try_shutdown(context=self.context)

    # ---- status ------------------------------------------------------------------------------
    def diagnostics(self) -> dict:
        return {"backend": "ros2", "namespace": self.namespace, **self._link_diagnostics()}

    # ---- executor thread ---------------------------------------------------------------------
    def _spin(self) -> None:
        while not self._closing and self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.1)
            except Exception:
                if self._closing or not self.context.ok():
                    return
                log.exception("ROS 2 backend executor")

    def _on_imu(self, msg) -> None:
        o, w, a = msg.orientation, msg.angular_velocity, msg.linear_acceleration
        quat = quat_xyzw_to_wxyz(o.x, o.y, o.z, o.w)
        gyro = np.array([w.x, w.y, w.z])
        accel = np.array([a.x, a.y, a.z])
        if not (np.isfinite(quat).all() and np.isfinite(gyro).all() and np.isfinite(accel).all()):
            return self._drop("imu_nonfinite", "non-finite imu")
        if abs(np.linalg.norm(quat) - 1.0) > QUAT_NORM_TOLERANCE:
            return self._drop("imu_quaternion", f"|q| = {np.linalg.norm(quat):.3f}")
        self._imu = (quat, gyro, accel, time.monotonic())

    def _joint_map(self, names) -> np.ndarray | None:
        key = tuple(names)
        if self._map_cache is not None and self._map_cache[0] == key:
            return self._map_cache[1]
        index = {n: i for i, n in enumerate(key)}
        missing = [n for n in self._names if n not in index]
        if missing:
            return None
        m = np.array([index[n] for n in self._names], dtype=np.int64)   # policy joint -> msg slot
        self._map_cache = (key, m)
        return m

    def _on_joint_states(self, msg) -> None:
        now = time.monotonic()
        m = self._joint_map(msg.name)
        if m is None:
            missing = sorted(set(self._names) - set(msg.name))
            return self._drop("joint_names", f"missing {', '.join(missing)}")
        n = len(msg.name)
        pos, vel, eff = np.asarray(msg.position), np.asarray(msg.velocity), np.asarray(msg.effort)
        if len(pos) != n or len(vel) != n or (len(eff) not in (0, n)):
            return self._drop("lengths", f"{n} names, {len(pos)} positions, {len(vel)} velocities, "
                                         f"{len(eff)} efforts")
        q, dq = pos[m], vel[m]
        tau = eff[m] if len(eff) else np.zeros(len(m))
        if not (np.isfinite(q).all() and np.isfinite(dq).all()):
            return self._drop("nonfinite", "non-finite joint state")
        imu = self._imu
        if imu is None or now - imu[3] > self.stale_timeout_s:
            self._counts["states_without_imu"] += 1
            return
        quat, gyro, accel, _ = imu
        problem = self.bounds.problem(q, dq, tau, quat, gyro, accel)
        if problem is not None:
            return self._drop(*problem)
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if stamp_ns == self._last_stamp_ns:
            return self._drop("frozen_stamp", f"joint_states stamp {stamp_ns} ns again")
        self._last_stamp_ns = stamp_ns
        state = RobotState(base_quat=quat.reshape(1, 4), base_ang_vel=gyro.reshape(1, 3),
                           joint_pos=q.reshape(1, -1), joint_vel=dq.reshape(1, -1), base_lin_vel=None)
        self._state_received(StateSample(state=state, joint_torque=tau, imu_accel=accel,
                                         stamp=now, sequence=int(stamp_ns)), now)
        self._send(now)

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self._is_stale(now):
            self._send(now)

    def _send(self, now: float) -> None:
        rows = np.zeros((self.spec.num_joints, 5))
        rows[:, 0], rows[:, 3], rows[:, 4] = self._command_now(now)
        self._msg.data = rows[self._slot_order].ravel().tolist()
        if not self._closing:
            self._pub.publish(self._msg)
