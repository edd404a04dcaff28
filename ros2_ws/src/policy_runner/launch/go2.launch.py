"""Unitree Go2 on its low-level DDS interface (go LowCmd/LowState).

    ros2 launch policy_runner go2.launch.py [backend:=unitree] [policy:=current] [network_interface:=eth0]

Parameters come from config/go2.yaml (installed to share/policy_runner/config), then these
arguments override robot, backend, policy and network_interface."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ROBOT = "go2"


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "backend", default_value="unitree", choices=['unitree', 'mujoco'],
            description="unitree: the robot; mujoco: the same node on a simulated robot"),
        DeclareLaunchArgument(
            "policy", default_value="current",
            description="'current' (the registry's current go2 bundle), a bundle folder or "
                        "ID, or 'none' to stand only"),
        DeclareLaunchArgument(
            "network_interface", default_value="eth0",
            description="network interface facing the robot (lo for the MuJoCo DDS bridge)"),
        Node(
            package="policy_runner",
            executable="policy_runner",
            name="policy_runner",
            output="screen",
            emulate_tty=True,
            parameters=[
                PathJoinSubstitution([FindPackageShare("policy_runner"), "config", ROBOT + ".yaml"]),
                {"robot": ROBOT,
                 "backend": LaunchConfiguration("backend"),
                 "policy": LaunchConfiguration("policy"),
                 "network_interface": LaunchConfiguration("network_interface")},
            ],
        ),
    ])
