"""sac2real's deployment side: the contracts shared with training and the runtime on the robot.

`Controller` and `PolicyBundle` are loaded on first use (module `__getattr__`), so that
`import deploy` stays cheap (no onnxruntime, no MuJoCo)."""
from __future__ import annotations

_LAZY = {"Controller": "deploy.controller", "PolicyBundle": "deploy.bundle"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deploy' has no attribute '{name}'")
