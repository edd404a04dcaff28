"""The launch description every robot's launch file returns: the robots differ only in their name
(which picks config/<robot>.yaml), the backend that drives the real robot, and what the
network_interface argument means to that backend, so the node, its arguments and the order in
which parameters override each other are written once here.

Imported by launch/*.launch.py from the installed package (`source install/setup.bash`)."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def robot_launch_description(robot, robot_backend, network_interface_note):
    """Parameters come from `params_file` (default: the installed config/<robot>.yaml), then the
    launch arguments override robot (the spec: this robot or a variant), backend, policy and
    network_interface; `backend` is the
    robot's own or mujoco; `namespace` puts the node and its relative topics (cmd_vel,
    joint_states, imu) under it, as several robots on one ROS graph need."""
    return LaunchDescription([
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="namespace of the node and of cmd_vel, joint_states and imu ('' = none)"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("policy_runner"), "config", robot + ".yaml"]),
            description="node parameters (YAML, ros__parameters); default: the installed "
                        "config/" + robot + ".yaml"),
        DeclareLaunchArgument(
            "robot", default_value=robot,
            description="the robot spec (configs/robots): " + robot + " or a variant of it, e.g. "
                        "one whose observation layout leaves out what the hardware cannot measure"),
        DeclareLaunchArgument(
            "backend", default_value=robot_backend, choices=[robot_backend, "mujoco"],
            description=robot_backend + ": the robot; mujoco: the same node on a simulated robot"),
        DeclareLaunchArgument(
            "policy", default_value="current",
            description="'current' (the registry's current " + robot + " bundle), a bundle folder "
                        "or ID, or 'none' to stand only"),
        DeclareLaunchArgument(
            "network_interface", default_value="eth0", description=network_interface_note),
        Node(
            package="policy_runner",
            executable="policy_runner",
            name="policy_runner",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[
                LaunchConfiguration("params_file"),
                {"robot": LaunchConfiguration("robot"),
                 "backend": LaunchConfiguration("backend"),
                 "policy": LaunchConfiguration("policy"),
                 "network_interface": LaunchConfiguration("network_interface")},
            ],
        ),
    ])
