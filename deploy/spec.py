"""RobotSpec: the one source of truth for a robot, shared by training, sim2sim and the robot.

Joints are listed in *policy order*. Every index map (policy<->hardware, policy<->MJCF) is derived
from joint names and the per-joint motor index, never typed as a separate table, because a joint-order
mismatch is the most common way a real deployment fails."""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from deploy.config import ConfigError, Section, load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
ROBOTS_DIR = REPO_ROOT / "configs" / "robots"
HARDWARE_INTERFACES = {
    # interface name: number of motor slots in its low-level message
    "unitree_hg": 35,   # unitree_hg LowCmd_.motor_cmd[35] (G1, H1-2)
    "unitree_go": 20,   # unitree_go LowCmd_.motor_cmd[20] (Go2)
    "anymal_ros2": 12,  # this project's ANYmal topic contract (one slot per actuated joint)
}
# Ranges a spec's numbers are checked against on load: wide enough for any legged robot's actuators
# (the largest here: G1 kp 200 N m/rad, effort 139 N m, velocity 37 rad/s; ANYmal's multi-turn
# joints +-3 pi), narrow enough that a unit or exponent typo (kp: 1.0e9) is refused.
JOINT_RANGE = 4 * math.pi      # rad, limits and default positions
MAX_KP = 5000.0                # N m / rad
MAX_KD = 500.0                 # N m s / rad
MAX_EFFORT = 2000.0            # N m
MAX_VELOCITY = 100.0           # rad / s
MAX_COMMAND = 10.0             # m/s and rad/s, command ranges


@dataclass(frozen=True)
class JointSpec:
    name: str
    motor: int
    default: float
    lower: float
    upper: float
    kp: float
    kd: float
    effort: float
    velocity: float
    armature: float = 0.0   # reflected rotor inertia, kg m^2 (must match the MJCF)
    damping: float = 0.0    # passive joint damping, N m s/rad (must match the MJCF)


@dataclass(frozen=True)
class ObsTermSpec:
    term: str
    scale: float = 1.0
    clip: float | None = None
    noise: float = 0.0


@dataclass(frozen=True)
class HeightScanSpec:
    size: tuple[float, float]
    resolution: float
    offset: float
    noise: float
    clip: float

    @property
    def shape(self) -> tuple[int, int]:
        """Rays along x and y, counted the way IsaacLab's GridPatternCfg counts them."""
        nx = int(round(self.size[0] / self.resolution)) + 1
        ny = int(round(self.size[1] / self.resolution)) + 1
        return nx, ny

    @property
    def num_rays(self) -> int:
        nx, ny = self.shape
        return nx * ny


@dataclass(frozen=True)
class CommandSpec:
    lin_vel_x: tuple[float, float]
    lin_vel_y: tuple[float, float]
    ang_vel_z: tuple[float, float]
    resampling_time: float
    standing_fraction: float

    @property
    def low(self) -> np.ndarray:
        return np.array([self.lin_vel_x[0], self.lin_vel_y[0], self.ang_vel_z[0]])

    @property
    def high(self) -> np.ndarray:
        return np.array([self.lin_vel_x[1], self.lin_vel_y[1], self.ang_vel_z[1]])

    def out_of_range(self, command) -> str | None:
        """The first of (vx, vy, wz) outside these ranges, described, or None. 1e-9 of slack for
        numbers that went through text."""
        for v, lo, hi, what in zip(command, self.low, self.high, ("vx", "vy", "wz")):
            if not lo - 1e-9 <= v <= hi + 1e-9:
                return f"{what} = {v:g} is outside the robot's command range [{lo:g}, {hi:g}]"
        return None

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 3) commands as training draws them: uniform in the ranges, a standing_fraction of
        them zero (the training env and a simulated robot's operator share this rule)."""
        command = rng.uniform(self.low, self.high, (n, 3))
        command[rng.random(n) < self.standing_fraction] = 0.0
        return command


@dataclass(frozen=True)
class SwingPattern:
    """A stepping pattern in joint space driven by the gait clock: each leg bends by a half sine over
    its swing (`apex` rad of flexion at mid-swing, none in stance), spread over its flex joints by
    their shares. The gait_joint_reference reward pays for following it; with `feedforward` the
    action map adds it to the policy's targets, a trajectory generator under a residual policy
    (PMTG, Iscen et al. 2018): the policy's zero action steps in place, and what it learns is the
    balance and steering around the steps, where a policy that must find stepping itself stays in
    its safer double stance."""
    apex: float
    joints: tuple[int, ...]      # policy joint indices
    feet: tuple[int, ...]        # the foot each joint's leg ends in (spec feet order)
    shares: tuple[float, ...]    # rad of that joint per rad of flexion
    feedforward: bool


@dataclass(frozen=True)
class GaitSpec:
    """A periodic gait clock (the `gait_phase` observation, the `gait_contact` reward): each foot
    runs through one cycle of `period` seconds, shifted by its offset (a fraction of the cycle), and
    should be on the ground for the first `stance` fraction of it."""
    period: float
    offsets: tuple[float, ...]   # per foot, spec feet order
    stance: float
    swing: SwingPattern | None = None

    def foot_phases(self, clock: np.ndarray) -> np.ndarray:
        """(N, F) phase in [0, 1) of each foot at `clock` (N,) seconds since the policy started;
        rounded to 1e-9 so that one tick gives one phase whichever way its clock was computed
        (a stance boundary falls exactly on a tick)."""
        cycles = np.asarray(clock, np.float64)[:, None] / self.period + np.asarray(self.offsets)
        return np.mod(np.round(cycles, 9), 1.0)

    def clock_of(self, sin_cos: np.ndarray) -> np.ndarray:
        """(N,) a clock (modulo the period) whose `gait_phase` observation is `sin_cos` (N, 2): how
        a logged transition's observation gives back the phases the reward needs."""
        angle = np.arctan2(sin_cos[:, 0], sin_cos[:, 1]) / (2.0 * np.pi)
        return np.mod(angle - self.offsets[0], 1.0) * self.period

    def swing_height(self, phases: np.ndarray, apex: float) -> np.ndarray:
        """(N, F) the clearance each foot should have at `phases`: 0 in stance, a half sine rising
        to `apex` metres and back over the swing, so the foot leaves and meets the ground smoothly."""
        swing = np.clip((phases - self.stance) / (1.0 - self.stance), 0.0, 1.0) if self.stance < 1 \
            else np.zeros_like(phases)
        return apex * np.sin(np.pi * swing)

    def leg_bend(self, phases: np.ndarray) -> np.ndarray:
        """(N, F) each leg's wanted flexion (rad) at `phases`: the swing pattern's half sine."""
        return self.swing_height(phases, self.swing.apex)

    def joint_offsets(self, clock: np.ndarray, num_joints: int) -> np.ndarray:
        """(N, J) the swing pattern's joint offsets at `clock` seconds (policy order)."""
        bend = self.leg_bend(self.foot_phases(clock))
        out = np.zeros((bend.shape[0], num_joints))
        out[:, list(self.swing.joints)] = bend[:, list(self.swing.feet)] * np.asarray(self.swing.shares)
        return out


@dataclass(frozen=True)
class TerminationSpec:
    max_tilt: float
    min_base_height: float
    contacts: tuple[str, ...]
    # rad: a joint measured beyond its hard limits by more is a fall in training, as it is a fault
    # for the robot's safety supervisor (its hard_limit_tolerance defaults to this); None: no rule
    joint_limit_tolerance: float | None = None


@dataclass(frozen=True)
class RobotSpec:
    name: str
    source: str
    mjcf: str
    interface: str
    joints: tuple[JointSpec, ...]
    action_scale: float
    soft_limit_factor: float
    policy_dt: float
    sim_dt: float
    decimation: int
    base_body: str
    foot_bodies: tuple[str, ...]
    penalized_contacts: tuple[str, ...]
    base_height: float
    observations: tuple[ObsTermSpec, ...]
    height_scan: HeightScanSpec
    commands: CommandSpec
    termination: TerminationSpec
    stand_kp_scale: float = 1.0
    stand_kd_scale: float = 1.0
    stand_gantry: bool = False   # cannot balance on PD at the STAND gains: simulators hang it until
                                 # the policy has taken over (deploy.sim_world.SimWorld.set_gantry)
    gait: GaitSpec | None = None
    # terms only the critic sees, exact (an asymmetric critic): what the robot cannot measure but
    # the reward depends on, e.g. base_lin_vel for a policy whose layout leaves it out
    critic_observations: tuple[ObsTermSpec, ...] = ()
    # the robot this spec is a variant of (`base:` in its file), whose deployment settings, gate
    # scenarios and rewards it shares unless it has its own
    variant_of: str | None = None
    hash: str = field(default="", compare=False)

    @property
    def family(self) -> str:
        """The physical robot: the name per-robot settings are looked up under after the spec's own."""
        return self.variant_of or self.name

    def settings_file(self, directory: Path) -> Path:
        """`<name>.yaml` in a per-robot settings folder, else the family's (which may not exist)."""
        own = Path(directory) / f"{self.name}.yaml"
        return own if own.is_file() else Path(directory) / f"{self.family}.yaml"

    def settings_key(self, keys) -> str:
        """The key of a per-robot section: the spec's name where the section has it, else the family's."""
        return self.name if self.name in keys else self.family

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, robot_or_path: str | Path, check_mjcf: bool = True) -> "RobotSpec":
        """Load `configs/robots/<name>.yaml` (or a path), validate it, optionally against its MJCF."""
        path = Path(robot_or_path)
        if path.suffix not in (".yaml", ".yml"):
            path = ROBOTS_DIR / f"{robot_or_path}.yaml"
            if not path.is_file():
                known = sorted(p.stem for p in ROBOTS_DIR.glob("*.yaml"))
                raise ConfigError(path, "robot", f"unknown robot '{robot_or_path}' "
                                  f"(known: {', '.join(known)})")
        data, variant_of = _read_spec_file(path)
        spec = _parse(Section(data, path), path, variant_of)
        if check_mjcf:
            from deploy.mjcf import check_against_mjcf
            check_against_mjcf(spec)
        return spec

    # ---- derived arrays, all in policy order ---------------------------------------------
    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    def _column(self, attr: str) -> np.ndarray:
        return _read_only(np.array([getattr(j, attr) for j in self.joints], dtype=np.float64))

    @cached_property
    def default_pos(self) -> np.ndarray:
        return self._column("default")

    @cached_property
    def hard_lower(self) -> np.ndarray:
        return self._column("lower")

    @cached_property
    def hard_upper(self) -> np.ndarray:
        return self._column("upper")

    @cached_property
    def soft_lower(self) -> np.ndarray:
        mid, half = self._soft_mid_half()
        return _read_only(mid - half)

    @cached_property
    def soft_upper(self) -> np.ndarray:
        mid, half = self._soft_mid_half()
        return _read_only(mid + half)

    def _soft_mid_half(self) -> tuple[np.ndarray, np.ndarray]:
        """Soft limits shrink the hard range about its middle (IsaacLab's soft_joint_pos_limit_factor)."""
        mid = 0.5 * (self.hard_lower + self.hard_upper)
        half = 0.5 * (self.hard_upper - self.hard_lower) * self.soft_limit_factor
        return mid, half

    @cached_property
    def kp(self) -> np.ndarray:
        return self._column("kp")

    @cached_property
    def kd(self) -> np.ndarray:
        return self._column("kd")

    @cached_property
    def stand_kp(self) -> np.ndarray:
        """Gains of the STAND state (holding the default pose without a policy), which on several
        robots must be stiffer than the policy's gains to carry the robot's weight."""
        return _read_only(self.kp * self.stand_kp_scale)

    @cached_property
    def stand_kd(self) -> np.ndarray:
        return _read_only(self.kd * self.stand_kd_scale)

    @cached_property
    def effort_limit(self) -> np.ndarray:
        return self._column("effort")

    @cached_property
    def velocity_limit(self) -> np.ndarray:
        return self._column("velocity")

    @property
    def motor_slots(self) -> int:
        return HARDWARE_INTERFACES[self.interface]

    @cached_property
    def policy_to_hardware(self) -> np.ndarray:
        """policy_to_hardware[i] is the motor index of policy joint i."""
        return _read_only(np.array([j.motor for j in self.joints], dtype=np.int64))

    @cached_property
    def hardware_to_policy(self) -> np.ndarray:
        """hardware_to_policy[m] is the policy index driving motor m, or -1 for an unused slot."""
        inverse = np.full(self.motor_slots, -1, dtype=np.int64)
        inverse[self.policy_to_hardware] = np.arange(self.num_joints)
        return _read_only(inverse)

    def joint_index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f"robot '{self.name}' has no joint '{name}' "
                           f"(joints: {', '.join(self.joint_names)})") from None

    def joints_matching(self, pattern: str) -> list[int]:
        """Policy indices of joints whose name matches a regular expression (reward groups use it)."""
        import re
        rx = re.compile(pattern)
        return [i for i, n in enumerate(self.joint_names) if rx.fullmatch(n)]

    def fallen(self, contact: np.ndarray, up_z: np.ndarray, base_height: np.ndarray,
               joint_pos: np.ndarray) -> np.ndarray:
        """(N,) bool: the termination's fall, one rule for the training env and sim2sim's reference
        rollouts: a termination contact, the base tilted past max_tilt (`up_z`, the world z of its
        z axis, below cos max_tilt), the base below min_base_height, or a joint beyond its limits."""
        return self.toppled(contact, up_z, base_height) | self.beyond_joint_limits(joint_pos)

    def toppled(self, contact: np.ndarray, up_z: np.ndarray, base_height: np.ndarray) -> np.ndarray:
        """(N,) bool: the fall less its joint-limit rule, for the gate, where the Controller's
        safety supervisor faults on joints beyond their limits (at the same tolerance by default)
        and the gate reports that as the fault it is."""
        t = self.termination
        return np.asarray(contact, dtype=bool) | (np.asarray(up_z) < math.cos(t.max_tilt)) \
            | (np.asarray(base_height) < t.min_base_height)

    def beyond_joint_limits(self, joint_pos: np.ndarray) -> np.ndarray:
        """(N,) bool: a joint of `joint_pos` (N, J) beyond its hard limits by more than the
        termination's joint_limit_tolerance (never, without one)."""
        tol = self.termination.joint_limit_tolerance
        if tol is None:
            return np.zeros(joint_pos.shape[0], dtype=bool)
        return ((joint_pos < self.hard_lower - tol) | (joint_pos > self.hard_upper + tol)).any(1)

    @property
    def swing_feedforward(self) -> bool:
        """Whether the action map adds the gait's swing pattern to the policy's targets."""
        return self.gait is not None and self.gait.swing is not None and self.gait.swing.feedforward

    def joints_named_by(self, section: Section, key: str, pattern: str) -> list[int]:
        """joints_matching for a config's `key` (in `section`): a pattern that does not compile or
        matches no joint is refused naming the file and field."""
        import re
        try:
            hits = self.joints_matching(str(pattern))
        except re.error as exc:
            raise section.error(key, f"'{pattern}' is not a regular expression ({exc})") from None
        if not hits:
            raise section.error(key, f"regex '{pattern}' matches no joint of {self.name} "
                                f"(joints: {', '.join(self.joint_names)})")
        return hits

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("hash")
        return d


def _read_only(array: np.ndarray) -> np.ndarray:
    """Derived arrays are computed once per spec and shared: nobody may change them in place."""
    array.setflags(write=False)
    return array


def _read_spec_file(path: Path) -> tuple[dict, str | None]:
    """A spec file's settings and the robot it is a variant of. `base: ROBOT` (a robot of
    configs/robots) makes the file a variant: the same robot with other choices (an observation
    layout its hardware can feed, say), stating only the top-level keys that differ, which replace
    the base's. A variant has its own name, bundles and registry entry, and shares the base's
    deployment settings, gate scenarios and rewards unless it has its own (RobotSpec.family)."""
    data = load_yaml(path)
    if "base" not in data:
        return data, None
    base = data.pop("base")
    known = sorted(p.stem for p in ROBOTS_DIR.glob("*.yaml"))
    if not isinstance(base, str) or base not in known:
        raise ConfigError(path, "base", f"{base!r} is not a robot in {ROBOTS_DIR} "
                          f"(known: {', '.join(known)})")
    base_path = ROBOTS_DIR / f"{base}.yaml"
    merged = load_yaml(base_path)
    if "base" in merged:
        raise ConfigError(path, "base", f"'{base}' is itself a variant (of {merged['base']!r}): "
                          f"name the robot it is a variant of")
    if not isinstance(data.get("name"), str) or data["name"] in (base, merged.get("name")):
        raise ConfigError(path, "name", f"a variant needs a name of its own, not {data.get('name')!r} "
                          f"(its base is '{base}')")
    if "mjcf" in merged and "mjcf" not in data:     # the base's model, wherever this file is
        merged["mjcf"] = str((base_path.parent / merged["mjcf"]).resolve())
    merged.update(data)
    return merged, base


def _parse(root: Section, path: Path, variant_of: str | None = None) -> RobotSpec:
    root.allow(["name", "mjcf", "hardware", "timing", "action", "bodies", "joints", "observations",
                "height_scan", "commands", "termination"], ["stand", "gait", "critic_observations"])
    stand = root.sub("stand", {})
    stand.allow([], ["kp_scale", "kd_scale", "gantry"])
    hw = root.sub("hardware")
    hw.allow(["interface"])
    timing = root.sub("timing")
    timing.allow(["policy_dt", "sim_dt", "decimation"])
    action = root.sub("action")
    action.allow(["scale", "soft_limit_factor"])
    bodies = root.sub("bodies")
    bodies.allow(["base", "feet", "base_height"], ["penalized_contacts"])
    interface = hw.choice("interface", HARDWARE_INTERFACES)

    policy_dt = timing.number("policy_dt", low=1e-4, high=1.0)
    sim_dt = timing.number("sim_dt", low=1e-5, high=1.0)
    decimation = timing.integer("decimation", low=1, high=1000)
    if decimation < 1 or abs(sim_dt * decimation - policy_dt) > 1e-9:
        raise timing.error("decimation", f"sim_dt * decimation = {sim_dt * decimation:g} must "
                           f"equal policy_dt = {policy_dt:g}")

    mjcf = root.get("mjcf", str)
    mjcf_path = (path.parent / mjcf).resolve()
    joints = _parse_joints(root, HARDWARE_INTERFACES[interface])
    observations = _parse_observations(root)
    spec = RobotSpec(
        name=root.get("name", str),
        source=str(path),
        mjcf=str(mjcf_path),
        interface=interface,
        joints=joints,
        action_scale=action.number("scale", low=0.0, high=10.0, open_low=True),
        soft_limit_factor=action.number("soft_limit_factor", low=0.0, high=1.0, open_low=True),
        policy_dt=policy_dt,
        sim_dt=sim_dt,
        decimation=decimation,
        base_body=bodies.get("base", str),
        foot_bodies=tuple(_names(bodies, "feet")),
        penalized_contacts=tuple(_names(bodies, "penalized_contacts", [])),
        base_height=bodies.number("base_height", low=0.0, high=5.0, open_low=True),
        observations=observations,
        height_scan=_parse_height_scan(root.sub("height_scan")),
        commands=_parse_commands(root.sub("commands")),
        termination=_parse_termination(root.sub("termination")),
        stand_kp_scale=stand.number("kp_scale", 1.0, low=0.1, high=20.0),
        stand_kd_scale=stand.number("kd_scale", 1.0, low=0.1, high=20.0),
        stand_gantry=stand.get("gantry", bool, False),
        gait=_parse_gait(root, len(_names(bodies, "feet"))),
        critic_observations=_parse_critic_observations(root, observations),
        variant_of=variant_of,
    )
    _check_defaults_inside_soft_limits(spec, root)
    _check_gait_terms(spec, root)
    spec = _with_swing(spec, root)
    digest = hashlib.sha256(json.dumps(_hashed_content(spec), sort_keys=True).encode()).hexdigest()
    return _replace_hash(spec, digest)


def _hashed_content(spec: RobotSpec) -> dict:
    """Everything a deployment must agree on; file locations are left out so the hash travels."""
    d = spec.to_dict()
    d.pop("source")
    d.pop("mjcf")
    d.pop("stand_gantry")   # how a simulator holds the robot while it stands, not a policy contract
    if d["gait"] is None:   # added 2026-12: a spec without a gait clock keeps its earlier hash
        d.pop("gait")
    elif d["gait"]["swing"] is None:   # and one without a swing pattern, its own
        d["gait"].pop("swing")
    if d["termination"]["joint_limit_tolerance"] is None:     # so does one without this rule
        d["termination"].pop("joint_limit_tolerance")
    if not d["critic_observations"]:                          # and one without critic terms
        d.pop("critic_observations")
    if d["variant_of"] is None:                               # and every robot that is no variant
        d.pop("variant_of")
    return d


def _replace_hash(spec: RobotSpec, digest: str) -> RobotSpec:
    object.__setattr__(spec, "hash", digest)
    return spec


def _names(section: Section, key: str, default=...) -> list[str]:
    values = section.get(key, list, default)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise Section(section.data, section.file, section.key(key)).error(
                i, f"expected a body name (string), got {v!r}")
    return values


def _parse_joints(root: Section, motor_slots: int) -> tuple[JointSpec, ...]:
    rows = root.items("joints")
    if not rows:
        raise root.error("joints", "at least one joint is required")
    joints, seen_names, seen_motors = [], {}, {}
    for row in rows:
        row.allow(["name", "motor", "default", "limits", "kp", "kd", "effort", "velocity"],
                  ["armature", "damping"])
        name = row.get("name", str)
        if name in seen_names:
            raise row.error("name", f"duplicated joint '{name}' (also at joints[{seen_names[name]}])")
        motor = row.get("motor", int)
        if not 0 <= motor < motor_slots:
            raise row.error("motor", f"motor index {motor} of joint '{name}' is outside "
                            f"0..{motor_slots - 1} for this hardware interface")
        if motor in seen_motors:
            raise row.error("motor", f"motor index {motor} of joint '{name}' is already used by "
                            f"'{seen_motors[motor]}'")
        lower, upper = row.pair("limits", low=-JOINT_RANGE, high=JOINT_RANGE)
        if lower == upper:
            raise row.error("limits", f"joint '{name}' has an empty range [{lower}, {upper}]")
        default = row.number("default", low=-JOINT_RANGE, high=JOINT_RANGE)
        if not lower <= default <= upper:
            raise row.error("default", f"default position {default} of joint '{name}' is outside "
                            f"its limits [{lower}, {upper}]")
        joints.append(JointSpec(name=name, motor=motor, default=default, lower=lower, upper=upper,
                                kp=row.number("kp", low=0.0, high=MAX_KP),
                                kd=row.number("kd", low=0.0, high=MAX_KD),
                                effort=row.number("effort", low=0.0, high=MAX_EFFORT, open_low=True),
                                velocity=row.number("velocity", low=0.0, high=MAX_VELOCITY,
                                                    open_low=True),
                                armature=row.number("armature", 0.0, low=0.0, high=10.0),
                                damping=row.number("damping", 0.0, low=0.0, high=100.0)))
        seen_names[name] = len(joints) - 1
        seen_motors[motor] = name
    return tuple(joints)


def _check_defaults_inside_soft_limits(spec: RobotSpec, root: Section) -> None:
    """The action bounds of rsl_rl_sac.md Sec. 3.2 assume the default pose lies inside the soft range."""
    lo, hi = spec.soft_lower, spec.soft_upper
    for i, j in enumerate(spec.joints):
        if not lo[i] <= j.default <= hi[i]:
            raise ConfigError(root.file, f"joints[{i}].default",
                              f"default position {j.default} of joint '{j.name}' is outside its soft "
                              f"limits [{lo[i]:.4f}, {hi[i]:.4f}] (limits x soft_limit_factor "
                              f"{spec.soft_limit_factor})")


def _parse_observations(root: Section) -> tuple[ObsTermSpec, ...]:
    from deploy.observations import TERMS
    return tuple(_term_rows(root, "observations", sorted(TERMS), "observation", noise=True))


def _parse_critic_observations(root: Section,
                               policy: tuple[ObsTermSpec, ...]) -> tuple[ObsTermSpec, ...]:
    """The critic's extra terms: exact values (no noise: the critic is never run on the robot's
    sensors alone), none the policy sees already."""
    from deploy.observations import TERMS
    if "critic_observations" not in root.data:
        return ()
    allowed = sorted(set(TERMS) - {t.term for t in policy} - {"height_scan"})
    terms = _term_rows(root, "critic_observations", allowed, "critic observation", noise=False)
    if not terms:
        raise root.error("critic_observations", "an empty list; leave the key out for a critic "
                         "that sees the policy's observation only")
    return tuple(terms)


def _term_rows(root: Section, key: str, names: list[str], what: str, noise: bool) -> list[ObsTermSpec]:
    """The rows of an observation list: each a term of `names`, listed once, with its scale and
    clip, and its noise where the list allows one."""
    terms = []
    for row in root.items(key):
        row.allow(["term"], ["scale", "clip", "noise"] if noise else ["scale", "clip"])
        name = row.choice("term", names)
        if any(t.term == name for t in terms):
            raise row.error("term", f"{what} term '{name}' is listed twice")
        if name == "height_scan":
            raise row.error("term", "height_scan is configured under 'height_scan' and added by "
                            "the rough-terrain task, not listed here")
        terms.append(ObsTermSpec(term=name,
                                 scale=row.number("scale", 1.0, low=0.0, high=1e3, open_low=True),
                                 clip=row.number("clip", None, low=0.0, high=1e3, open_low=True),
                                 noise=row.number("noise", 0.0, low=0.0, high=10.0) if noise
                                 else 0.0))
    return terms


def _parse_gait(root: Section, feet: int) -> GaitSpec | None:
    if "gait" not in root.data:
        return None
    sec = root.sub("gait")
    sec.allow(["period", "offsets", "stance"], ["swing"])
    offsets = sec.vector("offsets", feet, low=0.0, high=1.0,
                         what=f"one phase offset per foot in [0, 1), {feet} feet")
    if max(offsets) >= 1.0:
        raise sec.error("offsets", f"{list(offsets)}: an offset is a fraction of the cycle, in [0, 1)")
    return GaitSpec(period=sec.number("period", low=0.1, high=5.0),
                    offsets=tuple(offsets),
                    stance=sec.number("stance", low=0.0, high=1.0, open_low=True))


def _with_swing(spec: RobotSpec, root: Section) -> RobotSpec:
    """`gait.swing: {apex, flex: {joint regex: share}, feedforward}`, read once the joints are known:
    each regex must match one joint per foot, which belongs to the foot whose body name shares the
    longest prefix with it (left_knee_joint: left_ankle_roll_link)."""
    if spec.gait is None or "swing" not in root.data["gait"]:
        return spec
    sec = root.sub("gait").sub("swing")
    sec.allow(["apex", "flex"], ["feedforward"])
    flex = sec.sub("flex")
    if not flex.data:
        raise sec.error("flex", "needs at least one `joint regex: share` row")
    joints, feet, shares = [], [], []
    for pattern in flex.data:
        share = flex.number(pattern, low=-10.0, high=10.0)
        matched = spec.joints_named_by(flex, pattern, pattern)
        owners = [max(range(len(spec.foot_bodies)),
                      key=lambda f: len(os.path.commonprefix([spec.joint_names[j], spec.foot_bodies[f]])))
                  for j in matched]
        if sorted(owners) != list(range(len(spec.foot_bodies))):
            raise flex.error(pattern, f"must match one joint per foot ({', '.join(spec.foot_bodies)}); "
                             f"matches {[spec.joint_names[j] for j in matched]}")
        joints += matched
        feet += owners
        shares += [share] * len(matched)
    if len(set(joints)) < len(joints):
        raise sec.error("flex", "a joint is matched by more than one regex")
    swing = SwingPattern(apex=sec.number("apex", low=0.0, high=1.5, open_low=True), joints=tuple(joints),
                         feet=tuple(feet), shares=tuple(shares),
                         feedforward=sec.get("feedforward", bool, False))
    return replace(spec, gait=replace(spec.gait, swing=swing))


def _check_gait_terms(spec: RobotSpec, root: Section) -> None:
    """The clock's observation term needs the clock's definition."""
    for key, terms in (("observations", spec.observations),
                       ("critic_observations", spec.critic_observations)):
        if spec.gait is None and any(t.term == "gait_phase" for t in terms):
            raise root.error(key, "term gait_phase needs a 'gait' section (period, offsets, "
                             "stance) in this robot's spec")


def _parse_height_scan(sec: Section) -> HeightScanSpec:
    sec.allow(["size", "resolution", "offset", "noise", "clip"])
    return HeightScanSpec(size=sec.vector("size", 2, low=0.0, high=10.0, open_low=True,
                                                     what="[length_x, width_y] in metres"),
                          resolution=sec.number("resolution", low=1e-3, high=1.0),
                          offset=sec.number("offset", low=-10.0, high=10.0),
                          noise=sec.number("noise", low=0.0, high=1.0),
                          clip=sec.number("clip", low=0.0, high=100.0, open_low=True))


def _parse_commands(sec: Section) -> CommandSpec:
    sec.allow(["lin_vel_x", "lin_vel_y", "ang_vel_z", "resampling_time", "standing_fraction"])
    return CommandSpec(lin_vel_x=sec.pair("lin_vel_x", low=-MAX_COMMAND, high=MAX_COMMAND),
                       lin_vel_y=sec.pair("lin_vel_y", low=-MAX_COMMAND, high=MAX_COMMAND),
                       ang_vel_z=sec.pair("ang_vel_z", low=-MAX_COMMAND, high=MAX_COMMAND),
                       resampling_time=sec.number("resampling_time", low=0.02, high=3600.0),
                       standing_fraction=sec.number("standing_fraction", low=0.0, high=1.0))


def _parse_termination(sec: Section) -> TerminationSpec:
    sec.allow(["max_tilt", "min_base_height", "contacts"], ["joint_limit_tolerance"])
    return TerminationSpec(max_tilt=sec.number("max_tilt", low=0.0, high=math.pi / 2,
                                               open_low=True),
                           min_base_height=sec.number("min_base_height", low=0.0, high=5.0),
                           contacts=tuple(_names(sec, "contacts")),
                           joint_limit_tolerance=sec.number("joint_limit_tolerance", None, low=0.0,
                                                            high=0.5))


def available_robots() -> list[str]:
    return sorted(p.stem for p in ROBOTS_DIR.glob("*.yaml"))
