"""The simulated robot's operator (deploy/sim_operator.py) and the `sac2real run` options that
drive it: episodes end by time or by a fall, the robot is put back on its feet, the next episode
stands and walks again; every episode is a JSON line."""
import json
import time

import numpy as np
import pytest

from deploy.backends.mujoco_backend import MujocoBackend, SimConditions
from deploy.cli import main
from deploy.controller import Controller
from deploy.sim_operator import SimOperator


def test_the_operator_resets_a_fallen_robot_and_runs_the_next_episode(spec, bundle, tmp_path):
    # the smoke-trained bundle does not walk: its episodes end in falls or safety stops
    backend = MujocoBackend(spec, SimConditions(), realtime=True)
    ctrl = Controller(spec, backend, bundle, clock=backend.clock)
    backend.start()
    ctrl.start()
    events = tmp_path / "events.jsonl"
    op = SimOperator(ctrl, backend, episode_s=2.0, seed=3, log_path=events, log=lambda _l: None)
    try:
        records = op.run(14.0)
    finally:
        ctrl.stop()
        backend.close()
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert [r["episode"] for r in lines] == list(range(len(records))) and len(records) >= 2
    ran = [r for r in records if r.policy_s > 0]
    assert len(ran) >= 2, [(r.end, r.fault) for r in records]      # stood up again after an end
    assert {r.end for r in records} <= {"time", "fall", "fault", "stand_failed", "stopped"}
    for r in ran:
        assert r.policies == [bundle.id] and r.commands
        assert (r.end in ("time", "stopped")) == (r.fault is None)
        if r.end == "time":
            assert r.policy_s >= 2.0


def test_reset_robot_puts_the_robot_back_at_its_spawn_pose_between_physics_steps(spec):
    backend = MujocoBackend(spec, SimConditions(), realtime=True).start()
    try:
        backend.push(np.array([1.5, 0.0]))
        time.sleep(0.5)
        assert backend.read_state().base_pos[0] > 0.1
        assert backend.reset_robot()
        pos = backend.read_state().base_pos
        assert abs(pos[0]) < 1e-6 and abs(pos[1]) < 1e-6
    finally:
        backend.close()


@pytest.mark.parametrize("args, says", [
    (["--command", "random"], "--command random needs --episodes"),
    (["--physics", "mass=3"], "unknown key 'mass'; allowed: friction"),
    (["--physics", "friction=0"], r"friction takes 1 finite number\(s\) in \[0.01, 5\]"),
    (["--episodes", "5", "--fast"], "--episodes runs in real time"),
    (["--backend", "unitree", "--episodes", "5"], "--episodes: only for the mujoco backend"),
])
def test_run_refuses_session_options_that_do_not_fit(args, says, bundle_dir, capsys):
    assert main(["run", "--robot", "go2", "--policy", str(bundle_dir), *args]) == 2
    assert pytest.importorskip("re").search(says, capsys.readouterr().err)
