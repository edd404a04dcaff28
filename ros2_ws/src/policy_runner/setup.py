"""ament_python build of policy_runner: `colcon build --packages-select policy_runner`.

Launch files and parameter files are installed as data files under share/policy_runner, where
FindPackageShare('policy_runner') finds them; the node is the console script `policy_runner`,
installed to lib/policy_runner (setup.cfg), where `ros2 run` and launch_ros look for it.
Paths are relative to this folder: colcon runs setup.py here."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "policy_runner"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "README.md"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*launch.[pxy][yma]*"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="sac2real maintainers",
    maintainer_email="maintainers@sac2real.invalid",
    description="ROS 2 node around sac2real's deploy.Controller",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{PACKAGE} = {PACKAGE}.node:main"]},
)
