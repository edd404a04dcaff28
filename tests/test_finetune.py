"""Fine-tuning on robot data (training/finetune.py): the warm start, frozen normalizers, the
update-to-data ratio, gaps that cut n-step windows, lineage, and exact resumption after SIGKILL of
a real learner process while another process keeps appending to the robot replay."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from robot_logs import walk_and_log

from deploy.observations import ObservationPipeline
from deploy.replay import ReplayWriter, TransitionLayout
from deploy.spec import RobotSpec
from training.checkpoint import load_checkpoint, resolve_checkpoint
from training.finetune import Consumed, FinetuneError, FinetuneOptions, FineTuner, RobotData, Schedule


OBS_DIM = ObservationPipeline(RobotSpec.load("go2")).layout.dim


@pytest.fixture(scope="module")
def layout():
    spec = RobotSpec.load("go2")
    return TransitionLayout.from_spec(spec, ObservationPipeline(spec).layout)


def robot_transition(layout: TransitionLayout, rng: np.random.Generator, i: int,
                     terminated: bool = False, truncated: bool = False) -> dict:
    """A transition as the robot logs it, with plausible magnitudes and a finite reward."""
    values = {}
    for f in layout.fields:
        if f.name in ("time_ns", "dropped"):
            continue
        if f.name == "policy_id":
            values[f.name] = "go2-parent"
        elif f.name == "terminated":
            values[f.name] = terminated
        elif f.name == "truncated":
            values[f.name] = truncated
        elif f.name in ("imu_quat", "base_quat"):
            values[f.name] = np.array([1, 0, 0, 0], np.float32)
        else:
            values[f.name] = rng.normal(0, 0.5, f.shape).astype(np.float32)
    values["reward"] = np.float32(0.01 * (i % 17))
    return values


def write_session(directory: Path, layout: TransitionLayout, n: int, seed: int = 0,
                  fall_at: int | None = None) -> None:
    rng = np.random.default_rng(seed)
    writer = ReplayWriter(directory, layout).start()
    for i in range(n):
        writer.append(**robot_transition(layout, rng, i, terminated=i == fall_at))
    writer.close()


# ---- schedule and bookkeeping -------------------------------------------------------------------
def test_prior_fraction_schedule_falls_linearly_and_bad_text_is_refused():
    s = Schedule.parse("0.5->0@1000")
    assert (s(0), s(500), s(1000), s(5000)) == (0.5, 0.25, 0.0, 0.0)
    assert Schedule.parse("0.3")(10 ** 6) == 0.3 and str(s) == "0.5->0@1000"
    for bad in ("1.5", "nan", "0.5->0@0", "0.5->x@10", "half", "0.5->-1@10"):
        with pytest.raises(FinetuneError, match="--prior-fraction"):
            Schedule.parse(bad)


def test_consumed_ranges_merge_and_refuse_a_record_taken_twice():
    c = Consumed()
    c.add(np.array([0, 0, 0]), np.array([0, 1, 2]))
    c.add(np.array([0, 1]), np.array([3, 0]))
    assert c.ranges == [[0, 0, 3], [1, 0, 0]] and c.count == 5
    with pytest.raises(FinetuneError, match="consumed again"):
        c.add(np.array([0]), np.array([3]))


def test_robot_data_cuts_windows_at_gaps_and_keeps_falls(tmp_path, layout):
    write_session(tmp_path, layout, 10, seed=1, fall_at=4)
    write_session(tmp_path, layout, 5, seed=2)
    data = RobotData(tmp_path, None, 1000, OBS_DIM, 12, torch.device("cpu"))
    assert data.take_new() == 15 and data.consumed.ranges == [[0, 0, 9], [1, 0, 4]]
    dones, timeouts = data.buffer.dones[:15, 0], data.buffer.timeouts[:15, 0]
    assert bool(dones[4]) and not bool(timeouts[4])            # the fall: no bootstrap
    assert bool(dones[9]) and bool(timeouts[9])                # session end: cut, bootstrap
    assert int(dones.sum()) == 2                               # the open tail is not cut yet
    write_session(tmp_path, layout, 3, seed=3)
    assert data.take_new() == 3 and bool(data.buffer.timeouts[14, 0])   # cut when the next came
    assert data.buffer.rewards[:3, 0].tolist() == pytest.approx([0.0, 0.01, 0.02])


def test_a_critic_with_its_own_base_velocity_gets_it_from_the_records(tmp_path, layout):
    """A spec's critic_observations on the robot (the G1's base_lin_vel): a record's velocity
    estimate goes with its next_obs and with the next record's obs; a session's first record, with
    none before it, uses its own; a record polled later continues the previous poll's tail. The
    policy's columns are the logged ones; a term the records do not hold is refused by name."""
    from deploy.replay import Cursor, ReplayReader
    from deploy.spec import ObsTermSpec

    go2 = RobotSpec.load("go2")

    write_session(tmp_path, layout, 6, seed=1)
    write_session(tmp_path, layout, 4, seed=2)
    extra = ObservationPipeline(go2, terms=(ObsTermSpec("base_lin_vel", scale=2.0, clip=0.4),))
    data = RobotData(tmp_path, None, 1000, OBS_DIM, 12, torch.device("cpu"), extra)
    assert len(data.poll(until=Cursor(0, 2))[1]) == 3     # session 0 polled in two parts
    assert len(data.poll()[1]) == 7
    write_session(tmp_path, layout, 1, seed=3)       # another session: its own velocity again
    assert data.take_new() == 1
    logged = ReplayReader(tmp_path).load(after=Cursor())
    velocity = 2.0 * np.clip(logged.fields["base_lin_vel"], -0.4, 0.4)
    obs, nxt = data.buffer.obs[:11, 0].numpy(), data.buffer.next_obs[:11, 0].numpy()
    np.testing.assert_allclose(obs[:, :OBS_DIM], logged.obs, rtol=0, atol=0)
    np.testing.assert_allclose(nxt[:, OBS_DIM:], velocity, rtol=1e-6)
    before = np.concatenate([velocity[:1], velocity[:5], velocity[6:7], velocity[6:9], velocity[10:]])
    np.testing.assert_allclose(obs[:, OBS_DIM:], before, rtol=1e-6)
    assert np.abs(velocity).max() == pytest.approx(0.8)       # the clip and the scale applied
    with pytest.raises(FinetuneError, match="critic observation term 'base_ang_vel' is not in robot "
                                            "replay logs"):
        RobotData(tmp_path, None, 10, OBS_DIM, 12, torch.device("cpu"),
                  ObservationPipeline(go2, terms=(ObsTermSpec("base_ang_vel"),)))


def test_records_without_rewards_are_refused_naming_the_record(tmp_path, layout):
    rng = np.random.default_rng(0)
    writer = ReplayWriter(tmp_path, layout).start()
    t = robot_transition(layout, rng, 0)
    t["reward"] = np.float32("nan")
    writer.append(**t)
    writer.close()
    data = RobotData(tmp_path, None, 100, OBS_DIM, 12, torch.device("cpu"))
    with pytest.raises(FinetuneError, match=r"session 0, seq 0\) has no finite reward"):
        data.take_new()


# ---- the fine-tuner ---------------------------------------------------------------------------------
def _options(smoke_checkpoint, replay, out, **over) -> FinetuneOptions:
    base = dict(utd=0.25, every=10, prior="nominal", prior_steps=256,
                prior_fraction=Schedule.parse("0.5->0@10000"), idle_exit_s=0.0, poll_s=0.01, chunk=5)
    base.update(over)
    return FinetuneOptions(smoke_checkpoint, replay, out, **base)


def test_warm_start_keeps_everything_and_the_normalizer_does_not_move(smoke_checkpoint, tmp_path,
                                                                      layout):
    write_session(tmp_path / "replay", layout, 600)
    tuner = FineTuner(_options(smoke_checkpoint, tmp_path / "replay", tmp_path / "ft"), log=lambda s: None)
    parent = load_checkpoint(resolve_checkpoint(smoke_checkpoint))
    for name, value in parent["agent"]["model"].items():
        assert torch.equal(tuner.agent.state_dict()[name], value), name
    assert tuner.agent.critic_opt.state_dict()["state"]    # Adam moments came along
    before = {k: v.clone() for k, v in tuner.agent.state_dict().items() if "norm" in k}
    assert tuner.run() == "idle"
    assert tuner.learner.updates == 150                    # 600 robot transitions x utd 0.25
    for name, value in before.items():
        assert torch.equal(tuner.agent.state_dict()[name], value), f"{name} moved"
    moved = tuner.agent.state_dict()["actor.trunk.0.weight"]
    assert not torch.equal(moved, parent["agent"]["model"]["actor.trunk.0.weight"])
    assert tuner.learner.drawn["prior"] > 0 and tuner.learner.drawn["robot"] > tuner.learner.drawn["prior"]


def test_checkpoint_has_lineage_and_exports_as_a_bundle(smoke_checkpoint, tmp_path, layout):
    from training.export import export_checkpoint

    write_session(tmp_path / "replay", layout, 300)
    tuner = FineTuner(_options(smoke_checkpoint, tmp_path / "replay", tmp_path / "ft", prior="none",
                               lr_scale=0.5, critic_warmup=10), log=lambda s: None)
    tuner.run()
    ckpt = load_checkpoint(resolve_checkpoint(tmp_path / "ft" / "checkpoints" / "latest.pt"))
    lineage = ckpt["lineage"]
    assert lineage["parent"]["checkpoint"] == str(Path(smoke_checkpoint).resolve())
    assert lineage["robot_data"]["ranges"] == [[0, 0, 299]] and lineage["updates"] == 75
    assert lineage["prior"]["source"] == "none"
    assert (lineage["lr_scale"], lineage["critic_warmup"]) == (0.5, 10)
    parent = load_checkpoint(resolve_checkpoint(smoke_checkpoint))
    assert ckpt["progress"]["updates"] == parent["progress"]["updates"] + 75
    bundle = export_checkpoint(tmp_path / "ft" / "checkpoints" / "latest.pt", tmp_path / "policies",
                               log=lambda *a: None, parity_samples=200)
    assert (bundle / "policy.onnx").is_file()


def test_a_run_from_another_parent_is_not_resumed(smoke_checkpoint, tmp_path, layout):
    write_session(tmp_path / "replay", layout, 10)
    out = tmp_path / "ft"
    FineTuner(_options(smoke_checkpoint, tmp_path / "replay", out, prior="none"),
              log=lambda s: None).save()
    ckpt_path = resolve_checkpoint(out / "checkpoints" / "latest.pt")
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["lineage"]["parent"]["sha256"] = "0" * 64
    torch.save(ckpt, ckpt_path)
    with pytest.raises(FinetuneError, match="another parent"):
        FineTuner(_options(smoke_checkpoint, tmp_path / "replay", out, prior="none"), log=lambda s: None)


def test_finetunes_on_what_the_controller_logged(smoke_checkpoint, tmp_path):
    """The two halves meet: the Controller's log of a walking Go2 (rewards from the task, applied
    actions) is what the fine-tuner learns from, with the operator's stop cutting the last window."""
    walk_and_log(tmp_path / "replay", seconds=5.0)
    tuner = FineTuner(_options(smoke_checkpoint, tmp_path / "replay", tmp_path / "ft", utd=0.5),
                      log=lambda s: None)
    assert tuner.run() == "idle"
    n = tuner.robot.consumed.count
    assert n > 100 and tuner.learner.updates == n // 2
    stored = tuner.robot.buffer
    assert bool(stored.timeouts[n - 1, 0]) and not bool(stored.dones[:n - 1, 0].any())


# ---- SIGKILL and resume -------------------------------------------------------------------------------
def _robot_writer(directory: str, layout: TransitionLayout, total: int, ready_path: str) -> None:
    """The robot side: appends `total` transitions in bursts, then exits."""
    rng = np.random.default_rng(5)
    writer = ReplayWriter(directory, layout).start()
    for i in range(total):
        writer.append(**robot_transition(layout, rng, i, truncated=i % 97 == 96))
        if i % 40 == 39:
            time.sleep(0.05)
        if i == 200:
            Path(ready_path).touch()
    writer.close()
    os._exit(0)


def test_sigkill_mid_update_and_mid_checkpoint_resumes_without_losing_or_repeating_data(
        smoke_checkpoint, tmp_path, layout):
    """The learner is killed with SIGKILL at random moments (checkpoints every 2 updates, so many
    kills land inside a checkpoint write) while the robot keeps logging; each restart resumes the
    same --out. At the end the consumed ranges are exactly the records written, once each."""
    import multiprocessing as mp

    replay, out, total = tmp_path / "replay", tmp_path / "ft", 1500
    replay.mkdir()
    robot = mp.get_context("fork").Process(target=_robot_writer,
                                           args=(str(replay), layout, total, str(tmp_path / "ready")))
    robot.start()
    while not (tmp_path / "ready").exists():
        time.sleep(0.01)
    cmd = [sys.executable, "-m", "deploy.cli", "finetune", "--checkpoint", str(smoke_checkpoint),
           "--replay", str(replay), "--out", str(out), "--prior", "none", "--utd", "0.5",
           "--every", "2", "--idle-exit", "3"]
    rng = random.Random(0)
    latest = out / "checkpoints" / "latest.pt"
    kills = 0
    for _ in range(4):
        before = latest.stat().st_mtime_ns if latest.exists() else 0
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill only once this run has checkpointed (start-up takes seconds on a loaded machine),
        # then at a random moment: with a checkpoint every 2 updates many land inside a write
        while proc.poll() is None and (latest.stat().st_mtime_ns if latest.exists() else 0) == before:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    robot.join(60)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert kills >= 2, "the learner finished before it could be killed: the test proves nothing"
    assert "resumed" in done.stdout
    ckpt = load_checkpoint(resolve_checkpoint(out / "checkpoints" / "latest.pt"))
    assert ckpt["lineage"]["robot_data"]["ranges"] == [[0, 0, total - 1]]
    assert ckpt["lineage"]["robot_data"]["transitions"] == total
    assert ckpt["lineage"]["updates"] == total // 2


def _actor_and_critic(agent) -> tuple[dict, dict]:
    state = {k: v.clone() for k, v in agent.state_dict().items()}
    return ({k: v for k, v in state.items() if k.startswith(("actor.", "temperature."))},
            {k: v for k, v in state.items() if k.startswith("critic.q.")})


def _changed(before: dict, agent) -> set[str]:
    now = agent.state_dict()
    return {k for k, v in before.items() if not torch.equal(now[k], v)}


def test_critic_warmup_holds_the_actor_and_temperature_then_releases_them(smoke_checkpoint,
                                                                         tmp_path, layout):
    write_session(tmp_path / "replay", layout, 600)
    tuner = FineTuner(_options(smoke_checkpoint, tmp_path / "replay", tmp_path / "ft",
                               critic_warmup=40, max_updates=40), log=lambda s: None)
    actor, critic = _actor_and_critic(tuner.agent)
    tuner.run()
    assert tuner.learner.updates == 40
    assert not _changed(actor, tuner.agent), "the actor or temperature moved during the warm-up"
    assert _changed(critic, tuner.agent)
    tuner.opts.max_updates = 60
    tuner.run()
    assert {"actor.trunk.0.weight", "temperature.log_alpha"} <= _changed(actor, tuner.agent)
    lr = {key: opt.param_groups[0]["lr"] for key, (opt, _) in tuner.agent.optimizers().items()}
    assert lr["actor_opt"] == tuner.agent.cfg.actor_lr and lr["alpha_opt"] == tuner.agent.cfg.alpha_lr


def test_lr_scale_scales_every_rate_and_zero_keeps_the_weights(smoke_checkpoint, tmp_path, layout):
    write_session(tmp_path / "replay", layout, 600)
    tuner = FineTuner(_options(smoke_checkpoint, tmp_path / "replay", tmp_path / "a", lr_scale=0.3),
                      log=lambda s: None)
    for key, (opt, lr) in tuner.agent.optimizers().items():
        assert opt.param_groups[0]["lr"] == pytest.approx(0.3 * lr), key
    frozen = FineTuner(_options(smoke_checkpoint, tmp_path / "replay", tmp_path / "b", lr_scale=0.0,
                                max_updates=30), log=lambda s: None)
    actor, critic = _actor_and_critic(frozen.agent)
    frozen.run()
    assert frozen.learner.updates == 30
    assert not _changed(actor, frozen.agent) and not _changed(critic, frozen.agent)
    with pytest.raises(FinetuneError, match="--lr-scale"):
        _options(smoke_checkpoint, tmp_path / "replay", tmp_path / "c", lr_scale=float("nan")).check()
    with pytest.raises(FinetuneError, match="--critic-warmup"):
        _options(smoke_checkpoint, tmp_path / "replay", tmp_path / "c", critic_warmup=-1).check()


def test_the_training_prior_is_rolled_out_under_the_training_randomization(smoke_checkpoint):
    from training.export import load_agent
    from training.finetune import prior_rollout

    _, spec, agent, _ = load_agent(smoke_checkpoint)
    cpu = torch.device("cpu")
    nominal = prior_rollout(agent, spec, "velocity_flat", 64, 0, cpu, num_envs=4)
    again = prior_rollout(agent, spec, "velocity_flat", 64, 0, cpu, num_envs=4)
    randomized = prior_rollout(agent, spec, "velocity_flat", 64, 0, cpu, num_envs=4, randomize=True)
    assert torch.equal(nominal.obs, again.obs)                 # deterministic for its seed
    assert not torch.equal(nominal.next_obs, randomized.next_obs)   # other physics, other states
    with pytest.raises(FinetuneError, match="allowed: nominal, training, none"):
        FinetuneOptions(smoke_checkpoint, Path("."), Path("."), prior="randomized").check()
