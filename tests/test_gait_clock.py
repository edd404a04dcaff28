"""The gait clock's reward (`gait_contact`, configs/robots/g1.yaml gait) against a hand count, its
refusal for a robot without a clock, and the robot path's reward when the clock is not known."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deploy.config import ConfigError, Section
from deploy.rewards import RewardInputs, TaskRewards, compute_rewards, parse_rewards
from deploy.robot_rewards import RobotRewards
from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec


@pytest.fixture(scope="module")
def g1():
    return RobotSpec.load("g1", check_mjcf=False)


def _inputs(spec: RobotSpec, contact: np.ndarray, phase: np.ndarray | None,
            height: np.ndarray | None = None) -> RewardInputs:
    n, f, j = contact.shape[0], contact.shape[1], spec.num_joints
    zeros = lambda *shape: np.zeros(shape)  # noqa: E731
    return RewardInputs(
        command=zeros(n, 3), lin_vel=zeros(n, 3), ang_vel=zeros(n, 3), gravity=np.tile([0, 0, -1.0], (n, 1)),
        joint_pos=np.tile(spec.default_pos, (n, 1)), joint_vel=zeros(n, j), joint_torque=zeros(n, j),
        joint_acc=zeros(n, j),
        action=zeros(n, j), last_action=zeros(n, j), foot_contact=contact,
        first_contact=np.zeros((n, f), bool), last_air_time=zeros(n, f), air_time=zeros(n, f),
        contact_time=zeros(n, f), foot_speed_xy=zeros(n, f), penalized_contacts=zeros(n),
        terminated=np.zeros(n, bool), spec=spec, sigma=0.5, foot_phase=phase, foot_height=height)


def test_gait_contact_pays_each_foot_whose_contact_matches_its_phase(g1):
    """Stance is the first 55% of a foot's cycle (g1.yaml gait.stance): a foot pays 1 when it is
    down in stance or up in swing, 0 otherwise; the task's weight and the policy dt scale it."""
    contact = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 0], [1, 1]], bool)
    phase = np.array([[0.10, 0.60], [0.10, 0.60], [0.10, 0.60], [0.10, 0.60], [0.549, 0.55],
                      [0.55, 0.0]])
    by_hand = np.array([1, 2, 0, 1, 2, 1], float)       # row 4: 0.549 is stance, 0.55 is swing
    terms = parse_rewards(Section({"gait_contact": 0.18}, "task.yaml", "rewards.g1"), g1)
    total, parts = compute_rewards(terms, _inputs(g1, contact, phase), g1.policy_dt)
    np.testing.assert_allclose(parts["gait_contact"], 0.18 * g1.policy_dt * by_hand, rtol=1e-12)
    np.testing.assert_allclose(total, parts["gait_contact"])
    with pytest.raises(ValueError, match="gait_contact needs the feet's gait phases"):
        compute_rewards(terms, _inputs(g1, contact, None), g1.policy_dt)


def test_feet_swing_height_pays_each_foot_by_its_distance_from_the_swing_trajectory(g1):
    """Clearance is over the lower foot; a foot in its swing (stance 0.55: phases 0.55-1) is wanted
    apex x sin(pi x swing fraction) up; a foot in stance pays nothing, whatever its height."""
    phase = np.array([[0.10, 0.60], [0.10, 0.775], [0.10, 0.775], [0.30, 0.999], [0.775, 0.275]])
    height = np.array([[0.50, 0.50], [0.50, 0.60], [-0.2, -0.1], [0.03, 0.05], [0.04, 0.00]])
    wanted = [[0.0, 0.06 * np.sin(np.pi * 0.05 / 0.45)], [0.0, 0.06], [0.0, 0.06],
              [0.0, 0.06 * np.sin(np.pi * 0.449 / 0.45)], [0.06, 0.0]]
    clearance = [[0.0, 0.0], [0.0, 0.10], [0.0, 0.10], [0.0, 0.02], [0.04, 0.0]]
    by_hand = [sum(np.exp(-((c - w) / 0.03) ** 2) * (p >= 0.55) for c, w, p in zip(cs, ws, ps))
               for cs, ws, ps in zip(clearance, wanted, phase)]
    section = Section({"feet_swing_height": {"weight": 2.0, "apex": 0.06, "width": 0.03}},
                      "task.yaml", "rewards.g1")
    terms = parse_rewards(section, g1)
    contact = np.ones((5, 2), bool)
    _, parts = compute_rewards(terms, _inputs(g1, contact, phase, height), g1.policy_dt)
    np.testing.assert_allclose(parts["feet_swing_height"], 2.0 * g1.policy_dt * np.array(by_hand),
                               rtol=1e-12)
    assert parts["feet_swing_height"][1] == pytest.approx(parts["feet_swing_height"][2], rel=1e-12)
    with pytest.raises(ValueError, match="feet_swing_height needs the feet's gait phases and heights"):
        compute_rewards(terms, _inputs(g1, contact, phase, None), g1.policy_dt)


def test_gait_joint_reference_pays_the_legs_by_their_distance_from_the_stepping_pattern(g1):
    """A leg's flexion is its flex joints' offsets from default projected on the shares (g1.yaml
    gait.swing, shares -0.5, 1, -0.5: (-0.5 hip + knee - 0.5 ankle) / 1.5); each leg is wanted bent
    by apex x sin(pi x swing fraction) in its swing, 0 in stance, both measured against the legs'
    mean, and the term pays exp(-sum of squared errors / width^2)."""
    apex = g1.gait.swing.apex
    section = Section({"ref": {"term": "gait_joint_reference", "weight": 3.0, "width": 0.2}},
                      "task.yaml", "rewards.g1")
    terms = parse_rewards(section, g1)
    at = {n: g1.joint_names.index(n) for n in g1.joint_names}
    phase = np.array([[0.10, 0.60], [0.775, 0.275], [0.775, 0.275], [0.775, 0.275], [0.30, 0.80]])
    pose = np.tile(g1.default_pos, (5, 1))
    pose[2, at["left_knee_joint"]] += apex                 # row 2: the left leg bent as wanted
    pose[2, at["left_hip_pitch_joint"]] -= apex / 2
    pose[2, at["left_ankle_pitch_joint"]] -= apex / 2
    pose[3, [at["left_knee_joint"], at["right_knee_joint"]]] += 0.3     # row 3: both knees bent
    pose[4, at["right_hip_pitch_joint"]] += 0.3           # row 4: a right hip against the pattern
    wanted = lambda s: apex * np.sin(np.pi * s)           # noqa: E731  (s: swing fraction)
    left_minus_right = [(0.0, -wanted(0.05 / 0.45)), (0.0, wanted(0.5)),
                        ((apex + apex / 4 + apex / 4) / 1.5, wanted(0.5)), (0.0, wanted(0.5)),
                        ((0.0 - (-0.5 * 0.3) / 1.5), -wanted(0.25 / 0.45))]
    # biped: each leg's error against the mean is half the left-right difference, twice over
    squared = [2 * ((f - b) / 2) ** 2 for f, b in left_minus_right]
    x = _inputs(g1, np.ones((5, 2), bool), phase)
    x = RewardInputs(**{**x.__dict__, "joint_pos": pose})
    _, parts = compute_rewards(terms, x, g1.policy_dt)
    np.testing.assert_allclose(parts["ref"], 3.0 * g1.policy_dt * np.exp(-np.array(squared) / 0.2 ** 2),
                               rtol=1e-12)
    assert parts["ref"][2] == pytest.approx(3.0 * g1.policy_dt)


@pytest.mark.parametrize("row, message", [
    ({"term": "gait_joint_reference", "weight": 1.0, "apex": 0.4},
     r"rewards.g1.ref.apex: term gait_joint_reference takes no 'apex' \(its parameters: width\)"),
    ({"term": "gait_joint_reference", "weight": 1.0, "flex": {".*_knee_joint": 1.0}},
     r"rewards.g1.ref.flex: unknown key"),
    ({"term": "gait_joint_reference", "weight": 1.0, "width": float("inf")}, r"rewards.g1.ref.width"),
    ({"term": "joint_deviation_l1", "weight": 1.0, "joints": "[a-"},
     r"rewards.g1.ref.joints: '\[a-' is not a regular expression"),
    ({"term": "action_rate_l2", "weight": -0.1, "joints": ".*_shoulder_.*_joint"},
     r"rewards.g1.ref.joints: term action_rate_l2 does not sum over joints; 'joints' applies to "
     r"dof_torques_l2, .*joint_vel_l2"),
])
def test_bad_joint_reference_rows_are_refused_with_the_field_named(g1, row, message):
    with pytest.raises(ConfigError, match=message):
        parse_rewards(Section({"ref": row}, "task.yaml", "rewards.g1"), g1)


def test_the_joint_reference_without_a_swing_pattern_in_the_spec_is_refused(g1):
    from dataclasses import replace
    no_swing = replace(g1, gait=replace(g1.gait, swing=None))
    with pytest.raises(ConfigError, match=r"rewards.g1.ref: reward term gait_joint_reference follows "
                                          r"the spec's swing pattern: g1's spec has no 'gait.swing'"):
        parse_rewards(Section({"ref": {"term": "gait_joint_reference", "weight": 1.0}}, "task.yaml",
                              "rewards.g1"), no_swing)


@pytest.mark.parametrize("row, message", [
    ({"weight": 1.0, "apex": 0.0}, r"rewards.g1.feet_swing_height.apex: .*outside the allowed range"),
    ({"weight": 1.0, "width": float("nan")}, r"rewards.g1.feet_swing_height.width"),
    ({"weight": 1.0, "threshold": 0.4}, r"rewards.g1.feet_swing_height.threshold: term "
                                        r"feet_swing_height takes no 'threshold' \(its parameters: apex, width\)"),
])
def test_bad_swing_height_parameters_are_refused_with_the_field_named(g1, row, message):
    with pytest.raises(ConfigError, match=message):
        parse_rewards(Section({"feet_swing_height": row}, "task.yaml", "rewards.g1"), g1)


def test_gait_contact_for_a_robot_without_a_gait_clock_is_refused():
    go2 = RobotSpec.load("go2", check_mjcf=False)
    with pytest.raises(ConfigError, match=r"task.yaml: rewards.go2.gait_contact: reward term "
                                          r"gait_contact needs a gait clock"):
        parse_rewards(Section({"gait_contact": 0.18}, "task.yaml", "rewards.go2"), go2)


def test_the_robot_path_leaves_the_reward_unknown_without_a_clock_it_can_read(g1):
    """A G1 transition pays gait_contact from the clock in its next_obs; a record without one, or
    with a non-finite one, has no reward rather than a guessed one. (Without the torque term,
    which reads the record's obs and target, tests/test_robot_rewards.py's.)"""
    task = TaskRewards.load("velocity_flat", g1)
    task = dataclasses.replace(task, terms=tuple(t for t in task.terms if t.term != "applied_torque_limits"))
    path = RobotRewards(g1, task)
    j, layout = g1.num_joints, ObservationPipeline(g1).layout
    base = {"action": np.zeros(j), "joint_target": np.full(j, np.nan), "command": np.zeros(3),
            "imu_gyro": np.zeros(3), "imu_quat": np.array([1.0, 0, 0, 0]), "joint_pos": g1.default_pos,
            "joint_vel": np.zeros(j), "joint_torque": np.zeros(j), "terminated": False,
            "truncated": False, "dropped": 0, "base_lin_vel": np.zeros(3),
            "foot_contact": np.array([1.0, 1.0])}
    next_obs = np.zeros(layout.dim)
    rewards = {}
    for name, sin_cos in [("both_in_stance", (0.0, 1.0)), ("right_in_swing", (np.sin(0.9), np.cos(0.9))),
                          ("unknown", (np.nan, 1.0))]:
        next_obs[layout.slice("gait_phase")] = sin_cos
        fields = dict(base, next_obs=next_obs.copy())
        path(fields)
        rewards[name] = fields.get("reward")
    fields = dict(base)
    path(fields)
    assert rewards["unknown"] is None and "reward" not in fields
    # phase 0: left in stance (down, pays), right at 0.5 in stance too (down, pays); at angle 0.9
    # rad (phase 0.143, the clock 0.115 s, read as the tick at 0.12 s: phase 0.15) the right foot
    # is at 0.65, swing: down there does not pay gait_contact, and feet_swing_height, which wants
    # it 8 cm x sin(pi (0.65 - 0.55) / 0.45) up, pays it exp(-(that / 5 cm)^2) (the default pose
    # has both feet level), where with both feet in stance it pays nothing
    weight = {t.term: t.weight * g1.policy_dt for t in task.terms}
    wanted = 0.08 * np.sin(np.pi * (0.12 / 0.8 + 0.5 - 0.55) / 0.45)
    swing_loss = -weight["feet_swing_height"] * np.exp(-(wanted / 0.05) ** 2)
    # and gait_joint_reference wants the right leg bent by apex x that same sine more than the
    # left (each off the legs' mean by half of it), which the default pose is not
    reference = next(t.params for t in task.terms if t.term == "gait_joint_reference")
    bend = g1.gait.swing.apex * np.sin(np.pi * (0.12 / 0.8 + 0.5 - 0.55) / 0.45)
    reference_loss = weight["gait_joint_reference"] * (1.0 - np.exp(-bend ** 2 / 2 / reference["width"] ** 2))
    assert rewards["both_in_stance"] - rewards["right_in_swing"] == pytest.approx(
        weight["gait_contact"] + swing_loss + reference_loss, rel=1e-6)


def test_the_gait_tally_scores_a_robot_standing_on_both_feet_by_the_clock_alone(g1):
    """A G1 standing on both feet (zero actions without the swing feed-forward, the ticks of its
    first 40 that it stands on both, before it tips; it lands from its spawn height first) matches
    the clock exactly where a foot's phase is in stance: t x 0.02 / 0.8 for the left foot, half a
    cycle on for the right (tick 22 is the first of the left foot's swing exactly); never on one foot."""
    from g1_policy import without_feedforward
    from training.envs.velocity import TaskConfig, VelocityEnv
    from training.runner import GaitTally

    spec = without_feedforward(RobotSpec.load("g1"))
    env = VelocityEnv(spec, TaskConfig.load("velocity_flat", spec), 1, randomize=False, obs_noise=False)
    env.reset(seed=0, stagger=False)
    tally, by_hand = GaitTally(1), []
    for t in range(1, 41):
        env.step(np.zeros((1, spec.num_joints)))
        both_down = env.world.contacts()[2].all(1)
        tally.add(env, both_down)
        if both_down[0]:     # in whole ticks: a cycle is 40, stance its first 22, the right 20 on
            by_hand.append(((t % 40 < 22) + ((t + 20) % 40 < 22)) / 2)
    assert len(by_hand) >= 25
    shares = tally.shares()
    assert shares["clock_match"][0] == pytest.approx(np.mean(by_hand), rel=1e-12)
    assert shares["single_stance"][0] == 0.0
