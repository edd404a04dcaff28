"""A robot whose spec says `stand: gantry: true` (the G1: it cannot balance on PD at Unitree's
gains) is hung in sim2sim from its reset until the policy has blended in, then left to the policy:
a real G1 checkpoint exported to a real bundle, run through the gate's runner on MuJoCo."""
from __future__ import annotations

import re

import pytest

from deploy.bundle import PolicyBundle
from deploy.deploy_config import DeployConfig
from deploy.sim2sim.gate import default_scenarios
from deploy.sim2sim.runner import run_episodes
from deploy.sim2sim.scenarios import ScenarioFile, with_overrides
from deploy.spec import RobotSpec

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def g1_bundle(tmp_path_factory) -> tuple[RobotSpec, PolicyBundle]:
    """An untrained G1 policy (a few seconds of training): it cannot balance yet."""
    from training.export import export_checkpoint
    from training.smoke import train_smoke_run

    ckpt = train_smoke_run(tmp_path_factory.mktemp("run"), "g1")
    path = export_checkpoint(ckpt, tmp_path_factory.mktemp("policies"), parity_samples=200,
                             log=lambda *a: None)
    spec = RobotSpec.load("g1")
    return spec, PolicyBundle.load(path, spec, providers="cpu")


def test_the_gate_holds_a_gantry_robot_until_the_policy_has_blended_in(g1_bundle):
    spec, bundle = g1_bundle
    assert spec.stand_gantry
    scenarios = ScenarioFile.load(default_scenarios(spec), spec)
    episodes = [with_overrides(e, duration_s=4.0) for e in scenarios.episodes
                if e.scenario in ("stand_still", "crouched_start")]
    assert len(episodes) == 2
    blend_in = DeployConfig.load(spec).controller.blend_in_s
    for result in run_episodes(spec, bundle, episodes):
        name = result.episode.name
        # STAND on the gantry raised it to the default pose at Unitree's gains
        assert result.reached_policy, (name, result.end_reason)
        assert result.metrics["stand_error"] <= scenarios.thresholds["stand_error"], name
        # hung through the blend-in, then on its own: the untrained policy lets it fall, which
        # the gate sees as a fall or, where the tilt gets there first, as the Controller's tilt fault
        fell = re.fullmatch(r"fell at t = ([0-9.]+) s", result.end_reason)
        if fell is None:
            assert result.end_reason.startswith("controller fault: tilt"), (name, result.end_reason)
            times = {t["to"]: t["time"] for t in result.transitions}
            assert times["DAMPING"] - times["POLICY"] > blend_in, (name, result.transitions)
        else:
            assert float(fell.group(1)) > blend_in, (name, result.end_reason)
