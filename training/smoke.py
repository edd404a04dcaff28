"""A few seconds of real training that leaves a real run folder (checkpoint, replay buffer), for
tests and examples of the stages after training (export, sim2sim, fine-tuning)."""
from __future__ import annotations

from pathlib import Path

from deploy.spec import RobotSpec
from training.config import TrainConfig
from training.envs.velocity import TaskConfig, VelocityEnv
from training.runner import Trainer
from training.sac import SACConfig


def smoke_config(**over) -> TrainConfig:
    base = dict(source="<smoke>", algo="sac", num_envs=16, steps_per_env=8, max_iterations=6,
                learning_starts=1, buffer_size=4096, updates_per_iteration=2, batch_size=64,
                sim_threads=1, eval_interval=10_000, eval_episodes=2, checkpoint_interval=10_000,
                checkpoint_keep=1, exploration_noise="white",
                sac=SACConfig(actor_hidden=(64, 64), critic_hidden=(64, 64)))
    base.update(over)
    return TrainConfig(**base)


def train_smoke_run(out_dir: str | Path, robot: str | RobotSpec = "go2", task: str = "velocity_flat",
                    seed: int = 0, **config) -> Path:
    """Train briefly in `out_dir` and return the final checkpoint (`checkpoints/model_*.pt`, with
    `checkpoints/replay.pt` beside it)."""
    spec = robot if isinstance(robot, RobotSpec) else RobotSpec.load(robot)
    cfg = smoke_config(**config)
    env = VelocityEnv(spec, TaskConfig.load(task, spec), cfg.num_envs, seed=seed,
                      threads=cfg.sim_threads)
    try:
        trainer = Trainer(cfg, spec, env, None, Path(out_dir), task, seed=seed)
        trainer.train(show_progress=False)
        return trainer.save()
    finally:
        env.close()
