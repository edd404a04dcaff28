"""The environment ROS 2's PyPI wheels (ros-kilted-*) need, printed as shell lines:

    eval "$(python -m deploy.backends.ros2_env)"

The wheels keep their shared libraries in `<site-packages>/ros_*.libs` and `<prefix>/lib`, which
the dynamic linker must find before `import rclpy`. Their `ros-wheels-bootstrapper` dependency
installs a `.pth` hook that re-executes every Python interpreter once with LD_LIBRARY_PATH set
and `_ROS_WHEELS_BOOTSTRAP_COMPLETE=1`; exporting the same variables up front makes that re-exec
unnecessary and covers interpreters where `.pth` files do not run. RMW_IMPLEMENTATION names the
one middleware the wheels ship (rmw_fastrtps_cpp)."""
from __future__ import annotations

import os
import shlex
import site
import sys
import sysconfig
from pathlib import Path

RMW = "rmw_fastrtps_cpp"


def library_dirs() -> list[str]:
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    dirs = [str(Path(sys.prefix) / "lib")]
    for root in sorted(roots):
        dirs += sorted(str(p) for p in Path(root).glob("ros_*.libs") if p.is_dir())
    return dirs


def ros2_environment(existing: str | None = None) -> dict[str, str]:
    existing = os.environ.get("LD_LIBRARY_PATH", "") if existing is None else existing
    parts = library_dirs() + [p for p in existing.split(os.pathsep) if p]
    seen, ordered = set(), []
    for p in parts:
        if p not in seen:
            seen.add(p)
            ordered.append(p)
    return {"LD_LIBRARY_PATH": os.pathsep.join(ordered), "RMW_IMPLEMENTATION": RMW,
            "_ROS_WHEELS_BOOTSTRAP_COMPLETE": "1"}


def main() -> int:
    for k, v in ros2_environment().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
