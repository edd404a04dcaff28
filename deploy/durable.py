"""Durable file operations shared by checkpoints, bundles, the registry and the replay log: a file
either keeps its old content or has the whole new one, whatever kills the process, and a rename is
on disk before anyone is told it happened."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, IO


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(directory: str | Path) -> None:
    """Make a create, rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: str | Path, text: str) -> None:
    """Write and fsync in place (for a file that is renamed into its final place afterwards)."""
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a temporary sibling with `write(file)`, fsync it, rename it over `path`, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
