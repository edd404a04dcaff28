"""The multi-robot MuJoCo world: exactly N copies of the robot on one floor, every time."""
from __future__ import annotations

import numpy as np
import pytest

from deploy.mjcf import load_model
from deploy.sim_world import ROBOT_CONTYPE, build_world_model
from deploy.spec import RobotSpec, available_robots


@pytest.mark.parametrize("robot", available_robots())
def test_world_holds_exactly_n_copies_and_the_scenery_once(robot):
    spec = RobotSpec.load(robot)
    one = load_model(spec)
    scenery = int((one.geom_bodyid == 0).sum())
    for _ in range(10):     # a build that depended on object identity would differ now and then
        world = build_world_model(spec, 3)
        assert world.ngeom == 3 * (one.ngeom - scenery) + scenery
        assert world.nbody == 3 * (one.nbody - 1) + 1
        assert world.nu == 3 * one.nu and world.njnt == 3 * one.njnt
        robot_geoms = world.geom_bodyid != 0
        colliding = robot_geoms & ((world.geom_contype != 0) | (world.geom_conaffinity != 0))
        assert np.all(world.geom_contype[colliding] == ROBOT_CONTYPE)


def test_collision_geoms_of_every_copy_match_the_single_robot():
    spec = RobotSpec.load("go2")
    one = load_model(spec)
    world = build_world_model(spec, 4)
    single = np.sort(one.geom_size[one.geom_bodyid != 0], axis=0)
    for i in range(4):
        bodies = [b for b in range(world.nbody) if world.body(b).name.startswith(f"r{i}/")]
        mine = np.sort(world.geom_size[np.isin(world.geom_bodyid, bodies)], axis=0)
        assert np.array_equal(mine, single)
