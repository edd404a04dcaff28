"""One replica of the data-parallel check in tests/test_distributed.py, run as its own process with
torchrun's variables (or in the test's process as the single-process reference, WORLD_SIZE=1).

Every process rebuilds the same global batches and reparameterisation noise from fixed seeds and
takes its rank's equal share of the rows; the actor's draws are replaced by those rows, so the
group and the single process see the same samples and the same noise."""
from __future__ import annotations

import dataclasses
import sys
from unittest import mock

import numpy as np
import torch

from training import distributed
from training.replay_buffer import Batch
from training.sac import SAC, SACConfig

OBS, ACT, BATCH, UPDATES = 7, 3, 64, 3
CFG = SACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), init_alpha=0.1, max_grad_norm=0.5)


def global_data(update: int) -> tuple[torch.Tensor, Batch, list[torch.Tensor]]:
    """Observations for the normalizers, the whole batch and the actor's two noise draws."""
    g = torch.Generator().manual_seed(1000 + update)
    r = lambda *shape: torch.randn(*shape, generator=g)           # noqa: E731
    batch = Batch(obs=r(BATCH, OBS) * 3 + 1, actions=r(BATCH, ACT).clamp(-1, 1), returns=r(BATCH),
                  bootstrap=torch.rand(BATCH, generator=g) * 0.9, next_obs=r(BATCH, OBS) * 3 + 1)
    return r(32, OBS) * 2, batch, [r(BATCH, ACT), r(BATCH, ACT)]


def rows(t: torch.Tensor, info: distributed.DistInfo) -> torch.Tensor:
    n = distributed.per_rank_batch(t.shape[0], info)
    return t[info.rank * n:(info.rank + 1) * n]


def run(info: distributed.DistInfo) -> dict[str, torch.Tensor]:
    """UPDATES observe+update rounds on this rank's share; the agent's state afterwards."""
    torch.manual_seed(info.rank)                  # unlike initial weights: attach must fix them
    agent = distributed.attach(SAC(OBS, -np.ones(ACT), np.ones(ACT), CFG))
    for update in range(UPDATES):
        obs, batch, noise = global_data(update)
        agent.observe(rows(obs, info))
        share = Batch(**{f.name: rows(getattr(batch, f.name), info) for f in dataclasses.fields(Batch)})
        draws = iter([rows(n, info) for n in noise])
        with mock.patch("training.actor.torch.randn_like", lambda like: next(draws)):
            agent.update(share)
    state = agent.full_state()
    moments = {f"{opt}.{i}.{name}": t for opt in ("actor_opt", "critic_opt", "alpha_opt")
               for i, s in state[opt]["state"].items() for name, t in s.items()}
    return {**{f"model.{k}": v for k, v in state["model"].items()}, **moments}


if __name__ == "__main__":
    info = distributed.init_process_group("cpu")
    torch.save(run(info), sys.argv[1])
