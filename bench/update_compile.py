"""Where a SAC update's time goes, and whether torch.compile shortens it (one JSON object).

    python3 bench/update_compile.py [--obs 11] [--act 3] [--hidden 256 256] [--batch 256]
                                    [--updates 300] [--device cpu|cuda]

Defaults: bench/sac_vs_sb3.py's Hopper learner (SB3's networks and batch). Reported, all from one
run on the same agent and batches: eager updates/s; the share of eager time spent in matrix
products (torch.profiler self time of mm/addmm/bmm/baddbmm), which no removal of Python or
dispatch overhead can shorten; torch.compile's one-time compile seconds and its updates/s,
alternated with eager twice so that load on the machine shows as a spread. Nothing of this is a
switch of the learner: on the 2-core CPU it was written for, the compiled update was slower
(the note of issue 20)."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sac_vs_sb3 import ours_config  # noqa: E402

from training.replay_buffer import Batch  # noqa: E402
from training.sac import SAC  # noqa: E402

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def _rate(update, batches: list[Batch], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        update(batches[i % len(batches)])
    if batches[0].obs.is_cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def _matmul_share(agent: SAC, batches: list[Batch]) -> float:
    from torch.profiler import profile
    with profile() as prof:
        for b in batches:
            agent.update(b)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--obs", type=int, default=11)
    ap.add_argument("--act", type=int, default=3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = ours_config("none")
    cfg.actor_hidden = cfg.critic_hidden = tuple(args.hidden)
    agent = SAC(args.obs, -np.ones(args.act), np.ones(args.act), cfg).to(args.device)
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g).to(args.device)   # noqa: E731
    batches = [Batch(obs=r(args.batch, args.obs), actions=r(args.batch, args.act).clamp(-1, 1),
                     returns=r(args.batch), bootstrap=torch.full((args.batch,), 0.99, device=args.device),
                     next_obs=r(args.batch, args.obs)) for _ in range(50)]
    _rate(agent.update, batches, 20)
    share = _matmul_share(agent, batches)
    t0 = time.perf_counter()
    compiled = torch.compile(agent._update)
    _rate(compiled, batches, 5)
    compile_s = time.perf_counter() - t0
    rounds = [{"eager": _rate(agent._update, batches, args.updates),
               "compiled": _rate(compiled, batches, args.updates)} for _ in range(2)]
    print(json.dumps({
        "bench": "update_compile", "device": args.device, "obs": args.obs, "act": args.act,
        "hidden": args.hidden, "batch": args.batch, "updates_per_round": args.updates,
        "matmul_share_of_eager": round(share, 3), "compile_s": round(compile_s, 1),
        "rounds": [{k: round(v, 1) for k, v in x.items()} | {"ratio": round(x["compiled"] / x["eager"], 3)}
                   for x in rounds],
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "host": {"node": platform.node(), "machine": platform.machine()}}))


if __name__ == "__main__":
    main()
