"""The gate's power (acceptance): with the walking Go2 policy, the gate passes the unmodified
bundle and rejects each planted fault: two joints swapped in the joint map, action scale doubled,
kp halved, observation normalizer removed, 40 ms of extra latency, base angular velocity in the
world frame.

The policy comes from $SAC2REAL_GATE_BUNDLE or the registry's current Go2 bundle; without one the
test is skipped and says why. The bundle is copied first: nothing is recorded in the original."""
from __future__ import annotations

import shutil

import pytest

from deploy.sim2sim.power import STANDARD_FAULTS, gate_bundle, gate_power, table

SOURCE, WHY = gate_bundle()
pytestmark = pytest.mark.skipif(SOURCE is None, reason=WHY)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    work = tmp_path_factory.mktemp("gate") / "go2" / SOURCE.name
    shutil.copytree(SOURCE, work)
    rows = gate_power(work, log=print)
    print(f"\ngate power on {SOURCE} ({WHY}):\n{table(rows)}")
    return {r.fault: r for r in rows}


def test_the_gate_passes_the_unmodified_walking_policy(verdicts):
    row = verdicts["none"]
    assert row.passed, f"the unmodified bundle failed: {row.first_failures}"


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
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
    from deploy.spec import RobotSpec

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
