"""The policy_runner package, checked statically (`launch` and `launch_ros` are not installable
here; tests/test_launch_testing.py runs the launch files where they are): each launch file hands
its robot to the shared builder (policy_runner/launch_description.py), which declares backend,
policy and network_interface, starts the executable that setup.py installs, and loads a parameter
file that setup.py installs and whose every key is a node parameter."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "ros2_ws" / "src" / "policy_runner"
ROBOTS = ("g1", "go2", "anymal_d")
LAUNCH_API = {"launch": {"LaunchDescription"}, "launch.actions": {"DeclareLaunchArgument"},
              "launch.substitutions": {"LaunchConfiguration", "PathJoinSubstitution"},
              "launch_ros.actions": {"Node"}, "launch_ros.substitutions": {"FindPackageShare"}}
BUILDER_MODULE = "policy_runner.launch_description"     # what every launch file returns


@pytest.fixture(scope="module")
def setup_kwargs() -> dict:
    """What setup.py hands to setuptools.setup, run in the package folder as colcon runs it."""
    probe = ("import json, setuptools\n"
             "def capture(**kw):\n"
             "    print(json.dumps({k: kw[k] for k in ('name', 'data_files', 'entry_points', 'packages')}))\n"
             "setuptools.setup = capture\n"
             "exec(compile(open('setup.py').read(), 'setup.py', 'exec'))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=PKG, capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _installed(kwargs: dict) -> dict[str, str]:
    """share-relative install path -> source path, from data_files."""
    out = {}
    for dest, files in kwargs["data_files"]:
        for f in files:
            out[f"{dest}/{Path(f).name}"] = f
    return out


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call: ast.Call, key: str):
    for k in call.keywords:
        if k.arg == key:
            return k.value
    return None


def _const(node, env: dict):
    """A string built from literals, the builder's parameters and '+' (what the launch files use)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _const(node.left, env) + _const(node.right, env)
    raise AssertionError(f"not a constant expression: {ast.dump(node)}")


def test_package_metadata_and_install_layout(setup_kwargs):
    xml = ET.parse(PKG / "package.xml").getroot()
    assert xml.get("format") == "3" and xml.findtext("name") == "policy_runner"
    assert xml.find("export/build_type").text == "ament_python"
    deps = {e.text for e in xml.findall("exec_depend")}
    assert {"rclpy", "launch", "launch_ros", "std_msgs", "std_srvs", "sensor_msgs",
            "geometry_msgs", "diagnostic_msgs", "lifecycle_msgs", "tf2_msgs",
            "python3-numpy", "python3-yaml"} <= deps
    assert setup_kwargs["name"] == "policy_runner" and "policy_runner" in setup_kwargs["packages"]
    installed = _installed(setup_kwargs)
    assert installed["share/ament_index/resource_index/packages/policy_runner"] == "resource/policy_runner"
    assert (PKG / "resource" / "policy_runner").is_file()
    assert "share/policy_runner/package.xml" in installed
    for path in installed.values():
        assert (PKG / path).is_file(), f"data file {path} does not exist"
    cfg = (PKG / "setup.cfg").read_text()
    assert "install_scripts=$base/lib/policy_runner" in cfg    # where ros2 run / launch_ros look


def _imports(tree: ast.AST) -> set[tuple[str, str]]:
    return {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            for a in n.names}


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _launch_file_arguments(robot: str, builder: ast.FunctionDef) -> dict[str, str]:
    """What <robot>.launch.py hands to the shared builder, by the builder's parameter names; the
    launch file does nothing else."""
    tree = ast.parse((PKG / "launch" / f"{robot}.launch.py").read_text())
    assert _imports(tree) == {(BUILDER_MODULE, builder.name)}
    assert list(_functions(tree)) == ["generate_launch_description"]
    (ret,) = [n for n in ast.walk(tree) if isinstance(n, ast.Return)]
    call = ret.value
    assert isinstance(call, ast.Call) and getattr(call.func, "id", None) == builder.name
    names = [a.arg for a in builder.args.args]
    bound = {names[i]: _const(a, {}) for i, a in enumerate(call.args)}
    bound.update({k.arg: _const(k.value, {}) for k in call.keywords})
    assert set(bound) == set(names), f"{robot}.launch.py passes {sorted(bound)}, not {names}"
    return bound


@pytest.mark.parametrize("robot", ROBOTS)
def test_launch_file_arguments_executable_and_parameters(robot, setup_kwargs):
    sys.path.insert(0, str(PKG))
    from policy_runner.node import PARAMETERS

    installed = _installed(setup_kwargs)
    assert f"share/policy_runner/launch/{robot}.launch.py" in installed, "launch file not installed"
    assert BUILDER_MODULE.split(".")[0] in setup_kwargs["packages"], "builder not installed"
    tree = ast.parse((PKG / (BUILDER_MODULE.replace(".", "/") + ".py")).read_text())
    for module, name in _imports(tree):
        assert name in LAUNCH_API.get(module, set()), f"{module}.{name} is not launch API used here"
    (builder,) = _functions(tree).values()
    env = _launch_file_arguments(robot, builder)
    assert env["robot"] == robot

    args = {_const(c.args[0], env): c for c in _calls(builder, "DeclareLaunchArgument")}
    assert set(args) == {"robot", "backend", "policy", "network_interface", "namespace", "params_file"}
    assert _const(_kw(args["robot"], "default_value"), env) == robot     # a variant: robot:=go2_proprio
    backend = args["backend"]
    choices = [_const(e, env) for e in _kw(backend, "choices").elts]
    default = _const(_kw(backend, "default_value"), env)
    assert default in choices and "mujoco" in choices
    assert set(choices) <= {"unitree", "ros2", "mujoco"}
    assert _const(_kw(args["policy"], "default_value"), env) == "current"
    for c in args.values():
        assert _const(_kw(c, "description"), env), "every argument says what it is"

    (node,) = _calls(builder, "Node")
    assert _const(_kw(node, "package"), env) == "policy_runner"
    (ns,) = _calls(_kw(node, "namespace"), "LaunchConfiguration")
    assert _const(ns.args[0], env) == "namespace"
    exe = _const(_kw(node, "executable"), env)
    scripts = [s.split("=")[0].strip() for s in setup_kwargs["entry_points"]["console_scripts"]]
    assert exe in scripts, f"executable {exe} is not a console script of setup.py ({scripts})"
    params = _kw(node, "parameters").elts
    (pf,) = _calls(params[0], "LaunchConfiguration")     # the params file argument comes first
    assert _const(pf.args[0], env) == "params_file"
    (join,) = _calls(_kw(args["params_file"], "default_value"), "PathJoinSubstitution")
    parts = join.args[0].elts
    (find,) = _calls(parts[0], "FindPackageShare")
    assert _const(find.args[0], env) == "policy_runner"
    rel = "/".join(_const(p, env) for p in parts[1:])
    assert rel == f"config/{robot}.yaml"
    assert f"share/policy_runner/{rel}" in installed, f"{rel} is not installed by setup.py"
    overrides = {_const(k, env): v for k, v in zip(params[1].keys, params[1].values)}
    assert set(overrides) == {"robot", "backend", "policy", "network_interface"}
    assert set(overrides) <= set(PARAMETERS)
    (spec_arg,) = _calls(overrides["robot"], "LaunchConfiguration")
    assert _const(spec_arg.args[0], env) == "robot"


@pytest.mark.parametrize("robot", ROBOTS)
def test_parameter_file_holds_only_node_parameters_with_valid_values(robot):
    sys.path.insert(0, str(PKG))
    from policy_runner.node import parse_parameters

    data = yaml.safe_load((PKG / "config" / f"{robot}.yaml").read_text())
    assert list(data) == ["/**"] and list(data["/**"]) == ["ros__parameters"]

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    values = dict(flat(data["/**"]["ros__parameters"]))
    assert values["robot"] == robot
    values["network_interface"] = "lo"         # the robot's NIC need not exist on this machine
    s = parse_parameters(values)               # unknown keys or wrong types raise here
    assert s.backend == ("ros2" if robot == "anymal_d" else "unitree")


def test_readme_documents_the_anymal_topic_contract_and_both_ways_to_run():
    text = (PKG / "README.md").read_text()
    for needle in ("joint_states", "imu", "joint_command", "Float64MultiArray", "q,dq,tau,kp,kd",
                   "colcon build", "ros-kilted-rclpy", "python -m policy_runner.node"):
        assert needle in text, f"README lacks {needle}"
    assert os.path.getsize(PKG / "README.md") > 2000
