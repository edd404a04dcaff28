"""A MuJoCo ANYmal D behind this project's ANYmal ROS 2 topic contract (deploy/backends/ros2_topics.py):

    python -m deploy.bridges.anymal_ros2 [--robot anymal_d] [--namespace /anymal] [--domain 1]
           [--rate 400] [--start standing|lying] [--status-file F] [--duration S]

Every physics step (dt = 1 / rate) it publishes <ns>/joint_states and <ns>/imu and applies the
newest valid <ns>/joint_command as the drives would: tau = kp (q - q_meas) + kd (dq - dq_meas)
+ tau_ff, clamped to the effort limit. A command whose layout differs from the contract (joint
names, sizes, field labels) or holds non-finite values is dropped and counted. No valid command for
0.1 s: the drives damp (kp 0, the deploy config's damping kd), as the contract says."""
from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np

from deploy.backends.ros2_topics import (DEFAULT_NAMESPACE, DRIVE_COMMAND_TIMEOUT_S,
                                         command_layout_labels, make_executor, qos_sensor,
                                         quat_wxyz_to_xyzw)
from deploy.bridges.sim_bridge import SimBridge, add_run_arguments, serve
from deploy.cli_types import dds_domain, number
from deploy.bridges.sim_robot import robot_status
from deploy.spec import RobotSpec


class AnymalRos2Bridge(SimBridge):
    drops_key = "command_dropped"

    def __init__(self, spec: RobotSpec, namespace: str = DEFAULT_NAMESPACE, domain: int | None = None,
                 rate_hz: float = 400.0, start: str = "standing", status_file=None,
                 command_timeout_s: float = DRIVE_COMMAND_TIMEOUT_S):
        import rclpy
        from sensor_msgs.msg import Imu, JointState
        from std_msgs.msg import Float64MultiArray

        from deploy.deploy_config import DeployConfig

        super().__init__(spec, rate_hz, start, status_file)
        self.command_timeout_s = command_timeout_s
        self.damping_kd = DeployConfig.load(spec).controller.damping_kd
        self._labels = command_layout_labels(spec)
        self._slot_order = np.argsort(spec.policy_to_hardware)   # slot k -> policy joint
        self._command = None             # (rows (J, 5) in policy order, monotonic time)

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("sac2real_anymal_bridge", context=self.context)
        ns = namespace.rstrip("/")
        qos = qos_sensor()
        self.js_pub = self.node.create_publisher(JointState, f"{ns}/joint_states", qos)
        self.imu_pub = self.node.create_publisher(Imu, f"{ns}/imu", qos)
        self.node.create_subscription(Float64MultiArray, f"{ns}/joint_command", self._on_command, qos)
        self._js = JointState()
        self._js.name = list(spec.joint_names)
        self._imu = Imu()
        self._imu.header.frame_id = "base"
        self._js.header.frame_id = "base"
        self._executor = make_executor(self.context)
        self._executor.add_node(self.node)
        self._spin_thread = threading.Thread(target=self._spin, daemon=True)
        self._spin_thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.1)
            except Exception:
                if self._stop.is_set() or not self.context.ok():
                    return
                raise

    def _on_command(self, msg) -> None:
        dims = msg.layout.dim
        j = self.spec.num_joints
        if (len(dims) != 2 or (dims[0].label, dims[1].label) != self._labels or dims[0].size != j
                or dims[1].size != 5 or len(msg.data) != 5 * j):
            self.drops["layout"] += 1
            return
        rows = np.asarray(msg.data, dtype=np.float64).reshape(j, 5)
        if not np.isfinite(rows).all():
            self.drops["nonfinite"] += 1
            return
        policy_rows = np.empty_like(rows)
        policy_rows[self._slot_order] = rows
        self._command = (policy_rows, time.monotonic())
        self.counts["commands_received"] += 1

    def _apply(self) -> None:
        cmd = self._command
        if cmd is None:
            self.robot.limp()
            return
        rows, t = cmd
        if time.monotonic() - t > self.command_timeout_s:
            s = self.robot.sensors()
            self.robot.set_command(s.q, np.zeros(len(s.q)), self.damping_kd)
            self.counts["watchdog_damping_steps"] += 1
            return
        self.robot.set_command(rows[:, 0], rows[:, 3], rows[:, 4], rows[:, 1], rows[:, 2])

    def _step(self) -> dict:
        self._apply()
        self.robot.step()
        s = self.robot.sensors()
        stamp = self.node.get_clock().now().to_msg()
        js = self._js
        js.header.stamp = stamp
        js.position, js.velocity, js.effort = s.q.tolist(), s.dq.tolist(), s.tau.tolist()
        imu = self._imu
        imu.header.stamp = stamp
        o = imu.orientation
        o.x, o.y, o.z, o.w = quat_wxyz_to_xyzw(s.quat_wxyz)
        g, a = imu.angular_velocity, imu.linear_acceleration
        g.x, g.y, g.z = (float(v) for v in s.gyro)
        a.x, a.y, a.z = (float(v) for v in s.accel)
        self.imu_pub.publish(imu)          # imu first: a joint_states finds a fresh imu
        self.js_pub.publish(js)
        self.counts["states_sent"] += 1
        return robot_status(self.robot, s)

    def _close(self) -> None:
        try:
            self._executor.shutdown(timeout_sec=1.0)
        except Exception:
            pass
        self.node.destroy_node()
        import rclpy
        rclpy.try_shutdown(context=self.context)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.bridges.anymal_ros2", description=__doc__.splitlines()[0])
    ap.add_argument("--robot", default="anymal_d", help="a spec with the anymal_ros2 interface")
    ap.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    ap.add_argument("--domain", type=dds_domain, default=None, help="ROS domain id (default ROS_DOMAIN_ID)")
    ap.add_argument("--rate", type=number(1.0, 5000.0), default=400.0, help="state rate = physics rate, Hz")
    add_run_arguments(ap)
    args = ap.parse_args(argv)
    spec = RobotSpec.load(args.robot)
    bridge = AnymalRos2Bridge(spec, args.namespace, args.domain, args.rate, args.start, args.status_file)
    return serve(bridge, f"{spec.name} on {args.namespace} (ROS domain {args.domain}) at "
                         f"{args.rate:g} Hz", args.duration)


if __name__ == "__main__":
    sys.exit(main())
