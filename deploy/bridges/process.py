"""A bridge (or any helper) in a child process, for tests and benchmarks: start it, wait for its
ready line, read its status file, and end it (SIGTERM, or SIGKILL where the point is a crash),
always reaping it so no process outlives its test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def dds_test_domain(base: int = 100, span: int = 100) -> int:
    """A DDS domain for this process's tests: SAC2REAL_TEST_DOMAIN, else derived from the process
    id, so that concurrent test runs on one machine do not hear each other."""
    env = os.environ.get("SAC2REAL_TEST_DOMAIN")
    return int(env) if env else base + os.getpid() % span


class ChildProcess:
    def __init__(self, args: list[str], ready: str, status_file: str | Path | None = None,
                 timeout_s: float = 30.0, env: dict | None = None):
        self.args = args
        self.status_file = Path(status_file) if status_file else None
        self.lines: list[str] = []
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, **(env or {})},
                                     start_new_session=True)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout_s):
            out = self.output()
            self.kill()
            raise RuntimeError(f"{' '.join(args[:4])}... not ready within {timeout_s:g} s "
                               f"(exit {self.proc.poll()}):\n{out}")

    def _read(self, ready: str) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if ready in line:
                self._ready.set()
        if not self._ready.is_set():
            self._ready.set()  # exited before ready: the waiter sees poll() != None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def status(self, wait_s: float = 5.0) -> dict:
        """The child's latest status file (waits for the first one)."""
        end = time.monotonic() + wait_s
        while True:
            try:
                return json.loads(self.status_file.read_text())
            except (OSError, ValueError):
                if time.monotonic() > end:
                    raise RuntimeError(f"no status file {self.status_file}; output:\n{self.output()}")
                time.sleep(0.05)

    def wait_status(self, predicate, timeout_s: float, what: str = "condition") -> dict:
        end = time.monotonic() + timeout_s
        st = self.status()
        while not predicate(st):
            if time.monotonic() > end:
                raise AssertionError(f"{what} not reached within {timeout_s:g} s; status {st}")
            time.sleep(0.05)
            st = self.status()
        return st

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 5.0) -> int | None:
        """Signal the child's whole process group and reap it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)
        self._reader.join(1.0)
        return self.proc.returncode

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def terminate(self, timeout_s: float = 5.0) -> int | None:
        return self.kill(signal.SIGTERM, timeout_s)

    def __enter__(self) -> "ChildProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def unitree_bridge(robot: str, domain: int, status_file: str | Path, rate: float = 200.0,
                   builtin_mode: str = "", start: str = "standing", interface: str = "lo",
                   gantry: bool = False, extra: list[str] | None = None,
                   inject_file: str | Path | None = None) -> ChildProcess:
    args = [sys.executable, "-m", "deploy.bridges.unitree_dds", "--robot", robot,
            "--network-interface", interface, "--domain", str(domain), "--rate", str(rate),
            "--start", start, "--status-file", str(status_file)]
    if builtin_mode:
        args += ["--builtin-mode", builtin_mode]
    if gantry:
        args += ["--gantry"]
    if inject_file:
        args += ["--inject-file", str(inject_file)]
    return ChildProcess(args + (extra or []), "bridge ready", status_file)


def anymal_bridge(domain: int, status_file: str | Path, rate: float = 200.0,
                  namespace: str = "/anymal", start: str = "standing",
                  extra: list[str] | None = None) -> ChildProcess:
    args = [sys.executable, "-m", "deploy.bridges.anymal_ros2", "--domain", str(domain),
            "--rate", str(rate), "--namespace", namespace, "--start", start,
            "--status-file", str(status_file)]
    return ChildProcess(args + (extra or []), "bridge ready", status_file,
                        env={"ROS_DOMAIN_ID": str(domain)})
