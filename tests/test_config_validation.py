"""Config loading refuses what would switch a safety check off: NaN and inf anywhere (NaN fails
every range comparison), out-of-range numbers, duplicate keys (YAML keeps the last one), and it
reads every float spelling a person writes (PyYAML's YAML 1.1 takes `1e9` for a string).

Each finding of the safety review (issue 16, "Configs") is reproduced here first on the real
config files, changed one key at a time."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from deploy.config import ConfigError, declared_ranges, load_yaml
from deploy.deploy_config import DEPLOY_DIR, DeployConfig
from deploy.spec import ROBOTS_DIR, RobotSpec
from deploy.sim2sim.scenarios import ScenarioFile
from training.config import TRAIN_DIR, load_train_config

REPO = Path(__file__).resolve().parent.parent
GO2_DEPLOY = DEPLOY_DIR / "go2.yaml"
GO2_SPEC = ROBOTS_DIR / "go2.yaml"


@pytest.fixture(scope="module")
def spec() -> RobotSpec:
    return RobotSpec.load("go2", check_mjcf=False)


def _deploy_with(tmp_path: Path, section: str, line: str) -> Path:
    """configs/deploy/go2.yaml with one key of `section` set (replaced if present, else added)."""
    key = line.split(":")[0].strip()
    text = GO2_DEPLOY.read_text()
    pattern = re.compile(rf"^  {re.escape(key)}:.*$", re.M)
    text = pattern.sub(f"  {line}", text) if pattern.search(text) else \
        text.replace(f"{section}:\n", f"{section}:\n  {line}\n", 1)
    out = tmp_path / "go2.yaml"
    out.write_text(text)
    return out


def _spec_with(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = GO2_SPEC.read_text()
    assert text.count(old) >= count, old
    out = tmp_path / "go2.yaml"
    out.write_text(text.replace(old, new, count).replace("mjcf: ../../", f"mjcf: {REPO}/"))
    return out


def _refused(load, path: Path, key: str, *words: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and key in message, message
    for w in words:
        assert w in message, message
    return message


# ---- the review's findings, reproduced ----------------------------------------------------
@pytest.mark.parametrize("key", ["max_state_age_s", "max_tilt", "joint_velocity_factor",
                                 "rate_limit_factor", "torque_limit_factor", "hard_limit_tolerance",
                                 "max_quat_norm_error", "rollback_window_s"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN", "+.Inf"])
def test_a_non_finite_safety_threshold_is_refused_naming_file_key_and_value(spec, tmp_path, key,
                                                                          value):
    path = _deploy_with(tmp_path, "safety", f"{key}: {value}")
    message = _refused(lambda p: DeployConfig.load(spec, p), path, f"safety.{key}")
    assert re.search(r"\b(nan|inf)\b", message) and "not a finite number" in message


@pytest.mark.parametrize("key", ["stand_duration_s", "blend_in_s", "damping_kd"])
def test_a_non_finite_controller_setting_is_refused(spec, tmp_path, key):
    path = _deploy_with(tmp_path, "controller", f"{key}: .nan")
    _refused(lambda p: DeployConfig.load(spec, p), path, f"controller.{key}", "nan")


@pytest.mark.parametrize("field", ["velocity", "effort", "kp", "kd", "default"])
def test_a_non_finite_joint_number_in_a_robot_spec_names_the_joint_row_and_key(tmp_path, field):
    value = {"velocity": "30.0", "effort": "23.5", "kp": "25.0", "kd": "0.5", "default": " 0.1"}[field]
    path = _spec_with(tmp_path, f"{field}: {value}", f"{field}: .nan")
    _refused(lambda p: RobotSpec.load(p, check_mjcf=False), path, f"joints[0].{field}",
             "nan", "not a finite number", "'FL_hip_joint'")


@pytest.mark.parametrize("limits", ["[.nan, 1.0472]", "[-1.0472, .inf]", "[-.inf, .inf]"])
def test_a_non_finite_joint_limit_is_refused_as_such(tmp_path, limits):
    path = _spec_with(tmp_path, "limits: [-1.0472, 1.0472]", f"limits: {limits}")
    message = _refused(lambda p: RobotSpec.load(p, check_mjcf=False), path, "joints[0].limits[",
                       "not a finite number")
    assert "default" not in message       # not the misleading "default outside its limits"


def test_a_duplicate_key_is_refused_naming_the_key_and_both_lines(spec, tmp_path):
    text = GO2_DEPLOY.read_text().replace("  rate_limit_factor: 1.0",
                                          "  rate_limit_factor: 1.0\n  rate_limit_factor: 10.0")
    path = tmp_path / "go2.yaml"
    path.write_text(text)
    first = text.splitlines().index("  rate_limit_factor: 1.0") + 1
    _refused(lambda p: DeployConfig.load(spec, p), path, "rate_limit_factor",
             f"lines {first} and {first + 1}", "given twice")


def test_a_duplicate_kp_inside_a_joint_row_is_refused(tmp_path):
    path = _spec_with(tmp_path, "kp: 25.0, kd: 0.5", "kp: 25.0, kp: 250.0, kd: 0.5")
    line = next(i for i, text in enumerate(GO2_SPEC.read_text().splitlines(), 1)
                if "name: FL_hip_joint" in text)
    _refused(lambda p: RobotSpec.load(p, check_mjcf=False), path, "kp",
             f"lines {line} and {line}")


def test_a_duplicate_top_level_section_is_refused(spec, tmp_path):
    path = tmp_path / "go2.yaml"
    path.write_text(GO2_DEPLOY.read_text() + "safety:\n  max_tilt: 0.5\n")
    _refused(lambda p: DeployConfig.load(spec, p), path, "safety", "given twice")


def test_kp_1e9_is_refused_as_out_of_range_not_as_a_string(tmp_path):
    path = _spec_with(tmp_path, "kp: 25.0", "kp: 1.0e9")
    _refused(lambda p: RobotSpec.load(p, check_mjcf=False), path, "joints[0].kp",
             "1000000000.0 is outside the allowed range")


# ---- ranges ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "0.0", "-0.2", "1.6", "3.0"])
def test_max_tilt_must_lie_in_zero_to_half_pi(spec, tmp_path, value):
    path = _deploy_with(tmp_path, "safety", f"max_tilt: {value}")
    _refused(lambda p: DeployConfig.load(spec, p), path, "safety.max_tilt", "(0, 1.5708]")


def test_the_spec_termination_tilt_is_held_to_the_same_range(tmp_path):
    path = _spec_with(tmp_path, "max_tilt: 1.0", "max_tilt: 2.0")
    _refused(lambda p: RobotSpec.load(p, check_mjcf=False), path, "termination.max_tilt",
             "outside the allowed range")


@pytest.mark.parametrize("line", ["joint_velocity_factor: 0", "rate_limit_factor: -1",
                                  "torque_limit_factor: 0.0", "max_state_age_s: 0",
                                  "max_state_age_s: -0.5", "rollback_window_s: 1e6"])
def test_factors_and_durations_out_of_range_are_refused(spec, tmp_path, line):
    path = _deploy_with(tmp_path, "safety", line)
    _refused(lambda p: DeployConfig.load(spec, p), path, f"safety.{line.split(':')[0]}",
             "outside the allowed range")


@pytest.mark.parametrize("old,new,key", [
    ("velocity: 30.0", "velocity: 0.0", "velocity"), ("effort: 23.5", "effort: -1", "effort"),
    ("kd: 0.5", "kd: 1e6", "kd"), ("limits: [-1.0472, 1.0472]", "limits: [-100, 1.0472]", "limits[0]")])
def test_joint_numbers_out_of_range_are_refused(tmp_path, old, new, key):
    path = _spec_with(tmp_path, old, new)
    _refused(lambda p: RobotSpec.load(p, check_mjcf=False), path, f"joints[0].{key}",
             "outside the allowed range")


# ---- float spellings ---------------------------------------------------------------------
@pytest.mark.parametrize("spelling,value", [("1.0e0", 1.0), ("1e0", 1.0), ("10E-1", 1.0),
                                            ("+1.0", 1.0), ("1.", 1.0), (".5", 0.5), ("5e-1", 0.5),
                                            ("+.5", 0.5), ("1_0.0e-1", 1.0)])
def test_every_float_spelling_a_person_writes_is_read_as_that_number(spec, tmp_path, spelling, value):
    path = _deploy_with(tmp_path, "safety", f"rate_limit_factor: {spelling}")
    assert DeployConfig.load(spec, path).safety.rate_limit_factor == value


def test_an_exponent_without_a_dot_reaches_the_range_check_in_a_training_config(tmp_path):
    text = (TRAIN_DIR / "sac_cpu.yaml").read_text()
    path = tmp_path / "train.yaml"
    path.write_text(text.replace("actor_lr: 3.0e-4", "actor_lr: 3e-4"))
    assert load_train_config(path).sac.actor_lr == pytest.approx(3e-4)
    path.write_text(text.replace("buffer_size: 1000000", "buffer_size: 1e12"))
    _refused(load_train_config, path, "buffer_size", "expected int")
    path.write_text(text.replace("tau: 0.005", "tau: .nan"))
    _refused(load_train_config, path, "sac.tau", "not a finite number")
    path.write_text(text.replace("buffer_size: 1000000", "buffer_size: 1000000000000"))
    _refused(load_train_config, path, "buffer_size", "outside the allowed range")


# ---- every path, numbers inside lists included -------------------------------------------
@pytest.mark.parametrize("old,new,key", [
    ("commands: [[0.0, 0.0, 0.0, 0.0]]", "commands: [[0.0, .nan, 0.0, 0.0]]", "scenarios[0].commands[0][1]"),
    ("sweep: {vx: [-0.5, 0.5, 1.0]}", "sweep: {vx: [-0.5, .inf, 1.0]}", "scenarios[1].sweep.vx[1]"),
    ("dv: [0.0, 0.6]", "dv: [0.0, 1e9]", "dv[1]"),
    ("duration_s: 6.0", "duration_s: .nan", "episode.duration_s"),
    ("lin_vel_error: 0.35", "lin_vel_error: 1e9", "thresholds.lin_vel_error")])
def test_sim2sim_numbers_in_lists_and_thresholds_are_checked(spec, tmp_path, old, new, key):
    text = (REPO / "configs" / "sim2sim" / "default.yaml").read_text()
    assert old in text
    path = tmp_path / "default.yaml"
    path.write_text(text.replace(old, new, 1))
    _refused(lambda p: ScenarioFile.load(p, spec), path, key)


def test_every_config_in_the_tree_loads_and_every_number_read_has_a_bounded_range(spec):
    """The loaders state a range for each number they read (the config fuzzer relies on it)."""
    from training.envs.velocity import TaskConfig
    with declared_ranges() as ranges:
        for robot in ("go2", "g1", "anymal_d"):
            s = RobotSpec.load(robot, check_mjcf=False)
            DeployConfig.load(s)
            TaskConfig.load("velocity_flat", s)
            ScenarioFile.load(REPO / "configs" / "sim2sim" / ("default.yaml" if robot == "go2"
                                                                else f"{robot}.yaml"), s)
        for path in TRAIN_DIR.glob("*.yaml"):
            load_train_config(path)
    assert len(ranges) > 100
    unbounded = [k for k, r in ranges.items() if r.low is None or r.high is None]
    assert not unbounded, unbounded
    assert all(math.isfinite(r.low) and math.isfinite(r.high) for r in ranges.values())
    for path in (REPO / "configs").rglob("*.yaml"):
        load_yaml(path)       # no duplicate keys, no non-finite numbers


@pytest.mark.parametrize("value, why", [("-0.1", "outside the allowed range"), ("0.6", "outside the allowed range"),
                                        (".nan", "finite"), ("loose", "")])
def test_a_bad_joint_limit_tolerance_in_the_spec_termination_is_refused(tmp_path, value, why):
    path = _spec_with(tmp_path, "max_tilt: 1.0", f"max_tilt: 1.0\n  joint_limit_tolerance: {value}")
    _refused(lambda p: RobotSpec.load(p, check_mjcf=False), path, "termination.joint_limit_tolerance", why)
