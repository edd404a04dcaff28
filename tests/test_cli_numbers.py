"""Numbers on the command lines: NaN, infinity, a zero count, a negative seed or an out-of-range
value is refused while the arguments are parsed, naming the flag and what it allows. Before
deploy/cli_types.py, `train --steps 0` trained the full profile, `demo --utd nan` ran, and
`evaluate --episodes 0` or `--seed -1` ended in a traceback."""
from __future__ import annotations

import pytest

from deploy.cli import main
from deploy.cli_types import count, number

GO2 = "models/checkpoints/go2_cpu/model.pt"


@pytest.mark.parametrize("argv, message", [
    (["train", "--robot", "go2", "--steps", "0"], "argument --steps: 0 is not a whole number >= 1"),
    (["train", "--robot", "go2", "--seed", "-3"], "argument --seed: -3 is not a whole number >= 0"),
    (["evaluate", GO2, "--episodes", "0"], "argument --episodes: 0 is not a whole number >= 1"),
    (["evaluate", GO2, "--command", "nan", "0", "0"], "argument --command: nan is not a finite number"),
    (["evaluate", GO2, "--seed", "1e3"], "argument --seed: '1e3' is not a whole number"),
    (["demo", "--utd", "nan"], "argument --utd: nan is not a finite number > 0"),
    (["demo", "--lr-scale", "inf"], "argument --lr-scale: inf is not a finite number >= 0 and <= 10"),
    (["demo", "--eval-episodes", "0"], "argument --eval-episodes: 0 is not a whole number >= 1"),
    (["demo", "--minutes", "-1"], "argument --minutes: -1 is not a finite number > 0"),
    (["demo", "--explore", "5"], "argument --explore: 5 is not a finite number >= 0 and <= 3"),
    (["finetune", "--checkpoint", "a", "--replay", "b", "--out", "c", "--every", "0"],
     "argument --every: 0 is not a whole number >= 1"),
    (["run", "--robot", "go2", "--policy", "current", "--duration", "inf"],
     "argument --duration: inf is not a finite number > 0"),
    (["run", "--robot", "go2", "--policy", "current", "--episodes", "nan"],
     "argument --episodes: nan is not a finite number > 0"),
    (["run", "--robot", "go2", "--policy", "current", "--domain", "300"],
     "argument --domain: 300 is not a whole number >= 0 and <= 232"),
    (["demo", "--prior-fraction", "2"], "argument --prior-fraction: fractions must be in [0, 1], got '2'"),
    (["sim2sim", "x", "--threads", "0"], "argument --threads: 0 is not a whole number >= 1"),
    (["preflight", "--robot", "go2", "--backend", "mujoco", "--wait", "-.5"],
     "argument --wait: -.5 is not a finite number > 0"),
])
def test_a_bad_number_is_refused_at_parse_time_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_held_command_outside_the_robots_ranges_is_refused(capsys):
    assert main(["evaluate", GO2, "--command", "5", "0", "0", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "--command 5 0 0 is outside go2's command ranges" in err and "go2.yaml" in err


def test_the_types_accept_what_they_allow():
    assert number(0.0, 1.0, open_low=True)("1") == 1.0 and number()("-2.5e3") == -2500.0
    assert count(0)("0") == 0 and count(1, 99)("99") == 99
