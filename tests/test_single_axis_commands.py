"""A task's `commands.single_axis_fraction`: a share of the training commands along one axis only
(a pure forward, sideways or turning command), on the real training env and task files."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

import deploy.rewards
from deploy.config import ConfigError
from deploy.rewards import TASKS_DIR
from deploy.spec import RobotSpec
from training.envs.velocity import TaskConfig, VelocityEnv, keep_one_axis


def test_the_cut_rows_keep_exactly_one_axis_evenly_and_the_others_stay_as_drawn():
    rng = np.random.default_rng(0)
    command = rng.uniform([-0.5, -0.3, -0.5], [1.0, 0.3, 0.5], (30000, 3))
    out = keep_one_axis(command, 0.3, np.random.default_rng(1))
    nonzero = out != 0.0
    single = nonzero.sum(1) == 1
    assert abs(single.mean() - 0.3) < 0.015
    for axis in range(3):                           # vx, vy and wz alike
        assert abs((single & nonzero[:, axis]).mean() - 0.1) < 0.01
    # what is kept is the drawn value; rows not cut are untouched
    np.testing.assert_array_equal(out[nonzero], command[nonzero])
    np.testing.assert_array_equal(out[~single], command[~single])
    assert np.array_equal(keep_one_axis(command, 0.0, rng), command)


def _env(spec: RobotSpec, fraction: float, n: int = 64) -> VelocityEnv:
    task = dataclasses.replace(TaskConfig.load("velocity_flat", spec), single_axis_fraction=fraction)
    env = VelocityEnv(spec, task, n, seed=4, threads=1)
    env.reset(seed=4)
    return env


def test_the_training_env_draws_single_axis_commands_and_leaves_other_runs_streams_alone():
    spec = RobotSpec.load("go2")
    every = _env(spec, 1.0)
    assert ((every.command != 0).sum(1) <= 1).all()
    assert (every.command != 0).any(0).all()        # each axis is asked for by some robot
    assert np.all(every.command >= spec.commands.low) and np.all(every.command <= spec.commands.high)
    none = _env(spec, 0.0)
    assert ((none.command != 0).sum(1) == 3).mean() > 0.9
    plain = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 64, seed=4, threads=1)
    plain.reset(seed=4)                             # no fraction: the env's random stream unchanged
    np.testing.assert_array_equal(plain.command, none.command)


def test_the_g1_override_is_read_and_a_bad_fraction_is_refused_by_name(tmp_path, monkeypatch):
    shared = yaml.safe_load((TASKS_DIR / "velocity_flat.yaml").read_text())
    mine = shared["robot_overrides"]["g1"]["commands"]["single_axis_fraction"]
    assert 0 < mine < 1
    assert TaskConfig.load("velocity_flat", RobotSpec.load("g1")).single_axis_fraction == mine
    assert TaskConfig.load("velocity_flat", RobotSpec.load("go2")).single_axis_fraction == 0.0

    monkeypatch.setattr(deploy.rewards, "TASKS_DIR", tmp_path)
    for bad, match in ((1.5, "allowed"), (float("nan"), "finite"), ("most", "expected int or float")):
        shared["robot_overrides"]["g1"]["commands"]["single_axis_fraction"] = bad
        (tmp_path / "velocity_flat.yaml").write_text(yaml.safe_dump(shared))
        with pytest.raises(ConfigError, match=match) as info:
            TaskConfig.load("velocity_flat", RobotSpec.load("g1"))
        assert info.value.key == "robot_overrides.g1.commands.single_axis_fraction", info.value
        assert str(tmp_path / "velocity_flat.yaml") in str(info.value)
    shared["robot_overrides"]["g1"]["commands"] = {"single_axis": 0.3}
    (tmp_path / "velocity_flat.yaml").write_text(yaml.safe_dump(shared))
    with pytest.raises(ConfigError, match="single_axis_fraction") as info:
        TaskConfig.load("velocity_flat", RobotSpec.load("g1"))
    assert info.value.key == "robot_overrides.g1.commands.single_axis", info.value
