"""ANYmal D over this project's ROS 2 topic contract (README.md).

    ros2 launch policy_runner anymal_d.launch.py [backend:=ros2] [policy:=current] [network_interface:=eth0]

Parameters come from config/anymal_d.yaml (installed to share/policy_runner/config), then these
arguments override robot, backend, policy and network_interface."""
from policy_runner.launch_description import robot_launch_description


def generate_launch_description():
    return robot_launch_description(
        "anymal_d", robot_backend="ros2",
        network_interface_note="unused by the ros2 backend (the RMW picks interfaces); kept for one "
                               "command line across robots")
