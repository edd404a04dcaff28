"""Config loading under bad input: one key of a real file in configs/ changed per trial.

Each trial takes one YAML file of the tree (robot specs, deploy configs, sim2sim scenario and
calibration files,
the task file, training profiles), changes it in one way, writes it to a temporary folder and loads
it with the loader the project uses for it. Changes are made on the YAML node tree, so flow style
and line numbers survive and a duplicate key can be written at all:

- non_finite: a number becomes .nan, .inf, -.inf (spelled as people write them);
- out_of_range: a number becomes 1e9, -1e9, 1.0e12, -1, 0 or 1e-300;
- wrong_type: a value becomes a string, a bool, a list, a mapping or null of the wrong kind;
- duplicate_key: a key is given twice in its mapping (with its own or another value);
- unknown_key: a key is added with a misspelled or made-up name;
- deleted_key: a key is removed;
- float_spelling: a float is rewritten in another spelling of the same number (1.5 -> 1.5e0,
  15E-1, +1.5, ...), which must load.

Outcomes: a ConfigError naming the file is `refused`; a load that succeeds is `handled` when every
changed number was read through a declared range that admits it (deploy.config.declared_ranges),
or the change was a deleted optional key or a float spelling, else `silently_accepted`. Any other
exception is `crashed`, and so is a refused float spelling (a valid value refused is a bug too)."""
from __future__ import annotations

import copy
import math
import random
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bench.fuzzing.tally import Tally
from deploy.config import ConfigError, StrictLoader, declared_ranges

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
FLOAT, INT, STR, BOOL, NULL = (f"tag:yaml.org,2002:{t}" for t in ("float", "int", "str", "bool",
                                                                   "null"))
NON_FINITE = (".nan", ".inf", "-.inf", ".NaN", "+.Inf", "-.INF")
OUT_OF_RANGE = ("1e9", "-1e9", "1.0e12", "-1", "0", "1e-300", "-1.0e-300")
KINDS = ("non_finite", "out_of_range", "wrong_type", "duplicate_key", "unknown_key",
         "deleted_key", "float_spelling")


class _Dumper(yaml.SafeDumper):
    """Writes a float spelled `1e9` plain, as the project's loader reads it."""


_Dumper.yaml_implicit_resolvers = StrictLoader.yaml_implicit_resolvers
_RESOLVE = _Dumper(None).resolve


@dataclass
class Target:
    """One config file and how the project loads it."""

    path: Path
    load: Callable[[Path], Any]
    root: Node


@dataclass
class Leaf:
    path: str               # key path as deploy.config.Section writes it: a.b[2].c
    base: str               # the parent's key path
    parent: Node
    slot: int               # index in parent.value (a (key, value) pair for mappings)

    @property
    def node(self) -> Node:
        item = self.parent.value[self.slot]
        return item[1] if isinstance(self.parent, MappingNode) else item

    def replace(self, node: Node) -> None:
        if isinstance(self.parent, MappingNode):
            self.parent.value[self.slot] = (self.parent.value[self.slot][0], node)
        else:
            self.parent.value[self.slot] = node


def fuzz(n: int, seed: int) -> Tally:
    rng = random.Random(seed)
    tally = Tally("configs")
    targets = _targets()
    with tempfile.TemporaryDirectory(prefix="fuzz-configs-") as tmp:
        shutil.copytree(CONFIGS, Path(tmp) / "configs")   # a profile may name a sibling as its base
        for i in range(n):
            target = targets[rng.randrange(len(targets))]
            kind = KINDS[i % len(KINDS)]
            root = copy.deepcopy(target.root)
            change = _mutate(rng, root, kind)
            for fallback in ("out_of_range", "wrong_type"):   # nothing of that kind in this file:
                if change is None:                              # a plain number, else any value
                    kind, change = fallback, _mutate(rng, root, fallback)
            path = Path(tmp) / target.path.relative_to(REPO)
            path.write_text(yaml.serialize(root, Dumper=_Dumper))
            describe = f"{target.path.relative_to(REPO)} {kind}: {change[0]} {change[1]}"
            tally.trial(describe, lambda: _judge(target, path, kind, change))
            path.write_text(target.path.read_text())
    return tally


def _judge(target: Target, path: Path, kind: str, change: tuple[str, str, bool]) -> str:
    key, value, numeric = change
    try:
        with declared_ranges() as ranges:
            target.load(path)
    except ConfigError as exc:
        if exc.file != str(path):
            raise AssertionError(f"the error names {exc.file}, not the file loaded") from exc
        if kind == "float_spelling":
            raise AssertionError(f"a valid float spelling was refused: {exc}") from exc
        return "refused"
    if kind in ("float_spelling", "deleted_key"):
        return "handled"
    if kind in ("out_of_range", "unknown_key") and numeric:
        allowed = _declared(ranges, str(path), key)
        return "handled" if allowed is not None and float(value) in allowed else "silently_accepted"
    return "silently_accepted"


def _declared(ranges: dict, file: str, key: str):
    """The range declared for `key` or the list that holds it (a.b[1] -> a.b)."""
    while True:
        if (file, key) in ranges:
            return ranges[(file, key)]
        if not key.endswith("]"):
            return None
        key = key[:key.rindex("[")]


# ---- mutations --------------------------------------------------------------------------------
def _mutate(rng: random.Random, root: Node, kind: str) -> tuple[str, str, bool] | None:
    """Apply one change of `kind`; (key path, new value, is a number) or None if none applies."""
    leaves = list(_leaves(root, ""))
    scalars = [leaf for leaf in leaves if isinstance(leaf.node, ScalarNode)]
    numbers = [leaf for leaf in scalars if leaf.node.tag in (INT, FLOAT)]
    maps = [leaf for leaf in leaves if isinstance(leaf.parent, MappingNode)]
    if kind in ("non_finite", "out_of_range") and numbers:
        leaf = rng.choice(numbers)
        text = rng.choice(NON_FINITE if kind == "non_finite" else OUT_OF_RANGE)
        leaf.replace(_scalar(text))
        return leaf.path, text, True
    if kind == "wrong_type" and scalars:
        leaf = rng.choice(scalars)
        node = _wrong_type(rng, leaf.node)
        leaf.replace(node)
        return leaf.path, yaml.serialize(node, Dumper=_Dumper).splitlines()[0], False
    if kind == "duplicate_key" and maps:
        leaf = rng.choice(maps)
        key, value = leaf.parent.value[leaf.slot]
        other = value if rng.random() < 0.5 else _wrong_type(rng, value) \
            if isinstance(value, ScalarNode) else value
        leaf.parent.value.insert(leaf.slot + 1 + rng.randrange(len(leaf.parent.value) - leaf.slot),
                                 (copy.deepcopy(key), copy.deepcopy(other)))
        return leaf.path, "(given twice)", False
    if kind == "unknown_key" and maps:
        leaf = rng.choice(maps)
        name = str(leaf.parent.value[leaf.slot][0].value)
        typo = rng.choice([name[:-1], name + "s", name.upper(), f"{name}_x", "extra", "kp_scale_"])
        if any(str(k.value) == typo for k, _ in leaf.parent.value) or not typo:
            typo = f"{name}_unknown"
        leaf.parent.value.append((_scalar(typo), _scalar("1.0")))
        return f"{leaf.base}.{typo}" if leaf.base else typo, "1.0", True
    if kind == "deleted_key" and maps:
        leaf = rng.choice(maps)
        del leaf.parent.value[leaf.slot]
        return leaf.path, "(deleted)", False
    if kind == "float_spelling":
        floats = [leaf for leaf in numbers if leaf.node.tag == FLOAT
                  and math.isfinite(float(leaf.node.value.replace("_", "")))]
        if floats:
            leaf = rng.choice(floats)
            text = _respell(rng, float(leaf.node.value.replace("_", "")))
            leaf.replace(_scalar(text))
            return leaf.path, text, True
    return None


def _leaves(node: Node, path: str) -> Iterator[Leaf]:
    """Every value of the tree (containers too) with its Section-style key path."""
    if isinstance(node, MappingNode):
        for i, (k, v) in enumerate(node.value):
            sub = f"{path}.{k.value}" if path else str(k.value)
            yield Leaf(sub, path, node, i)
            yield from _leaves(v, sub)
    elif isinstance(node, SequenceNode):
        for i, v in enumerate(node.value):
            sub = f"{path}[{i}]"
            yield Leaf(sub, path, node, i)
            yield from _leaves(v, sub)


def _scalar(text: str) -> ScalarNode:
    return ScalarNode(_RESOLVE(ScalarNode, text, (True, False)), text)


def _wrong_type(rng: random.Random, node: Node) -> Node:
    tag = node.tag if isinstance(node, ScalarNode) else "container"
    choices = {
        INT: ["abc", "true", "[1]", "{a: 1}", "null"],
        FLOAT: ["abc", "true", "[1.0]", "{a: 1.0}", "null", "'0.5'"],
        STR: ["12", "1.5", "true", "[x]", "{a: b}", "null"],
        BOOL: ["1", "abc", "[true]", "null", "0.0"],
    }.get(tag, ["abc", "1.0"])
    text = rng.choice(choices)
    return yaml.compose(text, Loader=StrictLoader)


def _respell(rng: random.Random, value: float) -> str:
    """The same number in another spelling a person writes."""
    spellings = [f"{value:e}", f"{value:E}", repr(value) + "e0", f"{value * 10:.17g}e-1"]
    if value >= 0:
        spellings.append("+" + repr(value))
    if 0 < abs(value) < 1:
        spellings.append(repr(value).replace("0.", ".", 1))
    if value.is_integer() and abs(value) < 1e15:
        spellings.append(f"{int(value)}e0")
    text = rng.choice(spellings)
    try:
        return text if float(text) == value else repr(value)
    except ValueError:          # repr was already in exponent form: 1.5e-07e0
        return repr(value)


# ---- the files and their loaders ---------------------------------------------------------------
def _targets() -> list[Target]:
    from deploy.deploy_config import DeployConfig
    from deploy.sim2sim.calibration import CALIBRATION_DIR, Calibration
    from deploy.sim2sim.scenarios import ScenarioFile
    from deploy.spec import RobotSpec, available_robots

    specs = {r: RobotSpec.load(r, check_mjcf=False) for r in available_robots()}
    loads: dict[Path, Callable[[Path], Any]] = {}
    for robot, spec in specs.items():
        loads[CONFIGS / "robots" / f"{robot}.yaml"] = lambda p: RobotSpec.load(p, check_mjcf=False)
        deploy = CONFIGS / "deploy" / f"{robot}.yaml"
        if deploy.is_file():
            loads[deploy] = lambda p, s=spec: DeployConfig.load(s, p)
    for path in sorted((CONFIGS / "sim2sim").glob("*.yaml")):
        spec = specs.get(path.stem, specs["go2"])
        loads[path] = lambda p, s=spec: ScenarioFile.load(p, s)
    for path in sorted(CALIBRATION_DIR.glob("*.yaml")):
        loads[path] = lambda p, s=specs[path.stem]: Calibration.load(s, p)
    try:
        from training.config import load_train_config
        from training.envs import velocity
    except ImportError:             # a robot computer without torch: deploy configs only
        pass
    else:
        for path in sorted((CONFIGS / "train").glob("*.yaml")):
            loads[path] = load_train_config
        for path in sorted((CONFIGS / "tasks").glob("*.yaml")):
            loads[path] = lambda p: _load_task(velocity, p, specs)
    targets = []
    for path, load in loads.items():
        load(path)                  # the file as committed must load
        targets.append(Target(path, load, yaml.compose(path.read_text(), Loader=StrictLoader)))
    return targets


def _load_task(velocity: Any, path: Path, specs: dict) -> None:
    """TaskConfig.load reads configs/tasks/<name>.yaml (through deploy.rewards.task_section, which
    the robot's reward path shares): point it at the changed copy, for every robot (each reads its
    own reward section)."""
    with _tasks_dir(path.parent):
        for spec in specs.values():
            velocity.TaskConfig.load(path.stem, spec)


@contextmanager
def _tasks_dir(directory: Path) -> Iterator[None]:
    import deploy.rewards as rewards
    saved = rewards.TASKS_DIR
    rewards.TASKS_DIR = directory
    try:
        yield
    finally:
        rewards.TASKS_DIR = saved
