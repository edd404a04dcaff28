"""SAC update throughput at the paper's network and batch sizes (rsl_rl_sac.md Table C9, i.e.
configs/train/sac.yaml), for each robot's observation and action sizes, in float32 and with bf16
matrix products; against a reference measured in the same run: a bare float32 (TF32 off) and bf16
matrix product of the update's largest layer at the same batch, so the ratio says how much of the
device's dense-math rate the whole update reaches. Replay sampling is not included (random batches
already on the device). Prints ONE JSON object.

    python3 bench/gpu_updates.py [--device auto|cuda|cpu] [--updates 200] [--robots go2 g1 anymal_d]
                                 [--config configs/train/sac.yaml] [--batch N] [--hidden 1024 512 256]

Under `torchrun --nproc-per-node K` every process runs the same updates on its share of the batch
with gradients averaged (training/distributed.py); rank 0 prints. On a CPU, pass small --batch and
--hidden: the script is checked there with tiny sizes only."""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deploy.observations import ObservationPipeline  # noqa: E402
from deploy.spec import RobotSpec  # noqa: E402
from training import distributed  # noqa: E402
from training.config import load_train_config  # noqa: E402
from training.replay_buffer import Batch  # noqa: E402
from training.sac import SAC  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, n: int, device: torch.device) -> float:
    """Seconds per call of `fn` over n calls, after n // 10 + 1 warm-up calls."""
    for _ in range(n // 10 + 1):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def update_flops(obs: int, act: int, hidden: list[int], batch: int, num_q: int) -> float:
    """Matrix-product FLOPs of one update (forward 2mnk, backward twice that): critic forward on
    the batch and on the next batch (target, no backward), actor forward on the next batch (no
    backward) and on the batch with backward, critic forward+backward for the actor loss."""
    def mlp(n_in: int, n_out: int) -> float:
        dims = [n_in] + hidden + [n_out]
        return sum(2.0 * batch * a * b for a, b in zip(dims[:-1], dims[1:]))

    critic, actor = num_q * mlp(obs + act, 1), mlp(obs, 2 * act)
    return 3 * critic + critic + actor + 3 * actor + 3 * critic


def random_batch(obs: int, act: int, size: int, device: torch.device, g: torch.Generator) -> Batch:
    r = lambda *shape: torch.randn(*shape, generator=g).to(device)   # noqa: E731
    return Batch(obs=r(size, obs), actions=r(size, act).clamp(-1, 1), returns=r(size),
                 bootstrap=torch.full((size,), 0.9, device=device), next_obs=r(size, obs))


def reference(hidden: list[int], batch: int, device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of a bare product of the largest hidden layer at this batch size."""
    width = max(hidden)
    a = torch.randn(batch, width, device=device, dtype=dtype)
    w = torch.randn(width, width, device=device, dtype=dtype)
    return 2.0 * batch * width * width / timed(lambda: a @ w, n, device)


def bench_robot(name: str, cfg, device: torch.device, info: distributed.DistInfo, n: int,
                amp: str) -> dict:
    spec = RobotSpec.load(name, check_mjcf=False)
    obs = ObservationPipeline(spec).dim
    act = len(spec.joint_names)
    sac_cfg = dataclasses.replace(cfg.sac, amp=amp)
    torch.manual_seed(0)
    bound = np.ones(act)
    agent = distributed.attach(SAC(obs, -bound, bound, sac_cfg).to(device))
    per_rank = distributed.per_rank_batch(cfg.batch_size, info)
    batch = random_batch(obs, act, per_rank, device, torch.Generator().manual_seed(info.rank))
    agent.observe(batch.obs)
    seconds = timed(lambda: agent.update(batch), n, device)
    flops = update_flops(obs, act, list(sac_cfg.actor_hidden), cfg.batch_size, sac_cfg.num_q)
    return {"robot": name, "obs_dim": obs, "actions": act, "amp": amp,
            "updates_per_s": round(1.0 / seconds, 2), "samples_per_s": round(cfg.batch_size / seconds),
            "update_gflops": round(flops / seconds / 1e9, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--config", default=str(REPO / "configs/train/sac.yaml"))
    ap.add_argument("--robots", nargs="+", default=["go2", "g1", "anymal_d"])
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--batch", type=int, help="override the config's batch size (tiny CPU checks)")
    ap.add_argument("--hidden", type=int, nargs="+", help="override both networks' hidden sizes")
    args = ap.parse_args()
    device_type = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    info = distributed.init_process_group(device_type)
    device = info.device(device_type)
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = load_train_config(args.config, {"batch_size": args.batch} if args.batch else None)
    if args.hidden:
        cfg = dataclasses.replace(cfg, sac=dataclasses.replace(
            cfg.sac, actor_hidden=tuple(args.hidden), critic_hidden=tuple(args.hidden)))
    hidden = list(cfg.sac.actor_hidden)
    amps = ("none", "bf16") if device.type == "cuda" else ("none",)
    runs = [bench_robot(r, cfg, device, info, args.updates, amp) for r in args.robots for amp in amps]
    ref = {"fp32" if dt == torch.float32 else "bf16":
           round(reference(hidden, cfg.batch_size, device, dt, args.updates) / 1e9, 2)
           for dt in ((torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,))}
    for run in runs:
        peak = ref["bf16" if run["amp"] == "bf16" else "fp32"]
        run["fraction_of_reference"] = round(run["update_gflops"] / peak, 4)
    if info.is_main:
        print(json.dumps({
            "bench": "gpu_updates", "config": str(Path(args.config).relative_to(REPO))
            if Path(args.config).resolve().is_relative_to(REPO) else args.config,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
            "processes": info.world_size, "batch_size": cfg.batch_size, "hidden": hidden,
            "updates_timed": args.updates, "reference_matmul_gflops": ref, "runs": runs,
            "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
