"""Unitree Go2 on its low-level DDS interface (go LowCmd/LowState).

    ros2 launch policy_runner go2.launch.py [backend:=unitree] [policy:=current] [network_interface:=eth0]

Parameters come from config/go2.yaml (installed to share/policy_runner/config), then these
arguments override robot, backend, policy and network_interface."""
from policy_runner.launch_description import robot_launch_description


def generate_launch_description():
    return robot_launch_description(
        "go2", robot_backend="unitree",
        network_interface_note="network interface facing the robot (lo for the MuJoCo DDS bridge)")
