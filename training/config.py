"""Training configs (configs/train/*.yaml), validated on load: the algorithm's hyperparameters and
the loop's sizes. The paper's GPU profile is the default where CUDA is present, the CPU profile
elsewhere."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from deploy.config import ConfigError, Section, load_yaml
from deploy.spec import REPO_ROOT
from training.exploration import NOISE_KINDS
from training.sac import SACConfig
from training.symmetry import SYMMETRY_KINDS

TRAIN_DIR = REPO_ROOT / "configs" / "train"
ALGOS = ("sac",)


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_profile(algo: str, cuda: bool) -> Path:
    return TRAIN_DIR / (f"{algo}.yaml" if cuda else f"{algo}_cpu.yaml")


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    path = Path(path)
    root = Section(load_yaml(path), path)
    loop = ["algo", "num_envs", "steps_per_env", "max_iterations", "learning_starts", "buffer_size",
            "updates_per_iteration", "batch_size", "sim_threads", "eval", "checkpoint", "sac"]
    root.allow(loop, ["exploration_noise", "exploration_scale", "symmetry", "command_relabel",
                      "start_at_command"])
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
                       sac=_sac_config(root.sub("sac")),
                       symmetry=root.choice("symmetry", SYMMETRY_KINDS, "none"),
                       exploration_scale=_scale_range(root),
                       command_relabel=root.number("command_relabel", low=0.0, high=1.0, default=0.0),
                       start_at_command=root.get("start_at_command", bool, False))


def _scale_range(sec: Section) -> tuple[float, float]:
    value = sec.get("exploration_scale", list, [1.0, 1.0])
    if len(value) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in value) or value[0] > value[1]:
        raise sec.error("exploration_scale", f"expected [low, high] with 0 < low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def _positive_int(sec: Section, key: str) -> int:
    value = sec.get(key, int)
    if value < 0 or (value == 0 and key != "sim_threads"):
        raise sec.error(key, f"expected a positive integer, got {value}")
    return value


def _sac_config(sec: Section) -> SACConfig:
    fields = {f.name: f for f in dataclasses.fields(SACConfig)}
    sec.allow([], list(fields))
    values = {}
    for name, value in sec.data.items():
        default = fields[name].default
        if isinstance(default, tuple):
            if not isinstance(value, list) or not value or not all(isinstance(v, int) and v > 0 for v in value):
                raise sec.error(name, f"expected a list of positive layer widths, got {value!r}")
            values[name] = tuple(value)
        elif isinstance(default, bool):
            values[name] = sec.get(name, bool)
        elif isinstance(default, int):
            values[name] = sec.get(name, int)
        elif name == "target_entropy_scale":   # < 0: a target above zero, i.e. more exploration
            values[name] = sec.number(name)
        elif isinstance(default, float):
            values[name] = sec.number(name, low=0.0)
        else:
            values[name] = sec.get(name, str)
    from training.networks import ACTIVATIONS
    if values.get("activation", "silu") not in ACTIVATIONS:
        raise sec.error("activation", f"'{values['activation']}' is not one of: {', '.join(ACTIVATIONS)}")
    from training.sac import AMP_MODES
    if values.get("amp", "none") not in AMP_MODES:
        raise sec.error("amp", f"'{values['amp']}' is not one of: {', '.join(AMP_MODES)}")
    if not 0.0 < values.get("gamma", 0.97) < 1.0:
        raise sec.error("gamma", "discount must lie in (0, 1)")
    return SACConfig(**values)


def resolve_config(config: str | None, algo: str, cuda: bool) -> Path:
    if config:
        return Path(config)
    if algo not in ALGOS:
        raise ConfigError(TRAIN_DIR, "algo", f"unknown algorithm '{algo}' (known: {', '.join(ALGOS)})")
    return default_profile(algo, cuda)
