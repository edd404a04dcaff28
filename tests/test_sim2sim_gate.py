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
