"""Training configs (configs/train/*.yaml), validated on load: the algorithm's hyperparameters and
the loop's sizes. The paper's GPU profile is the default where CUDA is present, the CPU profile
elsewhere."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.config import ConfigError, Section, load_yaml
from deploy.spec import REPO_ROOT
from training.exploration import NOISE_KINDS
from training.sac import SAC_CHOICES, SAC_RANGES, SWITCH_PARAMS, SACConfig, SACConfigError
from training.symmetry import SYMMETRY_KINDS

TRAIN_DIR = REPO_ROOT / "configs" / "train"
ALGOS = ("sac", "fastdsac", "dsac_e")   # presets: configs/train/<algo>.yaml (GPU), <algo>_cpu.yaml


@dataclass(frozen=True)
class TrainConfig:
    source: str
    algo: str
    num_envs: int
    steps_per_env: int
    max_iterations: int
    learning_starts: int
    buffer_size: int
    updates_per_iteration: int
    batch_size: int
    sim_threads: int
    eval_interval: int
    eval_episodes: int
    checkpoint_interval: int
    checkpoint_keep: int
    exploration_noise: str
    sac: SACConfig
    symmetry: str = "none"
    exploration_scale: tuple[float, float] = (1.0, 1.0)
    command_relabel: float = 0.0
    start_at_command: bool = False
    upright_assist: UprightAssist | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class UprightAssist:
    """`upright_assist: {stiffness, fade: [from, to]}`: the training envs' bases are pulled upright
    (deploy.sim_world.SimWorld.set_upright_assist) at full `stiffness` N m/rad until iteration
    `from`, less and less until `to`, and not at all after: a humanoid learns to step while it
    cannot fall over, then to balance while it steps. By iteration number, so a resumed run
    continues the same schedule."""
    stiffness: float
    fade: tuple[float, float]

    @classmethod
    def parse(cls, root: Section) -> "UprightAssist":
        sec = root.sub("upright_assist")
        sec.allow(["stiffness", "fade"])
        start, end = sec.pair("fade", low=0, high=1e8)
        if end <= start:
            raise sec.error("fade", f"[from, to] needs to > from, got [{start:g}, {end:g}]")
        return cls(sec.number("stiffness", low=0.0, high=1e4, open_low=True), (start, end))

    def at(self, iteration: int) -> float:
        """The stiffness for `iteration`."""
        start, end = self.fade
        return self.stiffness * min(1.0, max(0.0, (end - iteration) / (end - start)))


def default_profile(algo: str, cuda: bool) -> Path:
    return TRAIN_DIR / (f"{algo}.yaml" if cuda else f"{algo}_cpu.yaml")


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    path = Path(path)
    root = Section(read_profile(path), path)
    loop = ["algo", "num_envs", "steps_per_env", "max_iterations", "learning_starts", "buffer_size",
            "updates_per_iteration", "batch_size", "sim_threads", "eval", "checkpoint", "sac"]
    root.allow(loop, ["exploration_noise", "exploration_scale", "symmetry", "command_relabel",
                      "start_at_command", "upright_assist"])
    algo = root.choice("algo", ALGOS)
    ints = {k: _positive_int(root, k) for k in loop[1:9]}
    ints.update(overrides or {})
    ev, ck = root.sub("eval"), root.sub("checkpoint")
    ev.allow(["interval", "episodes"])
    ck.allow(["interval", "keep"])
    return TrainConfig(source=str(path), algo=algo, **ints,
                       eval_interval=_positive_int(ev, "interval"),
                       eval_episodes=_positive_int(ev, "episodes"),
                       checkpoint_interval=_positive_int(ck, "interval"),
                       checkpoint_keep=_positive_int(ck, "keep"),
                       exploration_noise=root.choice("exploration_noise", NOISE_KINDS, "white"),
                       sac=sac_config(root.sub("sac").data, path, "sac"),
                       symmetry=root.choice("symmetry", SYMMETRY_KINDS, "none"),
                       exploration_scale=_scale_range(root),
                       command_relabel=root.number("command_relabel", low=0.0, high=1.0, default=0.0),
                       start_at_command=root.get("start_at_command", bool, False),
                       upright_assist=UprightAssist.parse(root) if "upright_assist" in root.data else None)


def read_profile(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A profile's settings. `base: NAME` starts from that profile of configs/train (wherever this
    file is, so a copy of it still builds on the committed base), so a per-robot profile states only
    what differs: its keys replace the base's, its `sac:` keys the base's `sac:` keys one by one."""
    data = load_yaml(path)
    if "base" not in data:
        return data
    base = data.pop("base")
    known = sorted(p.name for p in TRAIN_DIR.glob("*.yaml"))
    if not isinstance(base, str) or base not in known:
        raise ConfigError(path, "base", f"{base!r} is not a profile in {TRAIN_DIR} "
                          f"(known: {', '.join(known)})")
    base_path = (TRAIN_DIR / base).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(path, "base", f"{base} leads back to this profile (a cycle)")
    merged = read_profile(base_path, seen + (path.resolve(),))
    for key, value in data.items():
        merged[key] = {**merged[key], **value} if key == "sac" and isinstance(value, dict) \
            and isinstance(merged.get(key), dict) else value
    return merged


def _scale_range(sec: Section) -> tuple[float, float]:
    low, high = sec.pair("exploration_scale", [1.0, 1.0], low=1e-3, high=1e3)
    return low, high


# The largest each loop size may be: far above the GPU profile's (8192 envs, 5M transitions,
# 8192 batch), low enough that an exponent typo is refused instead of allocating the machine away.
INT_LIMITS = {"num_envs": 1 << 17, "steps_per_env": 10_000, "max_iterations": 100_000_000,
              "learning_starts": 10_000_000, "buffer_size": 1 << 30, "updates_per_iteration": 100_000,
              "batch_size": 1 << 20, "sim_threads": 1024, "interval": 100_000_000,
              "episodes": 100_000, "keep": 10_000}


def _positive_int(sec: Section, key: str) -> int:
    return sec.integer(key, low=0 if key == "sim_threads" else 1, high=INT_LIMITS[key])


def sac_config(data: Any, file: str | Path, path: str = "sac") -> SACConfig:
    """The one SACConfig parser, for a profile's `sac:` section and a checkpoint's recorded config:
    unknown keys, wrong types, numbers outside SAC_RANGES and unknown choices are refused naming
    the file, the key and the allowed values."""
    sec = Section(data, file, path)
    fields = {f.name: f for f in dataclasses.fields(SACConfig)}
    sec.allow([], list(fields))
    values = {}
    for name, value in sec.data.items():
        default = fields[name].default
        if value is None and name in SWITCH_PARAMS:     # a checkpoint records switches off as None
            continue
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise sec.error(name, f"expected a list of positive layer widths, got {value!r}")
            widths = Section({name: list(value)}, sec.file, sec.path).vector(name, low=1, high=1 << 16)
            values[name] = tuple(int(v) for v in widths)
        elif isinstance(default, bool):
            values[name] = sec.get(name, bool)
        elif isinstance(default, (int, float)) or name in SWITCH_PARAMS:
            low, high, open_low = SAC_RANGES[name]
            if isinstance(default, int) and name not in SWITCH_PARAMS:
                values[name] = sec.integer(name, low=low, high=high)
            else:
                values[name] = sec.number(name, low=low, high=high, open_low=open_low)
        else:
            values[name] = sec.choice(name, SAC_CHOICES[name])
    if not 0.0 < values.get("gamma", 0.97) < 1.0:
        raise sec.error("gamma", "discount must lie in (0, 1)")
    try:
        return SACConfig(**values)
    except SACConfigError as exc:
        raise sec.error(exc.field, exc.problem) from None


def resolve_config(config: str | None, algo: str, cuda: bool) -> Path:
    if config:
        return Path(config)
    if algo not in ALGOS:
        raise ConfigError(TRAIN_DIR, "algo", f"unknown algorithm '{algo}' (known: {', '.join(ALGOS)})")
    return default_profile(algo, cuda)
