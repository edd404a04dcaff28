"""The whole pretraining loop: it learns, it resumes exactly, and it refuses bad input."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from train_profiles import cpu_profile_with

from deploy.config import ConfigError
from deploy.observations import projected_gravity
from deploy.spec import RobotSpec
from training.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from training.config import TrainConfig, load_train_config
from training.envs.gym_adapter import GymVecEnv
from training.envs.velocity import TaskConfig, VelocityEnv
from training.runner import Trainer
from training.sac import SAC, NonFiniteError, SACConfig
from training.smoke import smoke_config


def _cfg(**over) -> TrainConfig:
    base = dict(num_envs=4, max_iterations=4, updates_per_iteration=4, batch_size=32, sim_threads=2,
                sac=SACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32)))
    return smoke_config(**{**base, **over})


def _go2_trainer(tmp_path, cfg, name):
    spec = RobotSpec.load("go2")
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), cfg.num_envs, seed=3, threads=2)
    return Trainer(cfg, spec, env, None, tmp_path / name, "velocity_flat", seed=3)


@pytest.mark.parametrize("noise,symmetry,scale,relabel", [
    ("white", "none", (1.0, 1.0), 0.0), ("pink", "none", (1.0, 1.0), 0.0),
    ("white", "mirror", (0.5, 3.0), 0.0), ("pink", "mirror", (1.0, 1.0), 0.5)])
def test_resume_is_exact(tmp_path, noise, symmetry, scale, relabel):
    """N iterations, save, load into fresh objects, M more == N + M without the interruption:
    bit for bit, MuJoCo physics, randomization, the exploration noise's sequence and per-env
    multipliers, the mirror augmentation's and the command relabeling's draws included."""
    cfg = _cfg(exploration_noise=noise, symmetry=symmetry, exploration_scale=scale,
               command_relabel=relabel)
    straight = _go2_trainer(tmp_path, cfg, "straight")
    straight.train(max_iterations=6, show_progress=False)

    first = _go2_trainer(tmp_path, cfg, "split")
    first.train(max_iterations=3, show_progress=False)          # saves at its end
    second = _go2_trainer(tmp_path, cfg, "resumed")
    second.resume(tmp_path / "split" / "checkpoints" / "latest.pt")
    assert second.progress.iteration == 3
    second.train(max_iterations=6, show_progress=False)

    a, b = straight.agent.state_dict(), second.agent.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.progress.env_steps == second.progress.env_steps
    assert torch.equal(straight.obs, second.obs)
    assert torch.equal(straight.buffer.obs, second.buffer.obs)
    assert straight.buffer.extras.keys() == second.buffer.extras.keys() == \
        ({"velocity", "air", "base"} if relabel else set())
    for name, x in straight.buffer.extras.items():
        assert torch.equal(x, second.buffer.extras[name]), name


def test_mujoco_env_state_round_trips(tmp_path):
    """The velocity env's checkpointed state (physics, task timers, randomized parameters, RNG)
    restores into a fresh env exactly: the same state, observation and next random draws."""
    spec = RobotSpec.load("go2")
    task = TaskConfig.load("velocity_flat", spec)
    task = dataclasses.replace(task, randomization=dataclasses.replace(    # latency's state too
        task.randomization, action_latency_s=(0.0, 0.02)))
    make = lambda: VelocityEnv(spec, task, 4, seed=3, threads=2)  # noqa: E731
    env = make()
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        env.step(rng.uniform(-1, 1, (4, 12)))
    restored = make()
    restored.reset(seed=99)
    restored.load_state_dict(env.state_dict())
    for a, b in zip(env.world.get_state(), restored.world.get_state()):
        assert np.array_equal(a, b)
    for name in VelocityEnv._ARRAYS:
        assert np.array_equal(getattr(env, name), getattr(restored, name)), name
    for a, b in zip(env.world.shards, restored.world.shards):   # randomized physics written back
        for field in ("geom_friction", "body_mass", "actuator_gainprm", "actuator_forcerange"):
            assert np.array_equal(getattr(a.model, field), getattr(b.model, field)), field
    assert np.array_equal(env.world.read_state().joint_pos, restored.world.read_state().joint_pos)
    assert env.rng.random() == restored.rng.random()


def test_checkpoint_holds_what_fine_tuning_needs(tmp_path):
    trainer = _go2_trainer(tmp_path, _cfg(), "run")
    trainer.train(max_iterations=2, show_progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "model_0000002.pt", trainer.spec)
    model = ckpt["agent"]["model"]
    for key in ("actor.head.weight", "critic.q.net.0.weight", "critic.q_target.net.0.weight",
                "temperature.log_alpha", "obs_norm.mean", "obs_norm.var", "num_updates"):
        assert key in model, key
    for opt in ("actor_opt", "critic_opt", "alpha_opt"):
        assert ckpt["agent"][opt]["state"], opt
    assert ckpt["robot"]["hash"] == trainer.spec.hash
    assert ckpt["progress"]["updates"] == 4 and ckpt["rng"]["torch"] is not None
    assert [e["name"] for e in ckpt["obs_layout"]][0] == "base_lin_vel"


def test_checkpoint_from_another_robot_spec_is_refused(tmp_path):
    trainer = _go2_trainer(tmp_path, _cfg(), "run")
    path = trainer.save()
    with pytest.raises(CheckpointError, match=r"trained for robot 'go2' .* this run uses 'anymal_d'"):
        load_checkpoint(path, RobotSpec.load("anymal_d"))


class _PoisonedEnv(GymVecEnv):
    """Pendulum whose observation turns NaN after a few steps (a broken sensor in a sim)."""

    def __init__(self, at_step: int):
        super().__init__("Pendulum-v1", 2)
        self.at_step, self.steps = at_step, 0

    def step(self, actions):
        result = super().step(actions)
        self.steps += 1
        if self.steps >= self.at_step:
            result.obs[1, 2] = np.nan
        return result


def test_nan_observation_stops_training_naming_it_and_keeps_the_last_checkpoint(tmp_path):
    cfg = _cfg(num_envs=2, checkpoint_interval=1)
    trainer = Trainer(cfg, RobotSpec.load("go2", check_mjcf=False), _PoisonedEnv(at_step=20), None,
                      tmp_path / "run", "pendulum", seed=0)
    with pytest.raises(NonFiniteError, match=r"non-finite observation at env step \d+ \(env 1, "
                                             r"observation index 2\)"):
        trainer.train(max_iterations=10, show_progress=False)
    kept = sorted((tmp_path / "run" / "checkpoints").glob("model_*.pt"))
    assert kept and kept[-1].name == "model_0000002.pt"
    assert torch.isfinite(load_checkpoint(kept[-1])["agent"]["model"]["actor.head.weight"]).all()


@pytest.mark.slow
def test_the_whole_loop_learns_pendulum(tmp_path):
    """A random policy scores about -1200 on Pendulum-v1; this loop must pass -500 within 8k steps."""
    torch.manual_seed(0)
    env = GymVecEnv("Pendulum-v1", 4, seed=0)
    cfg = _cfg(num_envs=4, steps_per_env=1, max_iterations=2000, learning_starts=50,
               buffer_size=100_000, updates_per_iteration=2, batch_size=256,
               sac=SACConfig(actor_hidden=(64, 64), critic_hidden=(64, 64), gamma=0.99, tau=0.01,
                             init_alpha=0.1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
                             target_entropy_scale=1.0, n_step=3, init_std=0.5))
    trainer = Trainer(cfg, RobotSpec.load("go2", check_mjcf=False), env, None, tmp_path / "run",
                      "pendulum", seed=0)
    random_returns = _random_policy_returns()
    trainer.train(show_progress=False)
    learned = float(np.mean(trainer.progress.recent_returns[-8:]))
    assert max(random_returns) < -500 < learned, (random_returns, learned)


def _random_policy_returns() -> list[float]:
    env = GymVecEnv("Pendulum-v1", 4, seed=1)
    env.reset()
    rng = np.random.default_rng(1)
    returns = []
    while len(returns) < 8:
        r = env.step(rng.uniform(env.action_low, env.action_high, (4, 1)))
        if "episode" in r.info:
            returns += list(r.info["episode"]["return"])
    return returns


# ---- bad input ------------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("sig, reader_gone", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_a_stop_checkpoints_the_iteration_it_stopped_at_and_the_run_resumes_there(tmp_path, sig,
                                                                                    reader_gone):
    """A session's end or a scheduler's SIGTERM must not cost the iterations since the last
    periodic checkpoint (every 1000 here, never reached). Nor must Ctrl-C on `train | tee log`,
    where tee is gone before the trainer prints its notice: the reader of the trainer's stdout and
    stderr pipe closes it first, then SIGINT."""
    cfg = cpu_profile_with(tmp_path / "tiny.yaml", num_envs=4, steps_per_env=4, batch_size=32,
                           updates_per_iteration=2, learning_starts=1, buffer_size=20000,
                           eval={"interval": 1000, "episodes": 1},
                           checkpoint={"interval": 1000, "keep": 2},
                           sac={"actor_hidden": [32, 32], "critic_hidden": [32, 32]})
    out = tmp_path / "run"
    train = [sys.executable, "-m", "deploy.cli", "train", "--robot", "go2", "--config", str(cfg),
             "--out", str(out), "--no-progress"]
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([*train, "--steps", "10000000"], stdout=write_end, stderr=write_end)
    os.close(write_end)
    console = os.fdopen(read_end, "r")
    for line in console:
        if line.startswith("it "):        # a log line every 50 iterations: it is training
            break
    if reader_gone:
        console.close()
    proc.send_signal(sig)
    proc.wait(timeout=120)
    printed = "" if reader_gone else console.read()
    if not reader_gone:
        console.close()
    assert proc.returncode == 128 + sig, printed
    latest = out / "checkpoints" / "latest.pt"
    stopped = load_checkpoint(resolve_checkpoint(latest), RobotSpec.load("go2"))
    it = stopped["progress"]["iteration"]
    assert it >= 50
    if not reader_gone:
        assert f"stopped by {sig.name} at iteration {it}" in printed

    resumed = _cli(*train[3:], "--resume", str(latest), "--steps", str((it + 2) * 16))
    assert resumed.returncode == 0, resumed.stderr
    again = load_checkpoint(resolve_checkpoint(latest), RobotSpec.load("go2"))
    assert again["progress"]["iteration"] == it + 2


@pytest.mark.parametrize("args, message", [
    (["train", "--robot", "go3"], "unknown robot 'go3'"),
    (["train", "--robot", "go2", "--task", "velocity_moon"], "unknown task 'velocity_moon'"),
    (["train", "--robot", "go2", "--algo", "ppo"], "unknown algorithm 'ppo'"),
    (["train", "--robot", "g1", "--algo", "fastdsac", "--config", "configs/train/sac_cpu_g1.yaml"],
     "--algo fastdsac, but configs/train/sac_cpu_g1.yaml is a sac profile (algo: sac)"),
])
def test_unknown_names_are_refused(args, message):
    out = _cli(*args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_malformed_train_config_names_the_key(tmp_path):
    path = cpu_profile_with(tmp_path / "bad.yaml", batchsize=3, sac={"actor_lr": "fast"})
    out = _cli("train", "--robot", "go2", "--config", str(path))
    assert out.returncode == 2
    assert "bad.yaml: batchsize: unknown key; did you mean 'batch_size'" in out.stderr


def test_train_config_value_types_are_checked(tmp_path):
    path = cpu_profile_with(tmp_path / "bad.yaml", sac={"actor_hidden": [256, "wide"]})
    with pytest.raises(Exception, match=r"sac\.actor_hidden: expected a list of positive layer widths"):
        load_train_config(path)


@pytest.mark.parametrize("key,value,choices", [("exploration_noise", "brown", "white, pink"),
                                                ("symmetry", "radial", "none, mirror")])
def test_unknown_choice_names_the_choices(tmp_path, key, value, choices):
    path = cpu_profile_with(tmp_path / "bad.yaml", **{key: value})
    with pytest.raises(Exception, match=rf"{key}: '{value}' is not one of: {choices}"):
        load_train_config(path)


@pytest.mark.parametrize("bad, words", [
    ([3.0, 0.5], r"exploration_scale: low 3.0 is above high 0.5"),
    ([0.0, 1.0], r"exploration_scale\[0\]: 0.0 is outside the allowed range \[0.001, 1000\]"),
    ([1.0], r"exploration_scale: expected \[low, high\] numbers, got \[1.0\]")])
def test_exploration_scale_must_be_an_ordered_positive_pair(tmp_path, bad, words):
    path = cpu_profile_with(tmp_path / "bad.yaml", exploration_scale=bad)
    with pytest.raises(ConfigError, match=words):
        load_train_config(path)


def test_target_entropy_scale_may_be_negative_other_rates_may_not(tmp_path):
    """A negative scale is a target entropy above zero (a wider policy); a negative rate is a typo."""
    path = cpu_profile_with(tmp_path / "wide.yaml", sac={"target_entropy_scale": -0.5})
    cfg = load_train_config(path)
    agent = SAC(8, -np.ones(12), np.ones(12), cfg.sac)
    assert agent.temperature.target_entropy == pytest.approx(6.0)
    cpu_profile_with(path, sac={"target_entropy_scale": -0.5, "tau": -0.5})
    with pytest.raises(Exception, match=r"sac\.tau: -0\.5 is outside the allowed range"):
        load_train_config(path)


def test_profiles_carry_table_c9_where_the_paper_fixes_them():
    gpu = load_train_config("configs/train/sac.yaml")
    assert (gpu.num_envs, gpu.steps_per_env, gpu.batch_size, gpu.updates_per_iteration) == (8192, 24, 8192, 200)
    s = gpu.sac
    assert (s.gamma, s.tau, s.init_alpha, s.target_entropy_scale, s.n_step, s.init_std) == \
        (0.97, 0.003, 0.001, 0.167, 5, 0.15)
    assert s.actor_hidden == s.critic_hidden == (1024, 512, 256) and s.activation == "silu"
    cpu = load_train_config("configs/train/sac_cpu.yaml")
    assert dataclasses.replace(cpu.sac, actor_hidden=s.actor_hidden, critic_hidden=s.critic_hidden,
                               actor_lr=s.actor_lr, critic_lr=s.critic_lr, alpha_lr=s.alpha_lr,
                               tau=s.tau, amp=s.amp) == s


def test_held_commands_are_never_resampled():
    spec = RobotSpec.load("go2")
    held = np.array([[-0.5, 0.0, 0.0], [0.0, 0.3, 0.6]])
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 2, seed=0, commands=held)
    env.reset(seed=0)
    for _ in range(int(1.5 * spec.commands.resampling_time / spec.policy_dt)):   # past one resampling
        env.step(np.zeros((2, spec.num_joints)))
        assert np.array_equal(env.command, held)
    env.close()


def test_evaluate_reports_each_held_command(smoke_checkpoint):
    """`sac2real evaluate --command`: one row per command, with its episodes' falls, error and mean
    velocity, the error matching the command held against the velocity measured."""
    import json

    out = subprocess.run([sys.executable, "-m", "deploy.cli", "evaluate", str(smoke_checkpoint),
                          "--episodes", "2", "--command", "0.6", "0", "0", "--command", "0", "0", "0.5"],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["episodes"] == 4
    rows = report["commands"]
    assert [r["command"] for r in rows] == [[0.6, 0.0, 0.0], [0.0, 0.0, 0.5]]
    for r in rows:
        assert 0 <= r["falls"] <= 2 and len(r["mean_velocity"]) == 3
        # the mean of per-step errors is at least the error of the mean velocity (same episodes)
        gap = np.hypot(r["command"][0] - r["mean_velocity"][0], r["command"][1] - r["mean_velocity"][1])
        assert r["lin_vel_error"] >= gap - 2e-3      # both rounded to 1e-3
    # a policy this young barely moves: its error for 0.6 m/s is near 0.6, for turning in place near 0
    assert rows[0]["lin_vel_error"] > 0.3 > rows[1]["lin_vel_error"]


def test_stride_error_is_the_error_of_each_strides_mean_velocity():
    """The G1's stride tracking error (its gait clock's period): recomputed from the base velocities
    the env read each tick, a moving mean over one stride against the held command, from the first
    whole stride to the episode's end. Sway within a stride cancels there, so it is below the
    per-tick error."""
    spec = RobotSpec.load("g1")
    task = dataclasses.replace(TaskConfig.load("velocity_flat", spec), episode_length_s=1.6)
    held = np.array([[0.5, 0.0, 0.0], [0.0, 0.2, 0.3]])
    env = VelocityEnv(spec, task, 2, seed=0, threads=1, randomize=False, obs_noise=False, commands=held)
    env.reset(seed=0, stagger=False)
    env.world.set_upright_assist(400.0)       # stepping on the feed-forward, upright to the end
    reads, stepped, real_read, real_step = [], [], env.world.read_state, env.world.step
    env.world.read_state = lambda: reads.append(real_read()) or reads[-1]
    env.world.step = lambda n: real_step(n) or stepped.append(len(reads))
    for _ in range(env.max_steps):
        result = env.step(np.zeros((2, spec.num_joints)))
    velocities = [reads[i].base_lin_vel[:, :2] for i in stepped]    # the first read after physics
    episode = result.info["episode"]
    assert not episode["fell"].any() and list(episode["envs"]) == [0, 1]
    v = np.array(velocities)                              # (ticks, envs, 2)
    w = round(spec.gait.period / spec.policy_dt)
    for i in range(2):
        means = np.stack([np.convolve(v[:, i, k], np.ones(w) / w, "valid") for k in range(2)], 1)
        expected = np.linalg.norm(means - held[i, :2], axis=1).mean()
        assert episode["lin_vel_error_stride"][i] == pytest.approx(expected, rel=1e-9)
        assert episode["lin_vel_error_stride"][i] < episode["lin_vel_error"][i]
    env.close()


def test_start_at_command_starts_episodes_moving_at_their_command():
    """`start_at_command`: robots start moving at their command (body frame, any reset yaw); without
    it (evaluation, sim2sim) they start as the task's reset says."""
    spec = RobotSpec.load("go2")
    task = dataclasses.replace(TaskConfig.load("velocity_flat", spec), reset_base_velocity=0.0)
    for start in (True, False):
        env = VelocityEnv(spec, task, 6, seed=2, start_at_command=start)
        env.reset(seed=2, stagger=False)
        s = env.world.read_state()
        moving = np.c_[s.base_lin_vel[:, :2], s.base_ang_vel[:, 2]]
        np.testing.assert_allclose(moving, env.command if start else 0.0, atol=1e-6)
        assert np.abs(env.command).max() > 0.3
        env.close()


def test_start_at_command_must_be_a_bool_and_is_refused_for_isaaclab(tmp_path):
    path = cpu_profile_with(tmp_path / "bad.yaml", start_at_command="yes")
    with pytest.raises(Exception, match=r"bad\.yaml: start_at_command: expected bool"):
        load_train_config(path)
    cpu_profile_with(path, start_at_command=True)
    out = _cli("train", "--robot", "go2", "--backend", "isaaclab", "--config", str(path))
    assert out.returncode == 2
    assert "start_at_command: the IsaacLab backend resets with its own events" in out.stderr


def test_a_go2_sitting_on_its_rear_thighs_is_a_fall():
    """The pose a CPU-trained Go2 learned for backward commands (recorded from it): rear hips and thighs
    on the ground, base 0.22 m high and pitched just under the tilt limit. Neither the tilt nor the height
    rule catches it, so only the hip/thigh contact rule of the spec makes it a fall; a standing robot
    beside it is not one."""
    spec = RobotSpec.load("go2")
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 2, seed=0, randomize=False,
                      obs_noise=False)
    env.reset(seed=0, stagger=False)
    sitting = np.array([0.833, -0.868, 0.12, 1.003, 0.809, 2.0, -0.493, -0.42, -1.602, -2.532, -2.597, -2.627])
    pose = np.stack([sitting, spec.default_pos])
    env.world.reset(np.arange(2), joint_pos=pose,
                    base_pos=np.array([[0, 0, 0.222], [0, 0, spec.base_height]]),
                    base_quat=np.array([[0.881, -0.105, -0.461, 0.013], [1.0, 0, 0, 0]]))
    gravity = projected_gravity(env.world.read_state().base_quat)
    assert np.arccos(-gravity[0, 2]) < spec.termination.max_tilt
    assert env.world.base_pos[0, 2] > spec.termination.min_base_height
    result = env.step((pose - spec.default_pos) / spec.action_scale)
    assert result.terminated.tolist() == [True, False]
    env.close()


def test_a_g1_joint_pushed_past_its_hard_limit_is_a_fall_and_the_robots_fault():
    """MuJoCo's joint limits give: a G1 joint more than termination.joint_limit_tolerance (0.03 rad)
    past its stop ends the episode, as the safety supervisor faults the robot there by default; one
    0.02 rad past it does not. In the env: an ankle roll started 0.3 rad past its stop ends the
    episode at the first tick, which it does not without the rule; a robot beside it stands."""
    from deploy.deploy_config import DeployConfig

    spec = RobotSpec.load("g1")
    assert DeployConfig.load(spec).safety.hard_limit_tolerance == spec.termination.joint_limit_tolerance
    roll = spec.joint_names.index("right_ankle_roll_joint")
    pose = np.tile(spec.default_pos, (3, 1))
    pose[0, roll] = spec.hard_upper[roll] + 0.04
    pose[1, roll] = spec.hard_upper[roll] + 0.02
    assert spec.beyond_joint_limits(pose).tolist() == [True, False, False]
    pose[0, roll] = spec.hard_lower[roll] - 0.04
    assert spec.beyond_joint_limits(pose).tolist() == [True, False, False]
    pose = np.tile(spec.default_pos, (2, 1))
    pose[0, roll] = spec.hard_upper[roll] + 0.3
    without_rule = dataclasses.replace(spec, termination=dataclasses.replace(
        spec.termination, joint_limit_tolerance=None))
    for robot, ends in ((spec, [True, False]), (without_rule, [False, False])):
        env = VelocityEnv(robot, TaskConfig.load("velocity_flat", robot), 2, seed=0, randomize=False,
                          obs_noise=False)
        env.reset(seed=0, stagger=False)
        env.world.reset(np.arange(2), joint_pos=pose)
        assert env.step(np.zeros((2, spec.num_joints))).terminated.tolist() == ends
        env.close()


def test_the_fall_rule_is_the_gates_toppled_rule_plus_joint_limits():
    """Each rule of RobotSpec.fallen on its own row: a termination contact, a tilt just past
    max_tilt, a base just below min_base_height, a joint past its tolerance; the gate's `toppled`
    (the Controller faults on the joint) sees the first three only, and neither sees an upright
    robot just inside every bound."""
    spec = RobotSpec.load("g1")
    t = spec.termination
    contact = np.array([True, False, False, False, False])
    up_z = np.full(5, 1.0)
    up_z[1] = np.cos(t.max_tilt) - 1e-3
    up_z[4] = np.cos(t.max_tilt) + 1e-3
    height = np.full(5, t.min_base_height + 1e-3)
    height[2] = t.min_base_height - 1e-3
    pose = np.tile(spec.default_pos, (5, 1))
    pose[3, 0] = spec.hard_lower[0] - t.joint_limit_tolerance - 1e-3
    assert spec.fallen(contact, up_z, height, pose).tolist() == [True, True, True, True, False]
    assert spec.toppled(contact, up_z, height).tolist() == [True, True, True, False, False]


def test_the_g1_critic_sees_its_exact_base_velocity_and_the_exported_policy_does_not(tmp_path):
    """configs/robots/g1.yaml critic_observations: every observation the env hands the learner ends
    with the true base velocity, exact while the policy's columns are noised (their pre-reset copies
    too); a short run stores it, its checkpoint loads with a critic three inputs wider than the
    actor, and the exported bundle's observation is the policy's layout alone."""
    from training.export import export_checkpoint, load_agent

    spec = RobotSpec.load("g1")
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 2, seed=0, threads=1)
    policy = env.pipeline.dim
    assert env.obs_dim == policy + 3 and env.critic_layout.names[-1] == "base_lin_vel"
    env.reset(seed=0)
    result = env.step(np.zeros((2, spec.num_joints)))
    state = env.world.read_state()
    np.testing.assert_allclose(result.obs[:, policy:], state.base_lin_vel, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.final_obs[:, policy:], state.base_lin_vel, rtol=1e-6, atol=1e-7)
    ang = env.pipeline.layout.slice("base_ang_vel")
    assert np.abs(result.obs[:, ang] - state.base_ang_vel).max() > 1e-3        # noised
    env.close()

    cfg = _cfg(num_envs=2, max_iterations=2, symmetry="mirror", command_relabel=0.5)
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), cfg.num_envs, seed=3, threads=1)
    trainer = Trainer(cfg, spec, env, None, tmp_path / "run", "velocity_flat", seed=3)
    trainer.train(max_iterations=2, show_progress=False)
    assert trainer.buffer.obs.shape[-1] == policy + 3
    _, _, agent, layout = load_agent(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert agent.privileged_dim == 3 and sum(e["dim"] for e in layout) == policy
    assert agent.actor.trunk[0].in_features == policy
    bundle = export_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", tmp_path / "models",
                               parity_samples=50, log=lambda *a: None)
    meta = json.loads((bundle / "policy.json").read_text())
    assert meta["observation"]["dim"] == policy
    assert meta["observation"]["hash"] == env.pipeline.layout.hash
    env.close()
