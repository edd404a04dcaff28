"""The IsaacLab adapter and its test double against IsaacLab's real source.

The wheels are downloaded with pip (its cache makes later runs fast) and read with `ast`, never
imported. Offline, the tests skip and say so; a version that PyPI no longer serves fails."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deploy.spec import RobotSpec
from tests import isaaclab_standin
from training.envs import isaaclab
from deploy.observations import ObservationPipeline
from training.envs.isaaclab_api import (CHAIN_CLASSES, PHYSX_PRESET, POLICY_TERMS, USES, check, open_wheel,
                                        signature_problems, task_uses)

# (version, pip's --python-version): 3.x needs Python 3.12, so it is fetched as a 3.12 wheel.
WHEELS = {"2": ("2.3.2.post1", "3.11"), "3": ("3.0.0", "3.12")}
OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
           "Max retries exceeded", "ConnectTimeout", "ReadTimeout", "ProxyError")


@pytest.fixture(scope="session", params=sorted(WHEELS))
def wheel(request, tmp_path_factory) -> str:
    version, python = WHEELS[request.param]
    out = tmp_path_factory.mktemp(f"isaaclab{request.param}")
    run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                          "--python-version", python, "--retries", "1", "--timeout", "30",
                          "-d", str(out), f"isaaclab=={version}"], capture_output=True, text=True)
    if run.returncode != 0:
        if any(s in run.stderr for s in OFFLINE):
            pytest.skip(f"offline: could not download isaaclab=={version} from PyPI to read its source "
                        f"({run.stderr.strip().splitlines()[-1]})")
        pytest.fail(f"pip download isaaclab=={version} failed:\n{run.stderr}")
    return str(next(out.glob("isaaclab-*.whl")))


ALL_USES = USES + task_uses(isaaclab.TASK_IDS)


def test_every_isaaclab_use_of_the_adapter_is_in_the_source(wheel):
    assert check(ALL_USES, wheel) == []


@pytest.mark.parametrize("qualname, change, finding", [
    ("ManagerBasedRLEnv._reset_idx", {"qualname": "ManagerBasedRLEnv._reset_idxx"}, "no such method"),
    ("ObservationManager.compute", {"qualname": "ObservationManager.compute_obs"}, "no such method"),
    ("ObservationManager.active_terms", {"qualname": "ObservationManager.active_term"}, "no such attribute"),
    ("ManagerBasedRLEnv.log", {"qualname": "ManagerBasedRLEnv.logs"}, "extras['logs'] is never written"),
    ("ManagerBasedRLEnv.step", {"params": ("actions",)}, "positional parameters are ['action']"),
    ("ManagerBasedRLEnv.step", {"returns": 4}, "the adapter unpacks 4"),
    ("parse_env_cfg", {"keywords": ("device", "num_env")}, "takes no keyword ['num_env']"),
    ("headless", {"qualname": "headles"}, "the launcher reads no 'headles' argument"),
    ("ObservationsCfg.PolicyCfg", {"params": ("base_lin_vel", "base_ang_vel", "projected_gravity",
     "velocity_commands", "joint_pos_rel", "joint_vel_rel", "last_action", "height_scan")},
     "observation terms are ['base_lin_vel'"),
])
def test_a_planted_misspelling_fails_the_check(wheel, qualname, change, finding):
    uses = [dataclasses.replace(u, **change) if u.qualname == qualname else u for u in ALL_USES]
    problems = check(uses, wheel)
    assert len(problems) == 1 and finding in problems[0], problems


def test_a_misspelt_task_id_fails_the_check(wheel):
    major = open_wheel(wheel).major
    ids = {k: {**v, major: v[major].replace("Velocity", "Velocty")} if k[0] == "go2" else v
           for k, v in isaaclab.TASK_IDS.items()}
    problems = check(task_uses(ids), wheel)
    assert len(problems) == 2 and all("Velocty" in p and "not registered" in p for p in problems)


def test_version_differences_are_caught(wheel):
    """The 2.x ids are not registered by 3.x and vice versa; 3.x made `reset`'s seed keyword-only."""
    src = open_wheel(wheel)
    other = "3" if src.major == "2" else "2"
    stale = [dataclasses.replace(u, majors=(src.major,)) for u in task_uses(isaaclab.TASK_IDS)
             if other in u.majors]
    assert len(check(stale, wheel)) == len(stale)
    reset = next(u for u in USES if u.qualname.endswith(".reset"))
    positional_seed = dataclasses.replace(reset, params=("seed",), keywords=())
    assert bool(check([positional_seed], wheel)) == (src.major == "3")
    # 3.x's parse_env_cfg takes the `overrides` that select the PhysX preset; 2.x's does not
    parse3 = next(u for u in USES if u.qualname == "parse_env_cfg" and "3" in u.majors)
    assert bool(check([dataclasses.replace(parse3, majors=(src.major,))], wheel)) == (src.major == "2")


def test_the_physics_preset_the_adapter_selects_is_one_3x_defines(wheel):
    """The velocity tasks' physics PresetCfg has a `physx` variant in 3.x; a misspelt name fails."""
    preset = [u for u in USES if u.qualname.startswith("RoughPhysicsCfg.")]
    assert [u.qualname for u in preset] == [f"RoughPhysicsCfg.{PHYSX_PRESET}"]
    planted = [dataclasses.replace(u, qualname="RoughPhysicsCfg.phsyx") for u in preset]
    problems = check(planted, wheel)
    if open_wheel(wheel).major == "3":
        assert len(problems) == 1 and "no such attribute" in problems[0], problems
    else:
        assert problems == []          # 2.x tasks have no physics presets: nothing is selected


def _render(node: ast.AST) -> str | None:
    """An attribute chain as text, rooted at a name `env` or `self` (index "[]", call "()",
    `super()` as "env"); None for anything else."""
    if isinstance(node, ast.Name):
        return node.id if node.id in ("env", "self") else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super":
        return "env"
    inner = node.value if isinstance(node, (ast.Attribute, ast.Subscript)) else \
        node.func if isinstance(node, ast.Call) else None
    base = None if inner is None else _render(inner)
    if base is None:
        return None
    return f"{base}.{node.attr}" if isinstance(node, ast.Attribute) else \
        f"{base}[]" if isinstance(node, ast.Subscript) else f"{base}()"


def _env_chains(tree: ast.Module):
    """(chain, node) for every attribute chain the adapter follows from an IsaacLab env:
    `env.X` and `self.env.X` anywhere, `self.X` and `super().X` inside the env subclass; the
    attributes the adapter sets on the env itself are its own, not IsaacLab's."""
    subclass = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "PreResetObsEnv")
    inside = {id(n) for n in ast.walk(subclass)}
    own = {t.attr for n in ast.walk(subclass) for t in getattr(n, "targets", [])
           if isinstance(t, ast.Attribute) or isinstance(getattr(t, "value", None), ast.Attribute)
           for t in [t if isinstance(t, ast.Attribute) else t.value]}
    for node in ast.walk(tree):
        chain = _render(node) if isinstance(node, ast.Attribute) else None
        if chain is None:
            continue
        if chain.startswith("self.env."):
            chain = chain[len("self."):]
        elif chain.startswith("self."):
            if id(node) not in inside:
                continue
            chain = "env" + chain[len("self"):]
        if chain.startswith("env.") and chain.split(".")[1].split("[")[0].split("(")[0] not in own:
            yield chain, node


def _use_for(chain: str):
    prefix, name = chain.rsplit(".", 1)
    return next((u for cls in CHAIN_CLASSES.get(prefix, ()) for u in USES
                 if u.qualname == f"{cls}.{name}"), None)


def unlisted(source: str) -> list[str]:
    """What the adapter's source uses of IsaacLab that USES does not list, or calls otherwise."""
    tree = ast.parse(source)
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    problems = []
    for chain, node in _env_chains(tree):
        use, call = _use_for(chain), calls.get(id(node))
        if use is None:
            problems.append(f"{chain} is not in USES")
        elif call is not None and (len(call.args) != len(use.params)
                                   or not {k.arg for k in call.keywords} <= set(use.keywords)):
            problems.append(f"{chain} is called otherwise than USES lists ({use.params}, {use.keywords})")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("isaaclab"):
            problems += [f"import {node.module}.{a.name} is not in USES" for a in node.names
                         if not any(u.module == node.module and u.qualname == a.name for u in USES)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and getattr(node.func.value, "id", None) == "extras":
            key = node.args[0].value
            if not any(u.kind == "extras_key" and u.qualname.endswith(f".{key}") for u in USES):
                problems.append(f"extras[{key!r}] is not in USES")
    return problems


ADAPTER = Path(inspect.getsourcefile(isaaclab)).read_text()


def test_the_adapter_uses_nothing_the_check_does_not_cover():
    assert unlisted(ADAPTER) == []
    assert sum(1 for _ in _env_chains(ast.parse(ADAPTER))) >= 15      # the scan sees the adapter


@pytest.mark.parametrize("original, planted", [
    ("super()._reset_idx(env_ids)", "super()._reset_idxx(env_ids)"),
    ("self.env.step(actions)", "self.env.step(actions, None)"),
    ("self.env.reset(seed=seed)", "self.env.reset(seeds=seed)"),
    (".data.joint_names)", ".data.joint_name)"),
    ('extras.get("log", {})', 'extras.get("episode", {})'),
    ("from isaaclab.app import AppLauncher", "from isaaclab.app import AppLaunch"),
])
def test_a_misspelling_planted_in_the_adapter_is_found(original, planted):
    assert original in ADAPTER
    assert unlisted(ADAPTER.replace(original, planted))


def _standin_objects() -> dict[str, object]:
    spec = RobotSpec.load("go2", check_mjcf=False)
    env = isaaclab.with_pre_reset_obs(isaaclab_standin.ManagerBasedRLEnv)(spec)
    objects = {"env": env, "env.observation_manager": env.observation_manager,
               "env.action_manager": env.action_manager, "env.scene": env.scene,
               "env.action_manager.get_term()": env.action_manager.get_term(isaaclab.ACTION_TERM),
               "env.scene[]": env.scene[isaaclab.ROBOT], "env.scene[].data": env.scene[isaaclab.ROBOT].data}
    objects["env.action_manager.get_term().cfg"] = objects["env.action_manager.get_term()"].cfg
    return {cls: objects[chain] for chain, classes in CHAIN_CLASSES.items() for cls in classes}


def test_the_test_double_matches_the_same_uses():
    """Every member USES lists on a class the stand-in stands for exists there, with parameters
    that bind the adapter's call the way IsaacLab's do; extras['log'] is written on reset."""
    by_class = _standin_objects()
    checked = 0
    for use in USES:
        cls, _, name = use.qualname.partition(".")
        if cls not in by_class:
            continue
        obj = by_class[cls]
        if use.kind == "method":
            fn = getattr(type(obj), name)
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
            problems = signature_problems(tree, dataclasses.replace(use, returns=None), method=True)
            assert problems == [], f"stand-in {cls}.{name}: {problems}"
        elif use.kind == "attribute":
            assert hasattr(obj, name), f"stand-in {cls} has no {name}"
        elif use.kind == "extras_key":
            obj.reset()
            obj.step(torch.zeros(obj.num_envs, 12))
            *_, extras = obj.step(torch.zeros(obj.num_envs, 12))
            assert name in extras, f"stand-in never writes extras[{name!r}]"
        checked += 1
    assert checked == sum(1 for u in USES if u.qualname.partition(".")[0] in by_class)
    assert checked >= 12


def test_the_adapters_names_are_those_the_source_was_checked_for():
    """The action term, observation group and scene asset the adapter looks up, and the policy
    terms (renamed to the layout's entries) in the spec's order, flat and rough."""
    listed = {u.qualname for u in USES}
    assert {f"ActionsCfg.{isaaclab.ACTION_TERM}", f"ObservationsCfg.{isaaclab.POLICY_GROUP}",
            f"MySceneCfg.{isaaclab.ROBOT}"} <= listed
    spec = RobotSpec.load("go2", check_mjcf=False)
    for height_scan in (False, True):
        names = ObservationPipeline(spec, height_scan=height_scan).layout.names
        terms = POLICY_TERMS[:len(names)]
        assert [isaaclab.TERM_TO_LAYOUT.get(t, t) for t in terms] == names


def test_the_test_double_reports_isaaclabs_term_names():
    env = _standin_objects()["ObservationManager"]
    terms = env.active_terms["policy"]
    assert terms == list(POLICY_TERMS[:len(terms)]) and len(terms) == 7
