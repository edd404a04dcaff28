"""The gate's power: run the gate on a bundle unmodified and with each standard planted fault; a
gate with power passes the first and rejects every other (`sac2real sim2sim BUNDLE --power`,
tests/test_sim2sim_gate.py). Nothing is recorded in the bundle."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from deploy.sim2sim.faults import parse_fault
from deploy.sim2sim.scenarios import DEFAULT_SEEDS
from deploy.spec import RobotSpec

ENV_VAR = "SAC2REAL_GATE_BUNDLE"
# The catalogue, with the joints a fault acts on named by role so that every robot gets the same
# faults: {first} and {second} are the first two joints in policy order (a left/right pair on the
# Go2 and G1), {thigh} the last hip-flexion joint and {knee} the first knee; on the Go2 these are
# FL_hip/FR_hip, RR_thigh and FL_calf, the joints the notes' measurements used.
FAULT_TEMPLATES = (
    "swap_joints:{first},{second}",
    "action_scale:2",
    "kp_scale:0.5",
    "no_normalizer",
    "latency:0.04",
    "ang_vel_world",
    "encoder_offset:{thigh},0.1",
    "decimation:2",
    "joint_vel_scale:2",
    "kd_scale:0.5",
    "action_delay:1",
    "motor_inverted:{knee}",
    "gyro_deg",
)
ROLES = {"thigh": re.compile(r"thigh|hip_pitch|HFE"), "knee": re.compile(r"calf|knee|KFE")}


def standard_faults(spec: RobotSpec) -> tuple[str, ...]:
    """FAULT_TEMPLATES with this robot's joints filled in."""
    names = spec.joint_names
    found = {role: [n for n in names if pattern.search(n)] for role, pattern in ROLES.items()}
    missing = [f"{role} ({ROLES[role].pattern})" for role, hits in found.items() if not hits]
    if missing:
        raise ValueError(f"{spec.name}: no joint name matches the fault catalogue's "
                         f"{', '.join(missing)}; name the faults with --fault")
    joints = dict(first=names[0], second=names[1], thigh=found["thigh"][-1], knee=found["knee"][0])
    return tuple(t.format(**joints) for t in FAULT_TEMPLATES)


@dataclass
class PowerRow:
    fault: str                 # "none" for the unmodified bundle
    passed: bool
    expected: bool             # what a gate with power says
    episodes_failed: int
    episodes: int
    first_failures: list[str]
    wall_s: float
    behaviour_flags: int = 0   # statistics whose interval lies beyond the tolerance

    @property
    def ok(self) -> bool:
        return self.passed == self.expected


def gate_bundle() -> tuple[Path | None, str]:
    """The walking policy to test the gate with: $SAC2REAL_GATE_BUNDLE, else the registry's
    current Go2 bundle; (None, why) when there is none yet."""
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env)
        return (p, f"${ENV_VAR}") if p.is_dir() else (None, f"${ENV_VAR}={env} is not a folder")
    from deploy.registry import PolicyRegistry, RegistryError
    try:
        current = PolicyRegistry().current("go2")
    except RegistryError as exc:
        return None, f"the registry's current Go2 pointer is broken: {exc}"
    if current is None:
        return None, (f"no walking Go2 bundle yet: set ${ENV_VAR} to a bundle folder or promote "
                      f"one (sac2real models promote ...)")
    return current, "registry current go2"


def gate_power(bundle_path: str | Path, scenarios: str | Path | None = None,
               faults: tuple[str, ...] | None = None, report_root: str | Path | None = None,
               log: Callable[[str], None] = lambda m: None,
               seeds: Sequence[int] = DEFAULT_SEEDS) -> list[PowerRow]:
    """`faults`: the robot's standard_faults when None."""
    from deploy.bundle import read_meta
    from deploy.sim2sim.gate import run_gate

    spec = RobotSpec.load(read_meta(bundle_path)["robot"]["name"])
    rows = []
    for label in ("none",) + (standard_faults(spec) if faults is None else tuple(faults)):
        planted = () if label == "none" else (parse_fault(label, spec),)
        report = None if report_root is None else \
            Path(report_root) / label.replace(":", "_").replace(",", "-")
        r = run_gate(bundle_path, scenarios, report or _scratch(), planted, record=False,
                     spec=spec, plots=report is not None, log=log, seeds=seeds)
        failed = [x for x in r.results if not x.passed]
        rows.append(PowerRow(label, r.passed, label == "none", len(failed), len(r.results),
                             r.failures()[:3], round(r.wall_s, 2),
                             sum(x.flagged for x in r.comparison)))
        log(f"gate power: {label}: {'PASS' if r.passed else 'FAIL'} ({len(failed)}/{len(r.results)} "
            f"episodes failed) {r.wall_s:.1f} s")
    return rows


def _scratch() -> Path:
    import tempfile
    return Path(tempfile.mkdtemp(prefix="sim2sim-power-"))


def table(rows: list[PowerRow]) -> str:
    """A Markdown table of the verdicts."""
    lines = ["| planted fault | gate verdict | expected | episodes failed | behaviour flags | "
             "first failures | s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        first = "; ".join(r.first_failures) if r.first_failures else "-"
        lines.append(f"| {r.fault} | {'PASS' if r.passed else 'FAIL'} | "
                     f"{'PASS' if r.expected else 'FAIL'}{'' if r.ok else ' (WRONG)'} | "
                     f"{r.episodes_failed}/{r.episodes} | {r.behaviour_flags} | {first} | {r.wall_s} |")
    return "\n".join(lines)
