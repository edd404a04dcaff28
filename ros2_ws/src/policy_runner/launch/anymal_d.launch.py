"""ANYmal D over this project's ROS 2 topic contract (README.md).

    ros2 launch policy_runner anymal_d.launch.py [backend:=ros2] [policy:=current] [network_interface:=eth0]

Parameters come from config/anymal_d.yaml (installed to share/policy_runner/config), then these
arguments override robot, backend, policy and network_interface."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ROBOT = "anymal_d"


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "backend", default_value="ros2", choices=['ros2', 'mujoco'],
            description="ros2: the robot; mujoco: the same node on a simulated robot"),
        DeclareLaunchArgument(
            "policy", default_value="current",
            description="'current' (the registry's current anymal_d bundle), a bundle folder or "
                        "ID, or 'none' to stand only"),
        DeclareLaunchArgument(
            "network_interface", default_value="eth0",
            description="unused by the ros2 backend (the RMW picks interfaces); kept for one command line across robots"),
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
