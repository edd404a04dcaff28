"""Every fuzz module in bench/fuzzing, small and with a fixed seed: nothing bad is accepted as good
and nothing crashes. Modules are found by name, so a new entry point is tested without an edit
here; one may set SMALL_N for its CI size (default 30). bench/fuzz.py runs them long."""
from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
FUZZING = REPO / "bench" / "fuzzing"
SEED = 0
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(FUZZING)])
                 if m.name != "tally" and not m.name.startswith("_"))


def test_the_fuzz_modules_are_discovered():
    assert {"configs", "replay"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_no_bad_input_is_silently_accepted_and_nothing_crashes(name):
    module = importlib.import_module(f"bench.fuzzing.{name}")
    n = getattr(module, "SMALL_N", 30)
    tally = module.fuzz(n, SEED)
    print(json.dumps({k: v for k, v in tally.as_dict().items() if k != "examples"}))
    assert tally.tried == n
    assert tally.refused + tally.handled + tally.silently_accepted + tally.crashed == tally.tried
    assert tally.silently_accepted == 0, tally.examples
    assert tally.crashed == 0, tally.examples


@pytest.mark.parametrize("name", ["configs", "replay"])
def test_a_fuzz_run_is_deterministic_for_its_seed(name):
    module = importlib.import_module(f"bench.fuzzing.{name}")
    first, second = module.fuzz(14, 3).as_dict(), module.fuzz(14, 3).as_dict()
    assert first == second
    assert first["refused"] + first["handled"] == 14


def test_the_long_runner_prints_one_json_object_with_each_modules_tally_and_time():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "fuzz.py"), "--only", "replay",
                           "configs", "--n", "7", "--seed", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["modules"]) == {"replay", "configs"} and result["n"] == 7
    for tally in result["modules"].values():
        assert tally["tried"] == 7 and tally["seconds"] >= 0
    assert result["totals"]["tried"] == 14 and result["totals"]["silently_accepted"] == 0
    assert "fuzz replay:" in proc.stderr and "fuzz configs:" in proc.stderr
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "fuzz.py"), "--only", "nope"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "configs" in bad.stderr
