"""The gate's power (acceptance): with the walking Go2 policy, the gate passes the unmodified
bundle and rejects each planted fault (power.standard_faults of the Go2: two joints swapped in the joint map,
action scale doubled, kp halved, observation normalizer removed, 40 ms of extra latency, base
angular velocity in the world frame, a 0.1 rad encoder offset on one thigh, the policy at 25 Hz,
joint velocities x2, kd halved, a one-tick action delay, one motor reversed, the gyro in deg/s),
on 3 seeds (the gate's default is 5; bench/gate.py measures that); the verdict is the same for the same seed set; a fine-tuned
candidate worse than the running bundle is refused with the reason.

The policy comes from $SAC2REAL_GATE_BUNDLE or the registry's current Go2 bundle; without one the
test is skipped and says why. The bundle is copied first: nothing is recorded in the original."""
from __future__ import annotations

import shutil

import pytest

from deploy.sim2sim.power import gate_bundle, gate_power, standard_faults, table
from deploy.spec import RobotSpec

SOURCE, WHY = gate_bundle()
pytestmark = pytest.mark.skipif(SOURCE is None, reason=WHY)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    work = tmp_path_factory.mktemp("gate") / "go2" / SOURCE.name
    shutil.copytree(SOURCE, work)
    rows = gate_power(work, log=print, seeds=(0, 1, 2))     # CI time; bench/gate.py: 5 seeds
    print(f"\ngate power on {SOURCE} ({WHY}):\n{table(rows)}")
    return {r.fault: r for r in rows}


def test_the_gate_passes_the_unmodified_walking_policy(verdicts):
    row = verdicts["none"]
    assert row.passed, f"the unmodified bundle failed: {row.first_failures}"


@pytest.mark.parametrize("fault", standard_faults(RobotSpec.load("go2")))
def test_the_gate_rejects_a_planted_fault(verdicts, fault):
    assert not verdicts[fault].passed, f"the gate passed a bundle with {fault}"


def test_the_gate_signs_its_verdict_and_records_only_paths_inside_the_bundle(tmp_path, capsys):
    """`--report DIR` outside the bundle: policy.json names a copy of report.json inside the bundle,
    never DIR (issue 19). `--sign-key`: the signed bundle loads under a hardware trust rule that
    lists the key. Gated again without a key: recorded unsigned, with a note, the stale signature
    gone."""
    import json

    from deploy import signing
    from deploy.bundle import PolicyBundle, read_meta
    from deploy.cli import main

    work = tmp_path / "registry" / "go2" / SOURCE.name
    shutil.copytree(SOURCE, work, ignore=shutil.ignore_patterns(signing.SIGNATURE_FILE))
    scen = tmp_path / "still.yaml"
    scen.write_text("episode: {duration_s: 1.0, settle_s: 0.2}\nthresholds: {falls: 0}\n"
                    "scenarios: [{name: still}]\n")
    key, pub = signing.new_key("gate", tmp_path / "private", tmp_path / "public")
    outside = tmp_path / "reports" / "run1"
    assert main(["sim2sim", str(work), "--scenarios", str(scen), "--report", str(outside),
                 "--no-plots", "--sign-key", str(key)]) == 0
    assert "signed by key 'gate'" in capsys.readouterr().err
    verdict = read_meta(work)["sim2sim"]
    assert str(tmp_path) not in (work / "policy.json").read_text()
    assert not verdict["report"].startswith("/") and (work / verdict["report"]).is_file()
    assert json.loads((work / verdict["report"]).read_text()) == \
        json.loads((outside / "report.json").read_text())
    spec = RobotSpec.load("go2")
    trust = signing.TrustCheck(signing.TrustConfig(None, signing.trusted_keys([str(pub)], tmp_path)),
                               hardware=True)
    assert PolicyBundle.load(work, spec, providers="cpu", trust=trust).signature["key"]["name"] == "gate"

    assert main(["sim2sim", str(work), "--scenarios", str(scen), "--no-plots"]) == 0
    assert "verdict recorded UNSIGNED" in capsys.readouterr().err
    assert not (work / signing.SIGNATURE_FILE).exists()
    PolicyBundle.load(work, spec, providers="cpu")


def test_a_verdict_is_reproducible_for_its_seed_set_and_gives_effect_sizes(tmp_path):
    from deploy.sim2sim.gate import run_gate

    runs = [run_gate(SOURCE, record=False, plots=False, seeds=(5, 6), log=lambda m: None,
                     report_dir=tmp_path / str(k)).to_dict() for k in range(2)]
    for r in runs:
        r.pop("wall_s"), r.pop("report")
    assert runs[0] == runs[1]
    rows = runs[0]["comparison"]
    assert runs[0]["passed"] and runs[0]["seeds"] == [5, 6] and len(rows) > 40
    assert all(r["low"] <= r["diff"] <= r["high"] and r["pairs"] >= 3 for r in rows)
    assert {"effect", "cohen_d", "tolerance"} <= set(rows[0])


def test_a_candidate_worse_than_the_running_bundle_is_refused_with_the_reason(tmp_path):
    """The candidate here is the running bundle deployed with its damping halved (what a worse
    fine-tune looks like from outside: it rocks more and tracks turns worse)."""
    from deploy.sim2sim.faults import parse_fault
    from deploy.sim2sim.gate import run_gate
    from deploy.spec import RobotSpec

    spec = RobotSpec.load("go2")
    r = run_gate(SOURCE, record=False, plots=False, against=SOURCE, log=lambda m: None, seeds=(0,),
                 faults=(parse_fault("kd_scale:0.5", spec),), spec=spec, report_dir=tmp_path)
    verdict = r.to_dict()
    assert not verdict["passed"] and verdict["against"] == SOURCE.name
    worse = [x for x in verdict["regression"] if x["flagged"]]
    assert worse and all(x["low"] > x["tolerance"] for x in worse)
    assert any(reason.startswith(f"worse than {SOURCE.name}: {worse[0]['statistic']}")
               for reason in verdict["reasons"])
