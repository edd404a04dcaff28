"""Robot backends (deploy.backend.RobotBackend): MuJoCo in-process, Unitree low-level DDS, ANYmal over
ROS 2 topics. Each imports its middleware inside its own module, so `deploy` imports without them
(the robot computer never loads MuJoCo, the simulator never loads DDS).

    make_backend("mujoco", spec, realtime=True)                  # deploy/backends/mujoco_backend.py
    make_backend("unitree", spec, network_interface="eth0")      # deploy/backends/unitree.py
    make_backend("ros2", spec, namespace="/anymal")              # deploy/backends/ros2_topics.py

`sac2real run --backend NAME` finds backends here: name -> "module:factory", the factory taking
the RobotSpec first and keyword options after it."""
from __future__ import annotations

import importlib

BACKENDS: dict[str, str] = {
    "mujoco": "deploy.backends.mujoco_backend:MujocoBackend",
    "unitree": "deploy.backends.unitree:UnitreeBackend",
    "ros2": "deploy.backends.ros2_topics:Ros2TopicsBackend",
}


def make_backend(name: str, spec, **options):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend '{name}' (known: {', '.join(sorted(BACKENDS))})")
    module, _, factory = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), factory)(spec, **options)
