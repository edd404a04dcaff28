"""What the IsaacLab adapter assumes about IsaacLab, and a check of it against IsaacLab's source.

IsaacLab cannot run on the project's machines (no GPU, no Isaac Sim), but its Python source is on
PyPI: the `isaaclab` wheels (2.2-2.3.x for Python 3.11, 3.0 for Python 3.12) carry `isaaclab` and
`isaaclab_tasks`. `check(USES, wheel)` reads the wheel with `ast` (never imports it) and reports each
use the source does not back: a class, function or method that is missing or takes other
parameters, an attribute no class in the hierarchy defines, an `extras` key never written, a task
id never registered. `tests/test_isaaclab_source.py` runs it on both majors and checks the
adapter's test double against the same `USES`.

`python -m training.envs.isaaclab_api WHEEL...` prints the findings for wheels at hand."""
from __future__ import annotations

import ast
import functools
import sys
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

MAJORS = ("2", "3")


@dataclass(frozen=True)
class Use:
    """One thing the adapter relies on. `qualname` is `Class`, `Class.member` or `function`,
    reached through the public module `module` (the import path the adapter or IsaacLab's own
    code uses). Kinds: class, function, method, attribute, extras_key, task, launcher_key (a
    string key the module's launcher reads), obs_terms (a config group's ObsTerm fields, in order)."""

    kind: str
    module: str
    qualname: str
    params: tuple[str, ...] = ()      # positional parameters the adapter passes, in order
    keywords: tuple[str, ...] = ()    # keyword arguments the adapter passes
    returns: int | None = None        # length of the tuple every `return` of it gives
    majors: tuple[str, ...] = MAJORS  # IsaacLab major versions this use applies to


ENV = "ManagerBasedRLEnv"
# Keep in step with training/envs/isaaclab.py; tests/test_isaaclab_source.py scans the adapter's
# attribute chains and fails on one that is not listed here.
USES: tuple[Use, ...] = (
    Use("class", "isaaclab.envs", ENV),
    Use("method", "isaaclab.envs", f"{ENV}.__init__", keywords=("cfg",)),
    Use("method", "isaaclab.envs", f"{ENV}.step", params=("action",), returns=5),
    Use("method", "isaaclab.envs", f"{ENV}.reset", keywords=("seed",), returns=2),
    Use("method", "isaaclab.envs", f"{ENV}._reset_idx", params=("env_ids",)),
    Use("method", "isaaclab.envs", f"{ENV}.close"),
    Use("attribute", "isaaclab.envs", f"{ENV}.num_envs"),
    Use("attribute", "isaaclab.envs", f"{ENV}.scene"),
    Use("attribute", "isaaclab.envs", f"{ENV}.observation_manager"),
    Use("attribute", "isaaclab.envs", f"{ENV}.action_manager"),
    Use("extras_key", "isaaclab.envs", f"{ENV}.log"),
    Use("method", "isaaclab.managers", "ObservationManager.compute"),
    Use("attribute", "isaaclab.managers", "ObservationManager.active_terms"),
    Use("attribute", "isaaclab.managers", "ObservationManager.group_obs_term_dim"),
    Use("method", "isaaclab.managers", "ActionManager.get_term", params=("name",)),
    Use("attribute", "isaaclab.managers", "ActionTerm.cfg"),
    Use("attribute", "isaaclab.envs.mdp", "JointPositionActionCfg.scale"),
    Use("method", "isaaclab.scene", "InteractiveScene.__getitem__", params=("key",)),
    Use("attribute", "isaaclab.assets", "Articulation.data", majors=("2",)),
    Use("attribute", "isaaclab.assets", "BaseArticulation.data", majors=("3",)),
    Use("attribute", "isaaclab.assets", "ArticulationData.joint_names", majors=("2",)),
    Use("attribute", "isaaclab.assets", "BaseArticulationData.joint_names", majors=("3",)),
    Use("class", "isaaclab.app", "AppLauncher"),
    Use("method", "isaaclab.app", "AppLauncher.__init__", keywords=("headless",)),
    # AppLauncher takes **kwargs; the launcher that reads them must know "headless" (3.0
    # deprecates AppLauncher and hands its arguments to the Kit launcher of isaaclab_physx).
    Use("launcher_key", "isaaclab.app.app_launcher", "headless", majors=("2",)),
    Use("launcher_key", "isaaclab_physx.app.kit_launcher", "headless", majors=("3",)),
    Use("function", "isaaclab_tasks.utils", "parse_env_cfg", params=("task_name",),
        keywords=("device", "num_envs"), majors=("2",)),
    # 3.0 takes Hydra-style selectors; the adapter passes `physics=<PHYSX_PRESET>` (below)
    Use("function", "isaaclab_tasks.utils", "parse_env_cfg", params=("task_name",),
        keywords=("device", "num_envs", "overrides"), majors=("3",)),
)

# IsaacLab 3.0's velocity tasks default to the Newton (MuJoCo-Warp) physics preset, whose joint
# order is depth-first; the specs are in PhysX's breadth-first order, so the adapter selects the
# PhysX preset of the tasks' physics PresetCfg by name (`physx`: Isaac Sim PhysX or OV PhysX,
# whichever is installed).
PHYSX_PRESET = "physx"

# The velocity task config every robot's task derives from: the names the adapter looks up in it.
VELOCITY_CFG = {"2": "isaaclab_tasks.manager_based.locomotion.velocity.velocity_env_cfg",
                "3": "isaaclab_tasks.core.velocity.velocity_env_cfg"}
POLICY_TERMS = ("base_lin_vel", "base_ang_vel", "projected_gravity", "velocity_commands", "joint_pos",
                "joint_vel", "actions", "height_scan")
USES += tuple(u for major, module in VELOCITY_CFG.items() for u in (
    Use("attribute", module, "ActionsCfg.joint_pos", majors=(major,)),
    Use("attribute", module, "ObservationsCfg.policy", majors=(major,)),
    Use("attribute", module, "MySceneCfg.robot", majors=(major,)),
    Use("obs_terms", module, "ObservationsCfg.PolicyCfg", params=POLICY_TERMS, majors=(major,)),
))
USES += (Use("attribute", VELOCITY_CFG["3"], f"RoughPhysicsCfg.{PHYSX_PRESET}", majors=("3",)),)

# The class of each object the adapter reaches from the env, by its attribute chain ("[]" is an
# index, "()" a call): the scan in the tests and the stand-in check map chains to USES with it.
# 3.x split the articulation classes into a backend factory and a Base* class holding the API.
CHAIN_CLASSES = {
    "env": (ENV,),
    "env.observation_manager": ("ObservationManager",),
    "env.action_manager": ("ActionManager",),
    "env.action_manager.get_term()": ("ActionTerm",),
    "env.action_manager.get_term().cfg": ("JointPositionActionCfg",),
    "env.scene": ("InteractiveScene",),
    "env.scene[]": ("Articulation", "BaseArticulation"),
    "env.scene[].data": ("ArticulationData", "BaseArticulationData"),
}


def task_uses(task_ids: dict) -> tuple[Use, ...]:
    """A `task` use for every IsaacLab task id in `{key: {major: id}}` (see isaaclab.TASK_IDS)."""
    return tuple(Use("task", "isaaclab_tasks", ids[major], majors=(major,))
                 for ids in task_ids.values() for major in MAJORS if ids.get(major))


class Source:
    """The Python files of an IsaacLab wheel, found by dotted module name. 2.x wheels keep each
    package under `isaaclab/source/<pkg>/<pkg>/`; 3.x wheels put it at the top."""

    def __init__(self, wheel: str):
        self.wheel = str(wheel)
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
            self.files = {n: z.read(n).decode("utf-8") for n in names if n.endswith((".py", ".pyi"))}
        self._trees: dict[str, ast.Module] = {}
        version = next((n.split("/")[0].removesuffix(".dist-info").split("-")[1] for n in names
                        if n.endswith(".dist-info/METADATA")), "?")
        self.version, self.major = version, version.split(".")[0]

    def module_path(self, module: str) -> str | None:
        top, rel = module.split(".")[0], module.replace(".", "/")
        for prefix in ("", f"isaaclab/source/{top}/"):
            for tail in (".py", "/__init__.py", "/__init__.pyi"):
                if prefix + rel + tail in self.files:
                    return prefix + rel + tail
        return None

    def tree(self, path: str) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(self.files[path], filename=path)
        return self._trees[path]

    def find(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
        """The ClassDef or FunctionDef `name` binds in `module`, following `from X import name`
        (in `__init__.py` and the lazy-export stubs `__init__.pyi` of 3.x)."""
        path = self.module_path(module)
        if path is None or depth > 8:
            return None
        paths = [path] + ([path + "i"] if path.endswith("__init__.py") and path + "i" in self.files else [])
        for p in paths:
            for node in self.tree(p).body:
                if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
                    return p, node
            for node in ast.walk(self.tree(p)):
                if not isinstance(node, ast.ImportFrom):
                    continue
                bound = {a.asname or a.name: a.name for a in node.names}
                real = bound.get(name, name if "*" in bound else None)
                found = real and self.find(_absolute(module, p, node), real, depth + 1)
                if found:
                    return found
        return None

    def hierarchy(self, module: str, cls: str) -> list[tuple[str, ast.ClassDef]]:
        """The class and its IsaacLab base classes (bases from other packages are not followed)."""
        found = self.find(module, cls)
        if found is None or not isinstance(found[1], ast.ClassDef):
            return []
        path, node = found
        chain = [(path, node)]
        for base in node.bases:
            if isinstance(base, ast.Name):
                chain += self.hierarchy(_module_of(path), base.id)
        return chain

    @functools.cache
    def registered_task_ids(self, package: str) -> frozenset[str]:
        """Every `id=` given to a `register(...)` call under `package` (gymnasium registration)."""
        ids = set()
        for path in self.files:
            if f"{package}/" not in path or "/test" in path:
                continue
            for node in ast.walk(self.tree(path)):
                if isinstance(node, ast.Call) and _call_name(node) == "register":
                    ids |= {k.value.value for k in node.keywords
                            if k.arg == "id" and isinstance(k.value, ast.Constant)}
        return frozenset(ids)


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


def _module_of(path: str) -> str:
    """Dotted module name of a file in the wheel (the 2.x source prefix removed)."""
    parts = PurePosixPath(path).with_suffix("").parts
    if parts[:2] == ("isaaclab", "source"):
        parts = parts[3:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _absolute(module: str, path: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if path.endswith(("__init__.py", "__init__.pyi")) else module.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        package = package.rsplit(".", 1)[0]
    return f"{package}.{node.module}" if node.module else package


def _member(chain, name: str):
    """The first FunctionDef `name` in the class chain, with its file."""
    for path, cls in chain:
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return path, node
    return None


def _defines_attribute(chain, name: str) -> bool:
    """A property, a class-level field, or a `self.name = ...` in any method of the chain."""
    for _, cls in chain:
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name == name and _is_property(node):
                return True
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name:
                return True
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return True
        for node in ast.walk(cls):
            for target in _store_targets(node):
                if isinstance(target, ast.Attribute) and target.attr == name \
                        and getattr(target.value, "id", None) == "self":
                    return True
    return False


def _store_targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def _is_property(fn: ast.FunctionDef) -> bool:
    return any(getattr(d, "id", None) == "property" for d in fn.decorator_list)


def _writes_extras_key(chain, key: str) -> bool:
    for _, cls in chain:
        for node in ast.walk(cls):
            for target in _store_targets(node):
                if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute) \
                        and target.value.attr == "extras" and isinstance(target.slice, ast.Constant) \
                        and target.slice.value == key:
                    return True
    return False


def signature_problems(fn: ast.FunctionDef, use: Use, method: bool) -> list[str]:
    """Why a call with `use.params` by position and `use.keywords` by name would not bind."""
    a = fn.args
    positional = [p.arg for p in a.posonlyargs + a.args]
    static = any(getattr(d, "id", None) == "staticmethod" for d in fn.decorator_list)
    if method and not static:
        positional = positional[1:]
    problems = []
    if positional[:len(use.params)] != list(use.params):
        problems.append(f"positional parameters are {positional}, the adapter passes {list(use.params)}")
    named = {p.arg for p in a.args + a.kwonlyargs}
    missing_kw = [k for k in use.keywords if k not in named and a.kwarg is None]
    if missing_kw:
        problems.append(f"takes no keyword {missing_kw}")
    required = positional[len(use.params):len(positional) - len(a.defaults)]
    required += [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
    unbound = [r for r in required if r not in use.keywords]
    if unbound:
        problems.append(f"requires {unbound}, which the adapter does not pass")
    if use.returns is not None:
        sizes = {len(r.value.elts) for r in ast.walk(fn) if isinstance(r, ast.Return)
                 and isinstance(r.value, ast.Tuple)}
        if sizes != {use.returns}:
            problems.append(f"returns tuples of {sorted(sizes)} items, the adapter unpacks {use.returns}")
    return problems


def check_use(src: Source, use: Use) -> list[str]:
    """Problems with one use in one wheel; [] when the source backs it."""
    where = f"isaaclab {src.version}: {use.module}.{use.qualname}"
    if use.kind == "task":
        ok = use.qualname in src.registered_task_ids(use.module)
        return [] if ok else [f"isaaclab {src.version}: task id {use.qualname!r} is not registered"]
    if use.kind == "obs_terms":
        terms = _obs_terms(src, use)
        return [] if terms == list(use.params) else \
            [f"{where}: observation terms are {terms}, the adapter expects {list(use.params)}"]
    if use.kind == "launcher_key":
        path = src.module_path(use.module)
        found = path is not None and any(isinstance(n, ast.Constant) and n.value == use.qualname
                                         for n in ast.walk(src.tree(path)))
        return [] if found else [f"{where}: the launcher reads no {use.qualname!r} argument"]
    if use.kind in ("class", "function"):
        found = src.find(use.module, use.qualname)
        want = ast.ClassDef if use.kind == "class" else ast.FunctionDef
        if found is None or not isinstance(found[1], want):
            return [f"{where}: no such {use.kind}"]
        return [f"{where}: {p}" for p in signature_problems(found[1], use, method=False)] \
            if use.kind == "function" else []
    cls, name = use.qualname.split(".", 1)
    chain = src.hierarchy(use.module, cls)
    if not chain:
        return [f"{where}: no class {cls}"]
    if use.kind == "method":
        found = _member(chain, name)
        if found is None:
            return [f"{where}: no such method"]
        return [f"{where}: {p}" for p in signature_problems(found[1], use, method=True)]
    if use.kind == "attribute":
        return [] if _defines_attribute(chain, name) else [f"{where}: no such attribute"]
    if use.kind == "extras_key":
        return [] if _writes_extras_key(chain, name) else [f"{where}: extras[{name!r}] is never written"]
    raise ValueError(f"Use.kind {use.kind!r}: allowed class, function, method, attribute, extras_key, "
                     f"task, launcher_key, obs_terms")


@functools.lru_cache(maxsize=4)
def open_wheel(wheel: str) -> Source:
    """One parsed Source per wheel (parsing it is most of a check's time)."""
    return Source(wheel)


def _obs_terms(src: Source, use: Use) -> list[str] | None:
    """The ObsTerm fields of a nested config class, in declaration order (the group's order)."""
    outer, inner = use.qualname.split(".")
    found = src.find(use.module, outer)
    if found is None:
        return None
    cls = next((n for n in found[1].body if isinstance(n, ast.ClassDef) and n.name == inner), None)
    return None if cls is None else [
        n.targets[0].id for n in cls.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
        and _call_name(n.value) == "ObsTerm" and isinstance(n.targets[0], ast.Name)]


def check(uses, wheel: str) -> list[str]:
    """Every problem of `uses` (those for this wheel's major version) against the wheel's source."""
    src = open_wheel(str(wheel))
    return [p for use in uses if src.major in use.majors for p in check_use(src, use)]


def main(argv: list[str]) -> int:
    from training.envs.isaaclab import TASK_IDS

    bad = 0
    for wheel in argv:
        problems = check(USES + task_uses(TASK_IDS), wheel)
        print(f"{wheel}: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
        for p in problems:
            print(f"  {p}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
