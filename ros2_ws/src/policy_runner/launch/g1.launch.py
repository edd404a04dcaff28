"""Unitree G1 (29 DoF) on its low-level DDS interface (hg LowCmd/LowState).

    ros2 launch policy_runner g1.launch.py [backend:=unitree] [policy:=current] [network_interface:=eth0]

Parameters come from config/g1.yaml (installed to share/policy_runner/config), then these
arguments override robot, backend, policy and network_interface."""
from policy_runner.launch_description import robot_launch_description


def generate_launch_description():
    return robot_launch_description(
        "g1", robot_backend="unitree",
        network_interface_note="network interface facing the robot (lo for the MuJoCo DDS bridge)")
