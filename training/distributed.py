"""Data-parallel SAC over `torch.distributed`: one process per GPU, each with its own environments
and replay buffer, gradients averaged before every optimizer step (as RSL-RL and holosoma do).

Why this gives the same update as one process on the whole batch: every loss of `SAC._update` is a
mean over the batch, so with equal per-process batches the mean of the processes' gradients is the
gradient of the whole batch's loss; it is averaged before `optim.gradient_step` clips the norm and steps Adam,
so clipping, the moments and the Polyak targets follow identically on every process, which start
from rank 0's weights. The observation normalizers see every process's observations (all-gathered),
so they stay identical too, and so do FastDSAC's running batch statistics (the Gaussian critic's
omega and return scale: the group's mean of equal shares is the whole batch's mean). Each process
draws its own samples and reparameterisation noise.

`attach(agent)` does this to an existing agent without changing `training/sac.py`: a
post-accumulate-grad hook on each parameter of the agent's optimizers all-reduces its gradient
during `loss.backward()`, which `optim.gradient_step` calls before clipping.

Launched by `torchrun`, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT."""
from __future__ import annotations

import os
import types
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.critic import GaussianTwinCritic
from training.sac import SAC

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and evaluations."""
        return self.rank == 0

    def device(self, device_type: str) -> torch.device:
        """This process's device: its own GPU (LOCAL_RANK) under CUDA, else the CPU."""
        return torch.device(f"cuda:{self.local_rank}") if device_type == "cuda" else torch.device("cpu")


def info_from_env(environ: dict | None = None) -> DistInfo:
    """The process's place in the group from torchrun's variables (absent: a single process)."""
    environ = os.environ if environ is None else environ
    values = {}
    for name in ENV_VARS:
        raw = environ.get(name, "1" if name == "WORLD_SIZE" else "0")
        if not raw.isdigit():
            raise ValueError(f"environment variable {name}={raw!r}: must be a non-negative integer")
        values[name] = int(raw)
    info = DistInfo(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if info.world_size < 1 or info.rank >= info.world_size:
        raise ValueError(f"RANK={info.rank} WORLD_SIZE={info.world_size}: need 0 <= RANK < WORLD_SIZE")
    return info


def init_process_group(device_type: str) -> DistInfo:
    """Join the group torchrun started (NCCL on GPUs, gloo on CPUs); a no-op for one process."""
    info = info_from_env()
    if info.world_size > 1 and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                rank=info.rank, world_size=info.world_size)
    return info


def optimized_parameters(agent: SAC) -> list[torch.nn.Parameter]:
    """Every parameter one of the agent's optimizers steps, each once."""
    seen, params = set(), []
    for opt, _ in agent.optimizers().values():
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    return params


def _average_grad(param: torch.Tensor) -> None:
    dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
    param.grad.div_(dist.get_world_size())


def _gathered_observe(agent: SAC, obs: torch.Tensor) -> None:
    """The normalizers take every process's observations, in rank order, on every process."""
    parts = [torch.empty_like(obs) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, obs.contiguous())
    SAC.observe(agent, torch.cat(parts))


def _averaged_track(critic: GaussianTwinCritic, stat: torch.Tensor, value: torch.Tensor) -> None:
    """A batch statistic of the Gaussian critic, averaged over the group before it is tracked."""
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    GaussianTwinCritic._track(critic, stat, value / dist.get_world_size())


def attach(agent: SAC) -> SAC:
    """Make `agent` one replica of a data-parallel group: rank 0's weights and buffers everywhere,
    gradients averaged over the group, normalizers fed by all. A no-op without a group."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return agent
    with torch.no_grad():
        for tensor in list(agent.parameters()) + list(agent.buffers()):
            dist.broadcast(tensor, src=0)
    for param in optimized_parameters(agent):
        param.register_post_accumulate_grad_hook(_average_grad)
    agent.observe = types.MethodType(_gathered_observe, agent)
    for module in agent.modules():
        if isinstance(module, GaussianTwinCritic):
            module._track = types.MethodType(_averaged_track, module)
    return agent


def per_rank_batch(batch_size: int, info: DistInfo) -> int:
    """Each process's share of the global batch; it must divide evenly, or the averaged gradient
    would weight the processes' samples unequally."""
    if batch_size % info.world_size:
        raise ValueError(f"batch_size {batch_size} does not divide among {info.world_size} processes")
    return batch_size // info.world_size
