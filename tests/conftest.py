"""Test-session settings: one torch thread, because the suite's networks are tiny and several
processes (tests, a training job, DDS peers) share two cores, where OpenMP threads spinning for a
core they cannot get slow every update down by orders of magnitude."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch
except ModuleNotFoundError:  # deploy-only install: torch-free tests still run
    torch = None
if torch is not None:
    torch.set_num_threads(1)


if torch is not None:
    import pytest

    @pytest.fixture(scope="session")
    def exported_bundle(tmp_path_factory):
        """A Go2 bundle exported from a few-second real training run, shared by the bundle and
        registry tests (each copies it before tampering)."""
        from training.export import export_checkpoint
        from training.smoke import train_smoke_run

        ckpt = train_smoke_run(tmp_path_factory.mktemp("run"), "go2")
        return export_checkpoint(ckpt, tmp_path_factory.mktemp("policies"), log=lambda *a: None)
