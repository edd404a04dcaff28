"""One replica of the data-parallel check in tests/test_distributed.py, run as its own process with
torchrun's variables (or in the test's process as the single-process reference, WORLD_SIZE=1).

Every process rebuilds the same global batches and noise from fixed seeds and takes its rank's
equal share of the rows; every draw of the update (the actor's reparameterisation noise, FastDSAC's
sampled target) is replaced by its rank's rows of a global draw, so the group and the single
process see the same samples and the same noise."""
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
BASE = dict(actor_hidden=(32, 32), critic_hidden=(32, 32), init_alpha=0.1, max_grad_norm=0.5)
# the presets' switches: FastDSAC's critic keeps running batch statistics, DSAC-E's temperature
# rule owns a critic and an optimizer of its own; both must stay identical across the replicas
CONFIGS = {"sac": SACConfig(**BASE),
           "fastdsac": SACConfig(**BASE, actor="dem", critic="gaussian", critic_stabilizer=0.1,
                                 critic_stat_rate=0.05, dem_temperature=1.0),
           "dsac_e": SACConfig(**BASE, temperature="trajectory", entropy_budget_scale=1.0)}


def global_data(update: int) -> tuple[torch.Tensor, Batch]:
    """Observations for the normalizers and the whole batch."""
    g = torch.Generator().manual_seed(1000 + update)
    r = lambda *shape: torch.randn(*shape, generator=g)           # noqa: E731
    batch = Batch(obs=r(BATCH, OBS) * 3 + 1, actions=r(BATCH, ACT).clamp(-1, 1), returns=r(BATCH),
                  bootstrap=torch.rand(BATCH, generator=g) * 0.9, next_obs=r(BATCH, OBS) * 3 + 1)
    return r(32, OBS) * 2, batch


def rows(t: torch.Tensor, info: distributed.DistInfo) -> torch.Tensor:
    n = distributed.per_rank_batch(t.shape[0], info)
    return t[info.rank * n:(info.rank + 1) * n]


def run(info: distributed.DistInfo, preset: str = "sac") -> dict[str, torch.Tensor]:
    """UPDATES observe+update rounds on this rank's share; the agent's state afterwards."""
    torch.manual_seed(info.rank)                  # unlike initial weights: attach must fix them
    agent = distributed.attach(SAC(OBS, -np.ones(ACT), np.ones(ACT), CONFIGS[preset]))
    for update in range(UPDATES):
        obs, batch = global_data(update)
        agent.observe(rows(obs, info))
        share = Batch(**{f.name: rows(getattr(batch, f.name), info) for f in dataclasses.fields(Batch)})
        g = torch.Generator().manual_seed(2000 + update)
        draw = lambda like: rows(torch.randn((like.shape[0] * info.world_size, *like.shape[1:]),  # noqa: E731
                                             generator=g), info)
        with mock.patch("torch.randn_like", draw):
            agent.update(share)
    state = agent.full_state()
    moments = {f"{opt}.{i}.{name}": t for opt in agent.optimizers()
               for i, s in state[opt]["state"].items() for name, t in s.items()}
    return {**{f"model.{k}": v for k, v in state["model"].items()}, **moments}


if __name__ == "__main__":
    info = distributed.init_process_group("cpu")
    torch.save(run(info, sys.argv[2]), sys.argv[1])
