"""Robot backends (deploy.backend.RobotBackend implementations), imported only when asked for, so
that the robot computer never loads MuJoCo and the simulator never loads DDS.

    make_backend("mujoco", spec, realtime=True)      # deploy/backends/mujoco_backend.py

A backend registers itself here as name -> "module:factory"; the factory takes the RobotSpec
first and keyword options after it."""
from __future__ import annotations

import importlib

BACKENDS: dict[str, str] = {
    "mujoco": "deploy.backends.mujoco_backend:MujocoBackend",
}


def make_backend(name: str, spec, **options):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend '{name}' (known: {', '.join(sorted(BACKENDS))})")
    module, _, factory = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), factory)(spec, **options)
