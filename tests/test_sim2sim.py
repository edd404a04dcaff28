"""sim2sim: scenario files validated with messages that name the key; the gate runs the deployment
Controller on MuJoCo, writes report.json and plots, records its verdict in the bundle (which still
loads) and exits 0 on a pass, 1 on a fail or a refused bundle; planted faults change exactly what
they say and never record a verdict; `sac2real run` runs headless and says why there is no viewer."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from deploy.bundle import PolicyBundle, read_manifest, read_meta
from deploy.cli import main
from deploy.config import ConfigError
from deploy.sim2sim.faults import FaultError, parse_fault
from deploy.sim2sim.scenarios import DEFAULT_FILE, DEFAULT_SEEDS, ScenarioFile
from deploy.spec import RobotSpec


def write_scenarios(path: Path, thresholds: dict, duration=1.0) -> Path:
    path.write_text(yaml.safe_dump({
        "episode": {"duration_s": duration, "settle_s": 0.2},
        "thresholds": thresholds,
        "scenarios": [{"name": "still"},
                      {"name": "walk", "commands": [[0.0, 0.5, 0.0, 0.0]],
                       "pushes": [{"t": 0.5, "dv": [0.0, 0.3]}], "friction": 0.6,
                       "action_latency_s": 0.01}]}))
    return path


# ---- scenario files ---------------------------------------------------------------------------
def test_the_default_scenario_file_is_valid(spec):
    sf = ScenarioFile.load(DEFAULT_FILE, spec)
    names = [e.name for e in sf.episodes]
    assert len(names) == len(set(names)) >= 10
    scen = {e.scenario for e in sf.episodes}
    assert {"sweep", "push", "slippery", "payload", "latency", "noisy", "fallen_start"} <= scen


@pytest.mark.parametrize("edit, key, words", [
    (lambda d: d["scenarios"][0].update(frictoin=0.5), "scenarios[0].frictoin", "did you mean 'friction'"),
    (lambda d: d["scenarios"][1].update(commands=[[0.0, 3.0, 0.0, 0.0]]), "scenarios[1].commands[0]",
     "outside the robot's command range"),
    (lambda d: d["thresholds"].update(lin_vel_eror=0.2), "thresholds.lin_vel_eror", "unknown key"),
    (lambda d: d["scenarios"][1]["pushes"][0].update(dv=[1.0]), "scenarios[1].pushes[0].dv", "[dvx, dvy]"),
    (lambda d: d["scenarios"].append({"name": "still"}), "scenarios[2].name", "used twice"),
    (lambda d: d["scenarios"][0].update(start={"joint_pos": {"FL_knee": 1.0}}),
     "scenarios[0].start.joint_pos.FL_knee", "matches no joint"),
    (lambda d: d["episode"].update(duration_s=-1), "episode.duration_s", "outside the allowed range"),
    (lambda d: d["scenarios"][1].update(sweep={"vx": [0.5]}), "scenarios[1].sweep", "not both"),
])
def test_scenario_file_errors_name_the_key(spec, tmp_path, edit, key, words):
    path = write_scenarios(tmp_path / "s.yaml", {"falls": 0})
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        ScenarioFile.load(path, spec)
    assert str(path) in str(info.value)
    assert info.value.key == key, info.value
    assert words in str(info.value)


def test_a_bad_scenario_file_exits_2_with_the_key(bundle_dir, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("scenarios: [{name: a, duration: 3}]\nthresholds: {}\n")
    assert main(["sim2sim", str(bundle_dir), "--scenarios", str(path)]) == 2
    assert "scenarios[0].duration" in capsys.readouterr().err


# ---- the gate end to end ------------------------------------------------------------------------
def test_gate_passes_records_the_verdict_and_the_bundle_still_loads(spec, bundle_dir, tmp_path):
    scen = write_scenarios(tmp_path / "s.yaml", {})            # no thresholds: must only reach POLICY
    assert main(["sim2sim", str(bundle_dir), "--scenarios", str(scen)]) == 0
    meta = read_meta(bundle_dir)
    v = meta["sim2sim"]
    assert v["passed"] is True and v["onnx_sha256"] == read_manifest(bundle_dir)["policy.onnx"]
    report = bundle_dir / v["report"]
    assert report.name == "report.json" and report.is_file()
    data = json.loads(report.read_text())
    seeds = list(DEFAULT_SEEDS)
    assert data["passed"] and data["seeds"] == seeds and len(seeds) >= 3
    assert [(e["name"], e["episode"]["gate_seed"]) for e in data["episodes"]] == \
        [(n, s) for s in seeds for n in ("still", "walk")]
    assert len({e["episode"]["seed"] for e in data["episodes"]}) == 2 * len(seeds)
    for e in data["episodes"]:
        assert e["transitions"][0]["to"] == "STAND" and e["transitions"][1]["to"] == "POLICY"
        assert e["metrics"]["policy_s"] == pytest.approx(1.0, abs=0.03)
    assert {"tracking.png", "metrics.png"} <= set(data["plots"])
    listed = read_manifest(bundle_dir)
    assert str(Path(v["report"]).parent / "tracking.png") in listed
    PolicyBundle.load(bundle_dir, spec, providers="cpu")       # manifest covers the report


def test_gate_fails_on_a_threshold_and_says_which(spec, bundle_dir, tmp_path, capsys):
    scen = write_scenarios(tmp_path / "s.yaml", {"lin_vel_error": 1e-4, "falls": 0})
    assert main(["sim2sim", str(bundle_dir), "--scenarios", str(scen), "--no-plots"]) == 1
    out = capsys.readouterr().out
    assert "walk@s0: lin_vel_error" in out and "FAILED" in out
    v = read_meta(bundle_dir)["sim2sim"]
    assert v["passed"] is False and any("lin_vel_error" in f for f in v["metrics"]["failures"])
    PolicyBundle.load(bundle_dir, spec, providers="cpu")


def test_a_refused_bundle_is_never_loaded_and_fails_the_gate(bundle_dir, tmp_path, capsys):
    (bundle_dir / "policy.onnx").write_bytes((bundle_dir / "policy.onnx").read_bytes()[:-1])
    before = sorted(p.name for p in bundle_dir.rglob("*"))
    scen = write_scenarios(tmp_path / "s.yaml", {})
    assert main(["sim2sim", str(bundle_dir), "--scenarios", str(scen)]) == 1
    assert "refused" in capsys.readouterr().err
    assert sorted(p.name for p in bundle_dir.rglob("*")) == before


def test_a_fault_run_reports_outside_the_bundle_and_records_nothing(spec, bundle_dir, tmp_path):
    scen = write_scenarios(tmp_path / "s.yaml", {})
    manifest = (bundle_dir / "manifest.sha256").read_text()
    report = tmp_path / "fault_report"
    code = main(["sim2sim", str(bundle_dir), "--scenarios", str(scen), "--report", str(report),
                 "--fault", "kp_scale:0.5", "--fault", "swap_joints:FL_hip_joint,FR_hip_joint",
                 "--no-plots"])
    assert code in (0, 1)
    assert (bundle_dir / "manifest.sha256").read_text() == manifest
    assert read_meta(bundle_dir)["sim2sim"] is None
    data = json.loads((report / "report.json").read_text())
    assert data["faults"] == ["kp_scale:0.5", "swap_joints:FL_hip_joint,FR_hip_joint"]
    walk = data["episodes"][1]["conditions"]
    assert walk["joint_perm"][:2] == [1, 0] and walk["action_latency_s"] == pytest.approx(0.01)


# ---- faults do exactly what they say ----------------------------------------------------------------
def test_fault_arguments_are_checked(spec):
    with pytest.raises(FaultError, match="known: swap_joints"):
        parse_fault("swap_legs", spec)
    with pytest.raises(FaultError, match="no joint 'FL_knee'"):
        parse_fault("swap_joints:FL_knee,FR_hip_joint", spec)
    with pytest.raises(FaultError, match="takes a number"):
        parse_fault("latency:forty", spec)


def test_backend_faults_rewire_the_state_and_commands(spec):
    from deploy.backends.mujoco_backend import MujocoBackend, SimConditions, quat_rotate
    base = SimConditions(sensor_noise=0.0)
    swap = parse_fault("swap_joints:FL_hip_joint,RR_calf_joint", spec).conditions(spec, base)
    world = parse_fault("ang_vel_world", spec).conditions(spec, base)
    late = parse_fault("latency:0.04", spec).conditions(spec, base)
    assert late.action_latency_s == pytest.approx(0.04)
    i, j = spec.joint_index("FL_hip_joint"), spec.joint_index("RR_calf_joint")
    truth = MujocoBackend(spec, conditions=base)
    wired = MujocoBackend(spec, conditions=swap)
    yaw = np.array([np.cos(0.6), 0, 0, np.sin(0.6)])
    for b in (truth, wired):
        b.fleet.reset(0, base_quat=yaw)
        b.fleet.world.shards[0].data.qvel[3:6] = [0.3, -0.2, 0.5]
        b.fleet.publish()
    q_true, q_seen = truth.read_state().state.joint_pos[0], wired.read_state().state.joint_pos[0]
    assert q_seen[i] == q_true[j] and q_seen[j] == q_true[i]
    target = spec.default_pos.copy()
    target[i] += 0.2
    wired.write_command(target, spec.kp, spec.kd)
    wired.advance(1)
    ctrl = wired.fleet.world.shards[0].data.ctrl[wired.fleet.world.shards[0].idx.actuator[0]]
    assert ctrl[j] == pytest.approx(target[i]) and ctrl[i] == pytest.approx(target[j])
    turned = MujocoBackend(spec, conditions=world)
    turned.fleet.reset(0, base_quat=yaw)
    turned.fleet.world.shards[0].data.qvel[3:6] = [0.3, -0.2, 0.5]
    turned.fleet.publish()
    s = turned.read_state().state
    body = truth.read_state().state.base_ang_vel
    np.testing.assert_allclose(s.base_ang_vel, quat_rotate(s.base_quat, body), atol=1e-12)
    assert not np.allclose(s.base_ang_vel, body)
    for b in (truth, wired, turned):
        b.close()


def test_controller_and_bundle_faults(spec, bundle_dir):
    pytest.importorskip("onnx")
    from deploy.backends.mujoco_backend import MujocoBackend
    from deploy.controller import Controller
    bundle = PolicyBundle.load(bundle_dir, spec, providers="cpu")
    ctrl = Controller(spec, MujocoBackend(spec), bundle)
    parse_fault("action_scale:2", spec).controller(ctrl)
    parse_fault("kp_scale:0.5", spec).controller(ctrl)
    assert ctrl.action_map.scale == 2 * spec.action_scale
    np.testing.assert_allclose(ctrl.policy_kp, 0.5 * spec.kp)
    raw = parse_fault("no_normalizer", spec).bundle(bundle)
    obs = np.asarray(bundle.meta["golden"]["obs"][1], np.float32)       # the normalizer's mean
    assert raw.id == bundle.id and not np.allclose(raw.act(obs), bundle.act(obs))
    # the raw graph sees obs as the normalized one sees (obs - mean) / std; with obs = mean -> 0
    np.testing.assert_allclose(bundle.act(obs), raw.act(np.zeros_like(obs)), atol=1e-5)


# ---- sac2real run ---------------------------------------------------------------------------------
def test_run_degrades_to_headless_with_a_clear_message(bundle_dir, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code = main(["run", "--robot", "go2", "--backend", "mujoco", "--policy", str(bundle_dir),
                 "--duration", "0.5", "--viewer", "--command", "0.3,0,0"])
    captured = capsys.readouterr()
    assert "viewer not opened: no display" in captured.err
    out = json.loads(captured.out)
    assert [t["to"] for t in out["transitions"]][:3] == ["STAND", "POLICY", "DAMPING"] or \
        out["safety"]["last_fatal"], out["transitions"]
    assert code in (0, 1)
    assert out["loop"]["stages_us"]["tick"]["n"] > 50


def test_run_fast_lockstep(bundle_dir, capsys):
    code = main(["run", "--robot", "go2", "--policy", str(bundle_dir), "--duration", "1",
                 "--fast"])
    out = json.loads(capsys.readouterr().out)
    assert out["transitions"][0]["to"] == "STAND" and out["transitions"][1]["to"] == "POLICY"
    assert code in (0, 1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_damps_the_robot_before_it_exits(bundle_dir, sig):
    """`kill` (systemd, a launcher) or Ctrl-C while the policy walks: the loop goes to DAMPING
    and the run reports it, instead of the process vanishing with the last targets held."""
    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "run", "--robot", "go2",
                             "--policy", str(bundle_dir), "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if " POLICY " in line:             # a status line: the policy drives
            break
    else:
        pytest.fail("the run never reported POLICY:\n" + "".join(seen[-20:]))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert "run: interrupted, damping" in err
    report = json.loads(out)
    assert report["mode"] == "DAMPING"
    assert [t["to"] for t in report["transitions"]][-2:] == ["POLICY", "DAMPING"]
    assert proc.returncode == 0


def _stand_from(spec, start, seed: int, passive_s: float):
    """(base height, |q - default| per joint) after PASSIVE for passive_s, then 5 s of STAND."""
    from deploy.backends.mujoco_backend import MujocoBackend
    from deploy.controller import Controller
    from deploy.state_machine import Mode

    backend = MujocoBackend(spec, seed=seed)
    if start is not None:
        backend.fleet.reset(0, joint_pos=start[0], base_pos=start[1], base_quat=start[2])
    backend.fleet.world.set_gantry(np.array([0]), spec.stand_gantry)   # as the gate hangs it
    ctrl = Controller(spec, backend, None, clock=backend.clock)
    for _ in range(1 + int(passive_s / spec.policy_dt)):
        ctrl.tick()
        backend.advance()
    ctrl.request_stand()
    for _ in range(int(5.0 / spec.policy_dt)):
        ctrl.tick()
        backend.advance()
    assert ctrl.mode is Mode.STAND, ctrl.transitions
    err = np.abs(backend.read_state().state.joint_pos[0] - spec.default_pos)
    height = float(backend.fleet.world.base_pos[0, 2])
    backend.close()
    return height, err


@pytest.mark.parametrize("robot", ["go2", "anymal_d", "g1"])
def test_each_robots_scenarios_load_and_its_start_pose_can_be_stood_up_from(robot):
    """The gate picks configs/sim2sim/<robot>.yaml (or default.yaml): it must validate against that
    robot's spec, and STAND alone must recover its special start (fallen or crouched) to the height
    it stands at from the spawn pose and within the file's stand_error (checked for both starts), or
    the gate would fail every policy there."""
    from deploy.sim2sim.gate import default_scenarios
    from deploy.sim2sim.scenarios import start_pose

    spec = RobotSpec.load(robot)
    sf = ScenarioFile.load(default_scenarios(spec), spec)
    special = [e for e in sf.episodes if e.start.joint_pos]
    assert special, "no start pose to check"
    ep = special[0]
    start = start_pose(spec, ep.start, ep.yaw, np.random.default_rng(ep.seed))
    ref_height, ref_err = _stand_from(spec, None, ep.seed, ep.passive_s)
    height, err = _stand_from(spec, start, ep.seed, ep.passive_s)
    assert start[1][2] < ref_height - 0.05, "the start is not below the standing height"
    assert height > ref_height - 0.02, (height, ref_height)
    limit = sf.thresholds["stand_error"]
    assert max(err.max(), ref_err.max()) <= limit, (err.max(), ref_err.max(), limit)


# ---- the new catalogue faults rewire exactly one thing ------------------------------------------
def _wired(spec, label):
    from deploy.backends.mujoco_backend import MujocoBackend, SimConditions
    robot = MujocoBackend(spec, conditions=SimConditions(sensor_noise=0.0))
    robot.fleet.world.shards[0].data.qvel[3:6] = [0.3, -0.2, 0.5]
    robot.fleet.publish()
    return robot, parse_fault(label, spec).backend(spec, robot)


@pytest.mark.parametrize("label, joint, state, command", [
    ("encoder_offset:RR_thigh_joint,0.1", "RR_thigh_joint", lambda q: q + 0.1, lambda t: t - 0.1),
    ("motor_inverted:FL_calf_joint", "FL_calf_joint", lambda q: -q, lambda t: -t),
])
def test_encoder_faults_rewire_one_joint_in_state_and_command(spec, label, joint, state, command):
    truth, wired = _wired(spec, label)
    j = spec.joint_index(joint)
    true, seen = truth.read_state().state, wired.read_state().state
    assert seen.joint_pos[0, j] == pytest.approx(state(true.joint_pos[0, j]))
    others = np.arange(spec.num_joints) != j
    np.testing.assert_array_equal(seen.joint_pos[0, others], true.joint_pos[0, others])
    assert truth.read_state().state.joint_pos[0, j] == true.joint_pos[0, j]   # never in place
    target = spec.default_pos + 0.05
    wired.write_command(target, spec.kp, spec.kd)
    sent = truth.commands[-1][1]
    assert sent[j] == pytest.approx(command(target[j]))
    np.testing.assert_array_equal(sent[others], target[others])
    truth.close()


def test_sensor_scale_faults(spec):
    truth, fast = _wired(spec, "joint_vel_scale:2")
    _, deg = _wired(spec, "gyro_deg")
    true = truth.read_state().state
    np.testing.assert_allclose(fast.read_state().state.joint_vel, 2 * true.joint_vel)
    np.testing.assert_allclose(deg.read_state().state.base_ang_vel,
                               np.degrees(deg.robot.read_state().state.base_ang_vel))
    np.testing.assert_array_equal(fast.read_state().state.base_ang_vel, true.base_ang_vel)
    with pytest.raises(FaultError, match="whole number of ticks"):
        parse_fault("decimation:1.5", spec)
    with pytest.raises(FaultError, match="needs a joint"):
        parse_fault("motor_inverted", spec)


def test_decimation_and_action_delay_hold_the_policys_actions(spec, bundle):
    from deploy.backends.mujoco_backend import MujocoBackend
    from deploy.controller import Controller
    obs = np.asarray(bundle.meta["golden"]["obs"], np.float32)[:4]
    fresh = [bundle.act(o) for o in obs]
    outs = {}
    for label in ("decimation:2", "action_delay:1", "kd_scale:0.5"):
        ctrl = Controller(spec, MujocoBackend(spec), bundle)
        parse_fault(label, spec).controller(ctrl)
        outs[label] = [ctrl.bundle.act(o) for o in obs]
        if label == "kd_scale:0.5":
            np.testing.assert_allclose(ctrl.policy_kd, 0.5 * spec.kd)
            np.testing.assert_array_equal(ctrl.policy_kp, spec.kp)
    held, late = outs["decimation:2"], outs["action_delay:1"]
    for k in (0, 1, 2, 3):
        np.testing.assert_array_equal(held[k], fresh[k - k % 2])
    np.testing.assert_array_equal(late[0], np.zeros_like(fresh[0]))
    for k in (1, 2, 3):
        np.testing.assert_array_equal(late[k], fresh[k - 1])


# ---- the statistics and the decision ------------------------------------------------------------
def test_t_quantiles_match_the_table():
    from deploy.sim2sim.compare import t_quantile
    for p, dof, table in ((0.975, 10, 2.228), (0.995, 30, 2.750), (0.9995, 30, 3.646)):
        assert t_quantile(p, dof) == pytest.approx(table, abs=2e-3)


def test_paired_flags_a_shift_beyond_tolerance_only_with_confidence():
    from deploy.sim2sim.compare import paired
    rng = np.random.default_rng(0)
    b = rng.normal(0.0, 1.0, (40, 3))
    a = b + rng.normal(0.0, 0.05, (40, 3)) + [0.5, 0.02, -0.5]
    rows = {r.statistic: r for r in paired(["x", "y", "z"], a, b, {"x": 0.1, "y": 0.1, "z": 0.1})}
    assert rows["x"].flagged and rows["z"].flagged and not rows["y"].flagged
    assert rows["x"].low > 0.1 and rows["x"].effect == pytest.approx(rows["x"].diff / 0.1)
    few = paired(["x"], a[:2], b[:2], {"x": 0.1})[0]           # two pairs: no claim either way
    assert few.pairs == 2 and not few.flagged
    worse = {r.statistic: r for r in paired(["x", "y", "z"], a, b, {"x": 0.1, "y": 0.1, "z": 0.1},
                                             worse={"x": 1, "z": 1})}
    assert worse["x"].flagged and not worse["z"].flagged and "y" not in worse   # z got better


def test_median_bounds_have_binomial_coverage_and_ignore_outliers():
    from deploy.sim2sim.compare import median_bounds
    d = np.arange(1.0, 21.0)                            # 20 pairs: P(Bin(20, 1/2) <= 5) = 0.0207
    assert median_bounds(d, 0.021) == (6.0, 15.0) and median_bounds(d, 0.02) == (5.0, 16.0)
    d[-1] = 1e6                                         # one wild episode moves neither bound
    assert median_bounds(d, 0.02) == (5.0, 16.0)
    assert median_bounds(d[:5], 0.01) == (-np.inf, np.inf)   # 5 pairs cannot reach 99 %


def test_the_window_skips_blend_in_settling_and_standing(spec):
    from deploy.sim2sim.behaviour import window
    sf = ScenarioFile.load(DEFAULT_FILE, spec)
    ep = next(e for e in sf.episodes if e.scenario == "command_steps")   # 0 / move at 2 s / 4 s
    t = np.arange(1, 301) * spec.policy_dt
    w = window(t, ep, blend_in_s=0.5)
    assert not w[t < 3.0 - 1e-9].any()                  # standing, then 1 s settle after 2 s
    assert w[(t >= 3.0) & (t < 4.0 - 1e-9)].all() and not w[(t >= 4.0) & (t < 5.0 - 1e-9)].any()
    assert w[t >= 5.0].all()


def test_gate_seeds_redraw_each_episode_and_keep_a_fixed_heading(spec):
    from deploy.sim2sim.scenarios import reseeded
    sf = ScenarioFile.load(DEFAULT_FILE, spec)
    ep = sf.episodes[0]
    assert reseeded(ep, 0) == ep
    one, two = reseeded(ep, 1), reseeded(ep, 2)
    assert len({ep.seed, one.seed, two.seed}) == 3 and len({ep.yaw, one.yaw, two.yaw}) == 3
    fixed = with_overrides_yaw(ep, 0.7)
    assert reseeded(fixed, 2).yaw == 0.7 and reseeded(fixed, 2).seed == two.seed


def with_overrides_yaw(ep, yaw):
    from deploy.sim2sim.scenarios import with_overrides
    return with_overrides(ep, fixed_yaw=yaw, yaw=yaw)


def test_a_recorded_verdict_needs_three_seeds(bundle_dir, tmp_path, capsys):
    scen = write_scenarios(tmp_path / "s.yaml", {})
    assert main(["sim2sim", str(bundle_dir), "--scenarios", str(scen), "--seeds", "0,1"]) == 2
    assert "3 seeds or more" in capsys.readouterr().err
    assert read_meta(bundle_dir)["sim2sim"] is None


def test_calibration_derives_tolerances_and_records_where_they_came_from(tmp_path, spec):
    from deploy.sim2sim.behaviour import statistic_names
    from deploy.sim2sim.calibration import MARGIN, Calibration, derive, write
    from deploy.sim2sim.compare import paired
    names = statistic_names(spec)
    rng = np.random.default_rng(1)
    per_bundle = {}
    for name, bias in (("a", 0.01), ("b", -0.03)):
        ref = rng.normal(0.0, 1.0, (30, len(names)))
        per_bundle[name] = paired(names, ref + bias + rng.normal(0, 0.02, ref.shape), ref,
                                  dict.fromkeys(names, 0.0))
    tol = derive(per_bundle)
    for stat in names[:3] + names[-3:]:
        rows = [next(r for r in rows if r.statistic == stat) for rows in per_bundle.values()]
        assert tol[stat] == pytest.approx(MARGIN * max(abs(r.diff) for r in rows)
                                          + max(r.se for r in rows), abs=1e-6)
    prov = {"bundles": [{"id": "a", "onnx_sha256": "aa"}, {"id": "b", "onnx_sha256": "bb"}],
            "seeds": [100, 101, 102], "scenarios": "configs/sim2sim/default.yaml", "command": "test"}
    path = write("go2", tol, per_bundle, 0.01, prov, tmp_path / "go2.yaml")
    cal = Calibration.load(spec, path)
    assert cal.tolerances == tol and cal.alpha == 0.01
    assert yaml.safe_load(path.read_text())["provenance"]["bundles"][1]["id"] == "b"
    with pytest.raises(ConfigError) as info:
        Calibration.load(RobotSpec.load("g1"), path)
    assert info.value.key == "robot" and str(path) in str(info.value)


@pytest.mark.parametrize("change, key, message", [
    ("delete", "tolerances.q_mean/FL_hip_joint", "required key is missing"),
    ("seed", "provenance.seeds", "not all integers"),
    ("se", "provenance.mean_and_se.20261121-185830-1573ee5c.height", "standard error"),
    ("rename", "tolerances.q_mean/FL_hip_jiont", "did you mean 'q_mean/FL_hip_joint'"),
    ("nan", "tolerances.step_freq", "nan"),
    ("negative", "tolerances.height", "outside the allowed range"),
])
def test_a_calibration_that_would_drop_or_garble_a_check_is_refused(tmp_path, spec, change, key,
                                                                     message):
    """The comparison tests only the statistics that have a tolerance: a deleted or misspelled
    key would switch one off without a word, so the loader refuses both, naming the file."""
    from deploy.sim2sim.calibration import CALIBRATION_DIR, Calibration
    data = yaml.safe_load((CALIBRATION_DIR / "go2.yaml").read_text())
    tol = data["tolerances"]
    stat = key.split(".", 1)[1]
    if change == "seed":
        data["provenance"]["seeds"][1] = 101.5
    elif change == "se":
        data["provenance"]["mean_and_se"]["20261121-185830-1573ee5c"]["height"][1] = -0.01
    elif change == "delete":
        del tol[stat]
    elif change == "rename":
        tol[stat] = tol.pop("q_mean/FL_hip_joint")
    else:
        tol[stat] = float("nan") if change == "nan" else -0.1
    path = tmp_path / "go2.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        Calibration.load(spec, path)
    assert info.value.key == key and str(path) in str(info.value)
    assert message in str(info.value).lower() or message in str(info.value)


def test_the_committed_go2_calibration_covers_every_statistic(spec):
    from deploy.sim2sim.behaviour import statistic_names
    from deploy.sim2sim.calibration import Calibration
    cal = Calibration.load(spec)
    assert cal is not None and set(cal.tolerances) == set(statistic_names(spec))
    assert all(v > 0 for v in cal.tolerances.values())


@pytest.mark.parametrize("robot", ["go2", "g1", "anymal_d"])
def test_every_robot_gets_the_whole_fault_catalogue_on_its_own_joints(robot):
    """`--power` plants the same catalogue on any robot: the joints each fault acts on are found
    by role in the robot's own names (the Go2's are the ones its measurements used)."""
    from deploy.sim2sim.power import FAULT_TEMPLATES, standard_faults

    spec = RobotSpec.load(robot)
    faults = standard_faults(spec)
    assert len(faults) == len(FAULT_TEMPLATES) and len(set(faults)) == len(faults)
    planted = [parse_fault(f, spec) for f in faults]          # each names joints this robot has
    assert len(planted) == len(faults)
    named = dict(f.split(":") for f in faults if f.startswith(("swap_joints", "encoder_offset",
                                                                "motor_inverted")))
    assert len(named) == 3 and all(j in spec.joint_names for arg in named.values()
                                   for j in arg.split(",") if not j[0].isdigit())
    if robot == "go2":
        assert named == {"swap_joints": "FL_hip_joint,FR_hip_joint",
                         "encoder_offset": "RR_thigh_joint,0.1", "motor_inverted": "FL_calf_joint"}
    if robot == "g1":
        assert named["motor_inverted"] == "left_knee_joint"
        assert named["encoder_offset"] == "right_hip_pitch_joint,0.1"
