"""Strict YAML reading: every config in the project is refused early with a message that names the
file, the key and what was expected, because a silently ignored typo in a gain or a joint name is
exactly how a robot gets hurt."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


class ConfigError(ValueError):
    """A config file is malformed; the message names the file, the key and the expectation."""

    def __init__(self, file: str | Path, key: str, problem: str):
        self.file = str(file)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.file}: {key}: {problem}")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, refusing anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "<file>", "file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(path, "<file>", f"not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(path, "<root>", f"expected a mapping, got {type(data).__name__}")
    return data


class Section:
    """A view of one mapping in a config file that knows its own key path for error messages."""

    def __init__(self, data: Any, file: str | Path, path: str = ""):
        if not isinstance(data, Mapping):
            raise ConfigError(file, path or "<root>", f"expected a mapping, got {type(data).__name__}")
        self.data = data
        self.file = file
        self.path = path

    def key(self, name: str | int) -> str:
        if isinstance(name, int):
            return f"{self.path}[{name}]"
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str | int, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def allow(self, required: Iterable[str], optional: Iterable[str] = ()) -> None:
        """Refuse unknown keys (with a spelling hint) and missing required keys."""
        required, optional = list(required), list(optional)
        known = required + optional
        for k in self.data:
            if k not in known:
                hint = difflib.get_close_matches(str(k), known, n=1)
                extra = f"; did you mean '{hint[0]}'?" if hint else ""
                raise self.error(str(k), f"unknown key{extra} (allowed: {', '.join(known)})")
        for k in required:
            if k not in self.data:
                raise self.error(k, "required key is missing")

    def get(self, name: str, kind: type | tuple, default: Any = ...) -> Any:
        if name not in self.data:
            if default is ...:
                raise self.error(name, "required key is missing")
            return default
        value = self.data[name]
        return check_type(value, kind, self.file, self.key(name))

    def number(self, name: str, default: Any = ..., low: float | None = None,
               high: float | None = None) -> float:
        value = self.get(name, (int, float), default)
        if value is None:
            return value
        value = float(value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.error(name, f"{value} is outside the allowed range [{low}, {high}]")
        return value

    def choice(self, name: str, allowed: Iterable[str], default: Any = ...) -> str:
        allowed = list(allowed)
        value = self.get(name, str, default)
        if value not in allowed:
            raise self.error(name, f"'{value}' is not one of: {', '.join(allowed)}")
        return value

    def pair(self, name: str, default: Any = ...) -> tuple[float, float]:
        """A [low, high] interval with low <= high."""
        value = self.get(name, list, default)
        if value is default:
            return value
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in value):
            raise self.error(name, f"expected [low, high] numbers, got {value}")
        if value[0] > value[1]:
            raise self.error(name, f"low {value[0]} is above high {value[1]}")
        return float(value[0]), float(value[1])

    def sub(self, name: str, default: Any = ...) -> "Section":
        value = self.get(name, dict, default)
        return Section(value if value is not None else {}, self.file, self.key(name))

    def items(self, name: str) -> list["Section"]:
        """A list of mappings, each as a Section with an indexed key path."""
        rows = self.get(name, list)
        return [Section(row, self.file, f"{self.key(name)}[{i}]") for i, row in enumerate(rows)]


def check_type(value: Any, kind: type | tuple, file: str | Path, key: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds) or (value is None and type(None) in kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(file, key, f"expected {names}, got {type(value).__name__} ({value!r})")
    return value
