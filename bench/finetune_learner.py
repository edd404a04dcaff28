"""Fine-tuner throughput: updates/s of `FineTuner` while a robot process appends to the replay it
tails, against pretraining's updates/s (the same Learner on a filled simulation buffer) with the
same networks, batch and n-step, measured in the same run. Prints ONE JSON object.

    python3 bench/finetune_learner.py [--checkpoint models/checkpoints/go2_cpu/model.pt]
                                      [--updates 400] [--robot-hz 50]

The robot side writes synthetic transitions at --robot-hz (the Go2's policy rate by default); the
fine-tuner runs at --utd high enough that it is never starved, so what it measures is the cost of
tailing, mixing sources and checkpointing on top of the updates themselves."""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deploy.observations import ObservationPipeline  # noqa: E402
from deploy.replay import ReplayWriter, TransitionLayout  # noqa: E402
from training.finetune import FinetuneOptions, FineTuner, Schedule  # noqa: E402
from training.learner import Learner, Source  # noqa: E402
from training.replay_buffer import ReplayBuffer  # noqa: E402


def progress(msg: str) -> None:
    print(f"[bench/finetune_learner] {msg}", file=sys.stderr, flush=True)


def robot(directory: str, layout: TransitionLayout, hz: float, seconds: float) -> None:
    """A robot logging transitions at `hz` with finite rewards, for `seconds`."""
    rng = np.random.default_rng(0)
    writer = ReplayWriter(directory, layout).start()
    t0, i = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        values = {f.name: rng.normal(0, 0.5, f.shape).astype(np.float32) for f in layout.fields
                  if f.name not in ("time_ns", "dropped", "policy_id", "terminated", "truncated")}
        values.update(policy_id="bench", terminated=False, truncated=False,
                      imu_quat=np.array([1, 0, 0, 0], np.float32),
                      base_quat=np.array([1, 0, 0, 0], np.float32), reward=np.float32(0.1))
        writer.append(**values)
        i += 1
        time.sleep(max(0.0, t0 + i / hz - time.monotonic()))
    writer.close()
    os._exit(0)


def pretraining_rate(tuner: FineTuner, updates: int) -> float:
    """The pretraining path: one simulation source, the same agent config, batch and n-step."""
    obs_dim = tuner.robot.buffer.obs.shape[-1]
    act_dim = tuner.spec.num_joints
    buf = ReplayBuffer(200_000, 64, obs_dim, act_dim)
    for _ in range(200):
        buf.add(torch.randn(64, obs_dim), torch.rand(64, act_dim) * 2 - 1, torch.randn(64),
                torch.randn(64, obs_dim), torch.zeros(64, dtype=torch.bool), torch.zeros(64, dtype=torch.bool))
    learner = Learner(tuner.agent, [Source("sim", lambda n, g: buf.sample(n, tuner.n_step, tuner.gamma, g))],
                      tuner.learner.batch_size, torch.Generator().manual_seed(0))
    learner.update(20)
    t = time.perf_counter()
    learner.update(updates)
    return updates / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "models" / "checkpoints" / "go2_cpu" / "model.pt"))
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--robot-hz", type=float, default=50.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    replay = root / "replay"
    replay.mkdir()
    opts = FinetuneOptions(Path(args.checkpoint), replay, root / "ft", utd=1000.0, every=100,
                           prior="nominal", prior_steps=2048, prior_fraction=Schedule.parse("0.5"),
                           max_updates=args.updates, poll_s=0.01, chunk=25)
    progress("loading the checkpoint and rolling out the prior")
    tuner = FineTuner(opts, log=lambda line: None)
    layout = TransitionLayout.from_spec(tuner.spec, ObservationPipeline(tuner.spec).layout)
    seconds = 600.0
    writer = mp.get_context("fork").Process(target=robot, args=(str(replay), layout, args.robot_hz, seconds))
    writer.start()
    while tuner.robot.consumed.count < tuner.min_robot:    # a batch of robot data first
        tuner.robot.take_new()
        time.sleep(0.05)
    progress(f"fine-tuning {args.updates} updates while the robot logs at {args.robot_hz:g} Hz")
    t = time.perf_counter()
    tuner.run()
    finetune = args.updates / (time.perf_counter() - t)
    writer.kill()
    writer.join()
    progress("pretraining's update rate with the same networks")
    pretrain = pretraining_rate(tuner, args.updates)
    print(json.dumps({"checkpoint": args.checkpoint, "batch_size": tuner.learner.batch_size,
                      "n_step": tuner.n_step, "updates": args.updates,
                      "robot_transitions_consumed": tuner.robot.consumed.count,
                      "finetune_updates_per_s": round(finetune, 1),
                      "pretraining_updates_per_s": round(pretrain, 1),
                      "finetune_vs_pretraining": round(finetune / pretrain, 3),
                      "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
