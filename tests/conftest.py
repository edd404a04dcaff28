"""Test-session settings: one torch thread, because the suite's networks are tiny and several
processes (tests, a training job, DDS peers) share two cores, where OpenMP threads spinning for a
core they cannot get slow every update down by orders of magnitude.

And the Go2 policy the deploy tests run: one real training run per session, exported once."""
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch
except ModuleNotFoundError:  # deploy-only install: torch-free tests still run
    torch = None
if torch is not None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smoke_checkpoint(tmp_path_factory):
    """A Go2 checkpoint from a few-second real training run. Without torch there is none: the
    tests that need it are skipped, except in CI, which installs torch."""
    if torch is None:
        if os.environ.get("CI"):
            pytest.fail("torch is not installed: no checkpoint to export")
        pytest.skip("torch not installed: no checkpoint to export")
    from training.smoke import train_smoke_run

    return train_smoke_run(tmp_path_factory.mktemp("run"), "go2")


@pytest.fixture(scope="session")
def exported_bundle(smoke_checkpoint, tmp_path_factory):
    """The smoke checkpoint exported as a bundle (float64 graph, the default)."""
    from training.export import export_checkpoint

    return export_checkpoint(smoke_checkpoint, tmp_path_factory.mktemp("policies"), log=lambda *a: None)


@pytest.fixture(scope="session")
def second_bundle(smoke_checkpoint, tmp_path_factory):
    """Another valid bundle of the same robot and layout (float32 graph, so another id): what a
    policy hot swap installs."""
    from training.export import export_checkpoint

    return export_checkpoint(smoke_checkpoint, tmp_path_factory.mktemp("policies32"),
                             log=lambda *a: None, precision="float32")


@pytest.fixture
def copy_bundle(exported_bundle, tmp_path):
    """Fresh copies of the exported bundle to tamper with: copy_bundle(root) makes
    root/go2/<id>, where a registry rooted at `root` finds it (root defaults to tmp_path)."""
    def copy(root: Path = tmp_path) -> Path:
        dst = root / "go2" / exported_bundle.name
        shutil.copytree(exported_bundle, dst)
        return dst
    return copy


@pytest.fixture
def bundle_dir(copy_bundle):
    """A fresh copy of the exported bundle for one test to tamper with."""
    return copy_bundle()


@pytest.fixture(scope="module")
def spec():
    """The Go2 spec, the robot of the exported bundle (a module may override it)."""
    from deploy.spec import RobotSpec

    return RobotSpec.load("go2")


@pytest.fixture(scope="module")
def bundle(spec, exported_bundle):
    """The exported bundle loaded for the CPU, never written to (copy_bundle for that)."""
    from deploy.bundle import PolicyBundle

    return PolicyBundle.load(exported_bundle, spec, providers="cpu")



def _missing_extra(report) -> str | None:
    """The skip reason when a report is a skip for a package that is not installed."""
    if not report.skipped or not os.environ.get("SAC2REAL_REQUIRE_EXTRAS"):
        return None
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    # launch_testing comes only with a ROS 2 install, never from PyPI: its skip stays a skip.
    if "not installed" in reason and "launch_testing" not in reason:
        return reason
    return None


def _fail_missing_extra(report) -> None:
    reason = _missing_extra(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every extra is installed: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (SAC2REAL_REQUIRE_EXTRAS=1, set by .ci/run) a test skipped because a package of the
    project's extras is missing fails instead: a dependency left out of pyproject.toml turns CI
    red rather than quietly shrinking the suite."""
    outcome = yield
    _fail_missing_extra(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (pytest.importorskip at module level)."""
    outcome = yield
    _fail_missing_extra(outcome.get_result())
