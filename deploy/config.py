"""Strict YAML reading: every config in the project is refused early with a message that names the
file, the key and what was expected, because a silently ignored typo in a gain or a joint name is
exactly how a robot gets hurt.

What the reader refuses before any loader sees the data, and why:
- a key given twice in one mapping (YAML keeps the last one, so `kp: 25.0` then `kp: 250.0` would
  silently run at 250);
- a NaN or an infinity anywhere (NaN fails every range comparison, so it would pass any check
  written as `value < low`, and switch the check it configures off).
Floats are read the way people write them: PyYAML follows YAML 1.1, which reads `1e9` and `1E-3`
(no dot) as strings; this reader takes them, `.5` and `+2.0` as numbers, as YAML 1.2 does."""
from __future__ import annotations

import contextlib
import contextvars
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml


class ConfigError(ValueError):
    """A config file is malformed; the message names the file, the key and the expectation."""

    def __init__(self, file: str | Path, key: str, problem: str):
        self.file = str(file)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.file}: {key}: {problem}")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, second_line: int):
        self.key, self.first_line, self.second_line = key, first_line, second_line
        super().__init__(f"duplicate key {key!r}")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads YAML 1.2 float spellings as floats."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:
                continue    # an unhashable key: SafeLoader's own error names it
        return super().construct_mapping(node, deep)


# A float with a dot or an exponent (ints are matched earlier by YAML 1.1's int resolver), plus
# YAML's .inf/.nan spellings, which load as floats so that the finite check can name them.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
                        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, refusing anything that is not one, duplicate keys and non-finite
    numbers (anywhere, inside lists too)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "<file>", "file not found")
    try:
        data = yaml.load(path.read_text(), Loader=StrictLoader)
    except _DuplicateKey as exc:
        raise ConfigError(path, str(exc.key), f"key given twice (lines {exc.first_line} and "
                          f"{exc.second_line}); YAML would keep only the last") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, "<file>", f"not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(path, "<root>", f"expected a mapping, got {type(data).__name__}")
    refuse_nonfinite(data, path)
    return data


def refuse_nonfinite(value: Any, file: str | Path, key: str = "", owner: str = "") -> None:
    """ConfigError naming the first NaN or infinity in a tree of mappings and lists (and the
    `name:` of the row that holds it, such as a joint)."""
    if isinstance(value, float) and not math.isfinite(value):
        where = f" (in '{owner}')" if owner else ""
        raise ConfigError(file, key or "<root>", f"{value} is not a finite number{where}")
    if isinstance(value, Mapping):
        name = value.get("name")
        owner = name if isinstance(name, str) else owner
        for k, v in value.items():
            refuse_nonfinite(v, file, f"{key}.{k}" if key else str(k), owner)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            refuse_nonfinite(v, file, f"{key}[{i}]", owner)


@dataclass(frozen=True)
class NumberRange:
    """The interval a number was checked against (None: unbounded on that side)."""

    low: float | None
    high: float | None
    open_low: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.open_low else '['}{low}, {high}]"


_declared: contextvars.ContextVar[dict | None] = contextvars.ContextVar("declared", default=None)


@contextlib.contextmanager
def declared_ranges() -> Iterator[dict[tuple[str, str], NumberRange]]:
    """Collect the range of every number read while active, by (file, key); a list's elements
    share their list's key. The config fuzzer (bench/fuzzing/configs.py) uses it to tell a value a
    declared range admitted from one that no range looked at."""
    ranges: dict[tuple[str, str], NumberRange] = {}
    token = _declared.set(ranges)
    try:
        yield ranges
    finally:
        _declared.reset(token)


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
               high: float | None = None, open_low: bool = False) -> float:
        """A finite number in [low, high] ((low, high] with `open_low`); None only as a default."""
        allowed = NumberRange(low, high, open_low)
        self._declare(name, allowed)
        value = self.get(name, (int, float), default)
        if value is None:
            return value
        return self._in_range(name, float(value), allowed)

    def integer(self, name: str, default: Any = ..., low: int | None = None,
                high: int | None = None) -> int:
        """An int in [low, high]."""
        allowed = NumberRange(low, high)
        self._declare(name, allowed)
        value = self.get(name, int, default)
        if value is None:
            return value
        self._in_range(name, float(value), allowed)
        return value

    def vector(self, name: str, length: int | None = None, default: Any = ...,
               low: float | None = None, high: float | None = None,
               open_low: bool = False, what: str = "") -> tuple[float, ...]:
        """A list of finite numbers, each in the range, `length` of them when given; `what`
        says what the list holds in the error message."""
        value = self.get(name, list, default)
        if value is default:
            return value
        return numbers(value, self.file, self.key(name), length, NumberRange(low, high, open_low),
                       what)

    def pair(self, name: str, default: Any = ..., low: float | None = None,
             high: float | None = None) -> tuple[float, float]:
        """A [low, high] interval with low <= high, both inside the allowed range."""
        value = self.vector(name, 2, default, low, high, what="[low, high] numbers")
        if value is default:
            return value
        if value[0] > value[1]:
            raise self.error(name, f"low {value[0]} is above high {value[1]}")
        return value

    def choice(self, name: str, allowed: Iterable[str], default: Any = ...) -> str:
        allowed = list(allowed)
        value = self.get(name, str, default)
        if value not in allowed:
            raise self.error(name, f"'{value}' is not one of: {', '.join(allowed)}")
        return value

    def sub(self, name: str, default: Any = ...) -> "Section":
        value = self.get(name, dict, default)
        return Section(value if value is not None else {}, self.file, self.key(name))

    def items(self, name: str) -> list["Section"]:
        """A list of mappings, each as a Section with an indexed key path."""
        rows = self.get(name, list)
        return [Section(row, self.file, f"{self.key(name)}[{i}]") for i, row in enumerate(rows)]

    def _declare(self, name: str, allowed: NumberRange) -> None:
        _declare(self.file, self.key(name), allowed)

    def _in_range(self, name: str, value: float, allowed: NumberRange) -> float:
        if value not in allowed:
            raise self.error(name, f"{value} is outside the allowed range {allowed}")
        return value


def numbers(value: Any, file: str | Path, key: str, length: int | None = None,
            allowed: NumberRange = NumberRange(None, None), what: str = "") -> tuple[float, ...]:
    """A list of finite numbers inside `allowed` (ConfigError naming the element otherwise)."""
    _declare(file, key, allowed)
    if not isinstance(value, list) or (length is not None and len(value) != length):
        what = what or (f"{length} numbers" if length is not None else "a list of numbers")
        raise ConfigError(file, key, f"expected {what}, got {value!r}")
    for i, v in enumerate(value):
        check_type(v, (int, float), file, f"{key}[{i}]")
        if float(v) not in allowed:
            raise ConfigError(file, f"{key}[{i}]", f"{v} is outside the allowed range {allowed}")
    return tuple(float(v) for v in value)


def _declare(file: str | Path, key: str, allowed: NumberRange) -> None:
    ranges = _declared.get()
    if ranges is not None:
        ranges[(str(file), key)] = allowed


def check_type(value: Any, kind: type | tuple, file: str | Path, key: str) -> Any:
    """`value` if it is of `kind` (bool is never an int here, and a float must be finite)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds) or (value is None and type(None) in kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(file, key, f"expected {names}, got {type(value).__name__} ({value!r})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(file, key, f"{value} is not a finite number")
    return value
