"""Data-parallel SAC (training/distributed.py) with two real processes over gloo: one update on two
halves of a batch gives every process the parameters one process gets on the whole batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import distributed_worker
from training import distributed

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_group(tmp_path: Path, world: int, preset: str) -> list[dict[str, torch.Tensor]]:
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
               "GLOO_SOCKET_IFNAME": "lo"}
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.distributed_worker",
                                       str(tmp_path / f"rank{rank}.pt"), preset], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


@pytest.mark.parametrize("preset", ["sac", "fastdsac", "dsac_e"])
def test_two_processes_on_two_halves_update_like_one_process_on_the_whole_batch(tmp_path, preset):
    rank0, rank1 = _run_group(tmp_path, 2, preset)
    single = distributed_worker.run(distributed.DistInfo(), preset)
    assert rank0.keys() == single.keys() and len(single) > 20
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between the replicas"
        assert torch.allclose(rank0[key].double(), value.double(), rtol=1e-5, atol=1e-6), key
    # Without the group, rank 0 alone on its half ends elsewhere: the averaging is what matched.
    alone = distributed_worker.run(distributed.DistInfo(rank=0, world_size=2), preset)
    moved = [k for k, v in single.items() if k.startswith(("model.actor.", "model.critic.q."))
             and not torch.allclose(alone[k].double(), v.double(), rtol=1e-5, atol=1e-6)]
    assert len(moved) >= 4, moved


@pytest.mark.parametrize("environ, message", [
    ({"RANK": "2", "WORLD_SIZE": "2"}, "need 0 <= RANK < WORLD_SIZE"),
    ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two': must be a non-negative integer"),
    ({"WORLD_SIZE": "0"}, "need 0 <= RANK < WORLD_SIZE"),
])
def test_bad_torchrun_variables_are_refused(environ, message):
    with pytest.raises(ValueError, match=message):
        distributed.info_from_env(environ)


def test_defaults_are_one_process_and_batches_must_divide():
    info = distributed.info_from_env({})
    assert info == distributed.DistInfo(0, 1, 0) and info.is_main
    assert distributed.per_rank_batch(4096, distributed.DistInfo(1, 4, 1)) == 1024
    with pytest.raises(ValueError, match="batch_size 10 does not divide among 4 processes"):
        distributed.per_rank_batch(10, distributed.DistInfo(1, 4, 1))
