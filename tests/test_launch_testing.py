"""launch_testing: `go2.launch.py` with the MuJoCo backend really launched, where launch_testing
is installed and policy_runner is built (a ROS 2 install, `colcon build`, `source install/setup.bash`,
then `python3 -m pytest tests/test_launch_testing.py`). Elsewhere it is skipped with the reason;
tests/test_launch_files.py checks the launch files statically."""
from __future__ import annotations

import os
import time
import unittest

import pytest

launch_testing = pytest.importorskip(
    "launch_testing",
    reason="launch_testing is not installed here (it comes with a ROS 2 install: "
           "ros-<distro>-launch-testing-ros); the launch files are checked statically by "
           "tests/test_launch_files.py")
try:
    from ament_index_python.packages import get_package_share_directory
    SHARE = get_package_share_directory("policy_runner")
except (ImportError, LookupError) as exc:   # PackageNotFoundError is a LookupError
    pytest.skip(f"policy_runner is not built and sourced ({exc}): colcon build, then source "
                f"install/setup.bash", allow_module_level=True)

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    go2 = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(SHARE, "launch", "go2.launch.py")),
        launch_arguments={"backend": "mujoco", "policy": "none"}.items())
    return launch.LaunchDescription([go2, launch_testing.actions.ReadyToTest()])


class TestPolicyRunnerLaunched(unittest.TestCase):
    def test_start_reaches_stand_and_diagnostics_report_it(self, proc_output):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from std_srvs.srv import Trigger

        rclpy.init()
        node = rclpy.create_node("launch_test_operator")
        try:
            seen = []
            node.create_subscription(DiagnosticArray, "/policy_runner/diagnostics", seen.append, 10)
            start = node.create_client(Trigger, "/policy_runner/start")
            self.assertTrue(start.wait_for_service(timeout_sec=60.0), "~/start not offered")
            future = start.call_async(Trigger.Request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
            self.assertTrue(future.result().success)
            end = time.monotonic() + 20.0
            mode = None
            while time.monotonic() < end and mode != "STAND":
                rclpy.spin_once(node, timeout_sec=0.1)
                if seen:
                    mode = {kv.key: kv.value for kv in seen[-1].status[0].values}["mode"]
            self.assertEqual(mode, "STAND")
        finally:
            node.destroy_node()
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestPolicyRunnerShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
