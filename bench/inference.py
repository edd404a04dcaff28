"""Batch-1 latency of the exported actor under onnxruntime (the session PolicyBundle uses: CPU with
one intra-op thread unless onnxruntime-gpu and a GPU are present), against an ideal reference
measured in the same run: the same matrix products in numpy float32 with the same weights
(normalize, [Linear + SiLU] x layers, mean head, tanh, affine bounds; one BLAS thread). PyTorch
eager on one thread is reported as a second reference. Calls are interleaved so background load
hits all three alike. Prints one JSON object.

    python3 bench/inference.py [--iters 3000] [--device auto|cpu|gpu]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # before numpy is imported: a one-thread reference

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deploy import bundle as B  # noqa: E402
from training.actor import SquashedGaussianActor  # noqa: E402
from training.export import DeterministicPolicy, export_onnx  # noqa: E402
from training.networks import EmpiricalNormalizer  # noqa: E402

# (name, obs_dim, hidden, actions): the CPU profile (configs/train/sac_cpu.yaml, Go2 flat) and the
# paper's GPU network on Go2 rough terrain (48 + 187 height rays) and on a 37-action humanoid.
NETWORKS = [
    ("cpu_profile_go2_flat", 48, [256, 256, 128], 12),
    ("paper_gpu_go2_rough", 235, [1024, 512, 256], 12),
    ("paper_gpu_humanoid_37", 310, [1024, 512, 256], 37),
]


def build_policy(obs_dim: int, hidden: list[int], act_dim: int, seed: int) -> DeterministicPolicy:
    """A trained-looking actor: default trunk init, a mean head grown past its 0.01 init, a
    normalizer with non-trivial statistics, asymmetric bounds."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    low = -1.0 - 4.0 * torch.rand(act_dim, generator=g)
    high = 1.0 + 8.0 * torch.rand(act_dim, generator=g)
    actor = SquashedGaussianActor(obs_dim, low.numpy(), high.numpy(), hidden)
    norm = EmpiricalNormalizer(obs_dim)
    with torch.no_grad():
        actor.head.weight.normal_(0.0, 0.1, generator=g)
        norm.mean.normal_(0.0, 1.0, generator=g)
        norm.var.uniform_(0.05, 4.0, generator=g)
    return DeterministicPolicy(norm, actor).eval()


class NumpyActor:
    """The ideal reference: the same weights and operations in the same precision, nothing else."""

    def __init__(self, policy: DeterministicPolicy, dtype=np.float32):
        self.dtype = dtype
        f = lambda t: t.detach().numpy().astype(dtype).copy()  # noqa: E731
        self.mean, self.std = f(policy.normalizer.mean), f(policy.normalizer.std)
        linears = [m for m in policy.actor.trunk if isinstance(m, torch.nn.Linear)]
        self.layers = [(f(m.weight).T.copy(), f(m.bias)) for m in linears]
        d = policy.act_dim
        self.head_w, self.head_b = f(policy.actor.head.weight[:d]).T.copy(), f(policy.actor.head.bias[:d])
        self.center, self.half = f(policy.actor.center), f(policy.actor.half_range)
        self.anchor = f(policy.actor.anchor)      # a = b + c tanh(mean + x0) (training.actor)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = (x.astype(self.dtype) - self.mean) / self.std
        for w, b in self.layers:
            h = h @ w + b
            h = h / (1.0 + np.exp(-h))          # SiLU
        return self.center + self.half * np.tanh(h @ self.head_w + self.head_b + self.anchor)


def percentiles(ns: np.ndarray) -> dict:
    us = ns / 1e3
    p50, p99, p999 = np.percentile(us, [50, 99, 99.9])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2), "p99_9": round(float(p999), 2),
            "mean": round(float(us.mean()), 2)}


def bench_network(name, obs_dim, hidden, act_dim, iters, warmup, device, workdir, seed,
                  precision: str) -> dict:
    """`precision` float64 is what `sac2real export` writes (see training/export.py)."""
    dtype = {"float32": (torch.float32, np.float32), "float64": (torch.float64, np.float64)}[precision]
    policy = build_policy(obs_dim, hidden, act_dim, seed).to(dtype[0])
    onnx_path = export_onnx(policy, Path(workdir) / f"{name}_{precision}.onnx")
    session = B.make_session(onnx_path, device)
    ref = NumpyActor(policy, dtype[1])
    rng = np.random.default_rng(seed)
    obs = (ref.mean + ref.std * rng.standard_normal((iters + warmup, obs_dim))).astype(np.float32)
    out, feed_name = [B.OUTPUT_NAME], B.INPUT_NAME
    run = session.run
    times = np.zeros((3, iters), dtype=np.int64)
    worst = 0.0
    clock = time.perf_counter_ns
    with torch.inference_mode():
        for i in range(iters + warmup):
            x = obs[i:i + 1]
            xt = torch.from_numpy(x)
            t0 = clock()
            a_onnx = run(out, {feed_name: x})[0]
            t1 = clock()
            a_np = ref(x)
            t2 = clock()
            policy(xt)
            t3 = clock()
            if i >= warmup:
                times[:, i - warmup] = (t1 - t0, t2 - t1, t3 - t2)
                worst = max(worst, float(np.abs(a_onnx - a_np).max()))
    onnx_t, np_t, torch_t = (percentiles(t) for t in times)
    ratio = lambda a, b: {k: round(a[k] / b[k], 3) for k in ("p50", "p99", "p99_9")}  # noqa: E731
    params = sum(p.numel() for p in policy.actor.trunk.parameters()) + (hidden[-1] + 1) * act_dim
    return {"name": name, "precision": precision, "network": f"{obs_dim}->{hidden}->{act_dim}", "params": int(params),
            "providers": session.get_providers(),
            "onnxruntime_us": onnx_t, "numpy_reference_us": np_t, "torch_eager_us": torch_t,
            "ratio_onnx_over_numpy": ratio(onnx_t, np_t), "ratio_onnx_over_torch": ratio(onnx_t, torch_t),
            "max_abs_diff_onnx_vs_numpy": float(f"{worst:.3g}")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3000, help="timed calls per network")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_network(n, d, h, a, args.iters, args.warmup, args.device, tmp, seed, precision)
                for seed, (n, d, h, a) in enumerate(NETWORKS) for precision in ("float32", "float64")]
    print(json.dumps({
        "benchmark": "batch-1 actor inference latency (microseconds)",
        "command": " ".join(["python3", "bench/inference.py", *sys.argv[1:]]),
        "reference": "numpy in the same precision, same weights and operations, one BLAS thread, "
                     "same run, interleaved calls",
        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "torch": torch.__version__,
        "intra_op_threads": 1, "iters": args.iters, "warmup": args.warmup,
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "loadavg_1m_before": round(load_before, 2),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "networks": rows,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
