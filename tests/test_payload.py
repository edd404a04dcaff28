"""A payload off the base's centre (SimConditions.payload_offset): where MuJoCo puts the mass, and
the physics keys as scenario files and `sac2real run --physics` take them."""
import mujoco
import numpy as np
import pytest

from deploy.config import ConfigError
from deploy.sim2sim.scenarios import ScenarioFile, parse_physics
from deploy.sim_world import SimWorld
from deploy.spec import RobotSpec


def _base_com_and_inertia(world: SimWorld, robot: int):
    """The base's world-frame centre of mass and its full inertia tensor about it, from MuJoCo."""
    sh = world.shards[0]
    mujoco.mj_forward(sh.model, sh.data)
    b = sh.idx.base_body[robot]
    rot = sh.data.ximat[b].reshape(3, 3)
    return sh.data.xipos[b].copy(), rot @ np.diag(sh.model.body_inertia[b]) @ rot.T, sh.data.xmat[b].reshape(3, 3)


def test_the_payload_moves_the_centre_of_mass_and_adds_its_parallel_axis_inertia():
    spec = RobotSpec.load("go2")
    world = SimWorld(spec, 2)
    nominal_com, nominal_inertia, rot = _base_com_and_inertia(world, 1)
    big_m = float(world.shards[0].model.body_mass[world.shards[0].idx.base_body[1]])
    m, r = 4.0, np.array([-0.1, 0.15, 0.05])
    world.set_added_base_mass(np.array([0.0, m]), np.array([[0.0, 0.0, 0.0], r]))
    com, inertia, _ = _base_com_and_inertia(world, 1)
    # two point masses' centre: M at the old centre, m at r from it (base frame -> world)
    want_com = (big_m * nominal_com + m * (nominal_com + rot @ r)) / (big_m + m)
    np.testing.assert_allclose(com, want_com, atol=1e-9)
    # about the new centre: the base's inertia scaled with its mass (IsaacLab's add_base_mass)
    # plus both masses' parallel-axis terms; MuJoCo keeps the diagonal of the principal frame
    d_big, d_small = want_com - nominal_com, nominal_com + rot @ r - want_com
    parallel = sum(k * (d @ d * np.eye(3) - np.outer(d, d)) for k, d in ((big_m, d_big), (m, d_small)))
    want = nominal_inertia * (big_m + m) / big_m + parallel
    np.testing.assert_allclose(np.trace(inertia), np.trace(want), rtol=1e-9)
    sh = world.shards[0]
    principal = sh.data.ximat[sh.idx.base_body[1]].reshape(3, 3)
    np.testing.assert_allclose(np.diag(principal.T @ inertia @ principal),
                               np.diag(principal.T @ want @ principal), rtol=1e-9)
    # the other robot and a reset to no payload are untouched
    world.set_added_base_mass(np.array([0.0, 0.0]))
    np.testing.assert_allclose(_base_com_and_inertia(world, 1)[0], nominal_com, atol=1e-12)


def test_physics_keys_from_the_command_line_are_checked_like_a_scenario_file():
    assert parse_physics(["added_base_mass=4", "payload_offset=0,0.15,0"]) == {
        "added_base_mass": 4.0, "payload_offset": (0.0, 0.15, 0.0)}
    for bad, named in (("mass=4", "allowed: friction"), ("payload_offset=0,0.1", "x,y,z"),
                       ("friction=nan", "[0.01, 5]"), ("added_base_mass=inf", "added_base_mass"),
                       ("motor_strength=", "motor_strength")):
        with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
            parse_physics([bad])


def test_a_scenario_file_takes_payload_offset_as_three_numbers(tmp_path):
    good = tmp_path / "s.yaml"
    good.write_text("thresholds: {falls: 0}\nepisode: {added_base_mass: 3, payload_offset: [0.1, 0, 0]}\n"
                    "scenarios: [{name: a, commands: [[0, 0.5, 0, 0]]}]\n")
    (ep,) = ScenarioFile.load(good).episodes
    assert ep.payload_offset == (0.1, 0.0, 0.0) and ep.added_base_mass == 3.0
    bad = tmp_path / "b.yaml"
    bad.write_text("thresholds: {falls: 0}\nscenarios: [{name: a, payload_offset: [0.1, .nan, 0]}]\n")
    with pytest.raises(ConfigError, match="payload_offset"):
        ScenarioFile.load(bad)
