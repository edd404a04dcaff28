"""Deployment settings of one robot: `configs/deploy/<robot>.yaml` (optional).

Two sections, both optional, every key optional; what a file leaves out is derived from the
RobotSpec, so gains, limits and rates are never typed twice:

    controller:
      stand_duration_s: 2.0     # shortest PASSIVE/DAMPING -> default pose interpolation
      blend_in_s: 0.5           # STAND -> POLICY: targets and gains cross-fade over this time
      damping_kd: null          # N m s/rad in PASSIVE and DAMPING; default: the spec's stand kd
    safety:
      max_state_age_s: null     # default 3 policy periods
      max_tilt: null            # rad in (0, pi/2]; default the spec's termination.max_tilt
      hard_limit_tolerance: 0.03   # rad a measured joint may sit beyond its hard limit; default the
                                   # spec's termination.joint_limit_tolerance where it has one
      joint_velocity_factor: 1.5   # x the spec's joint velocity limit
      rate_limit_factor: 1.0       # per-tick target change <= factor x velocity limit x policy_dt
      torque_limit_factor: 1.0     # |kp (q* - q) - kd qd| <= factor x effort (targets clamped)
      max_quat_norm_error: 0.1
      swap_require_verdict: false  # refuse a swapped-in bundle without a passing sim2sim verdict
      rollback_window_s: 2.0       # a fault this soon after a swap restores the previous bundle
      max_repeated_ticks: 0        # later ticks that may read a state already read (0: every
                                   # tick needs a new one: DAMPING by the 2nd tick after the last)
    commands:
      range_time_s: 1.0         # shortest time the policy's command crosses a range end to end
      max_accel_vx: null        # m/s^2; default: the spec's lin_vel_x range / range_time_s
      max_accel_vy: null        # m/s^2; default: lin_vel_y range / range_time_s
      max_accel_wz: null        # rad/s^2; default: ang_vel_z range / range_time_s
    contact:                    # foot contact for the reward path (deploy/contacts.py)
      foot_force_threshold: null   # a foot sensor reading over this is contact, in the units
                                # the robot's hardware reports (Go2 lowstate: raw counts); only
                                # for interfaces with foot sensors (FOOT_FORCE_INTERFACES); null:
                                # contact is estimated from leg kinematics
    trust:                      # which signed bundles this robot drives (deploy/signing.py)
      require_signature: null   # null: required on hardware backends (unitree, ros2), not on mujoco
      keys: []                  # public keys: names in configs/keys/<name>.pub, or PEM paths
                                # (relative to this file); `sac2real keys new NAME` makes one

Errors name the file and key (deploy.config.Section); every number must be finite and inside
the range its loader states (NaN or inf would switch the check it configures off)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deploy.config import Section, load_yaml
from deploy.signing import SigningError, TrustConfig, trusted_keys
from deploy.spec import REPO_ROOT, RobotSpec

DEPLOY_DIR = REPO_ROOT / "configs" / "deploy"
# hardware interfaces whose state carries foot sensor readings: the Go2's lowstate foot_force
# (int16 per foot; the G1's hg lowstate and ANYmal's topics have none)
FOOT_FORCE_INTERFACES = ("unitree_go",)
FOOT_FORCE_MAX = 32767.0        # an int16 reading never exceeds it: a threshold above it is a typo


@dataclass(frozen=True)
class ControllerConfig:
    stand_duration_s: float = 2.0
    blend_in_s: float = 0.5
    damping_kd: np.ndarray | None = None   # (J,) resolved against the spec by DeployConfig.load


@dataclass(frozen=True)
class SafetyConfig:
    """Thresholds of the SafetySupervisor; the docstring of this module says where each comes from."""

    max_state_age_s: float
    max_tilt: float
    hard_limit_tolerance: float = 0.03
    joint_velocity_factor: float = 1.5
    rate_limit_factor: float = 1.0
    torque_limit_factor: float = 1.0
    max_quat_norm_error: float = 0.1
    swap_require_verdict: bool = False
    rollback_window_s: float = 2.0
    max_repeated_ticks: int = 0     # 0: DAMPING by the 2nd tick after the last valid state

    @classmethod
    def from_spec(cls, spec: RobotSpec, **over) -> "SafetyConfig":
        base = dict(max_state_age_s=3 * spec.policy_dt, max_tilt=spec.termination.max_tilt)
        if spec.termination.joint_limit_tolerance is not None:
            base["hard_limit_tolerance"] = spec.termination.joint_limit_tolerance
        base.update({k: v for k, v in over.items() if v is not None})
        return cls(**base)


@dataclass(frozen=True)
class CommandConfig:
    """How fast the velocity command the policy sees may change (Controller.set_command).

    Training (training/envs/velocity.py) draws a command uniformly in the spec's ranges and holds
    it for the spec's resampling_time (seconds) before the next step: the policy learned to
    recover from one step, anywhere in the ranges, and then to track a held command; it never met
    a command that changes every tick, and a joystick flicked between corners or a planner's
    bang-bang output at 1 kHz made the Go2 fall. So the Controller ramps: each axis moves at most
    its acceleration x policy_dt per tick. Default: every range crossed end to end in
    `range_time_s` (1 s), so a full reversal completes well within one training command period
    while a command flipped every tick moves the applied one by only policy_dt / range_time_s of
    its range per tick (1/50 at 50 Hz)."""

    range_time_s: float = 1.0
    max_accel_vx: float | None = None
    max_accel_vy: float | None = None
    max_accel_wz: float | None = None

    def max_accel(self, spec: RobotSpec) -> np.ndarray:
        """(3,) per-axis limits (vx, vy: m/s^2, wz: rad/s^2), derived where not given."""
        derived = (spec.commands.high - spec.commands.low) / self.range_time_s
        given = (self.max_accel_vx, self.max_accel_vy, self.max_accel_wz)
        return np.array([d if g is None else g for d, g in zip(derived.tolist(), given)])


@dataclass(frozen=True)
class ContactConfig:
    """Foot contact on the robot (deploy/contacts.py). `foot_force_threshold` is in the units of
    the robot's own foot sensor readings, which for the Go2 are raw counts, not newtons; None:
    the kinematic estimate instead."""

    foot_force_threshold: float | None = None


@dataclass(frozen=True)
class DeployConfig:
    controller: ControllerConfig
    safety: SafetyConfig
    commands: CommandConfig = CommandConfig()
    source: str = "<defaults from the spec>"
    extra: dict = field(default_factory=dict)
    trust: TrustConfig = TrustConfig()
    contact: ContactConfig = ContactConfig()

    @classmethod
    def defaults(cls, spec: RobotSpec) -> "DeployConfig":
        return cls(ControllerConfig(damping_kd=spec.stand_kd.copy()), SafetyConfig.from_spec(spec))

    @classmethod
    def load(cls, spec: RobotSpec, path: str | Path | None = None) -> "DeployConfig":
        """`path`, else configs/deploy/<robot>.yaml when it exists (a variant's own, else its
        family's), else the spec's defaults."""
        if path is None:
            path = spec.settings_file(DEPLOY_DIR)
            if not path.is_file():
                return cls.defaults(spec)
        path = Path(path)
        root = Section(load_yaml(path), path)
        root.allow([], ["controller", "safety", "commands", "trust", "contact"])
        c = root.sub("controller", {})
        c.allow([], ["stand_duration_s", "blend_in_s", "damping_kd"])
        kd = c.number("damping_kd", None, low=0.0, high=100.0)
        controller = ControllerConfig(
            stand_duration_s=c.number("stand_duration_s", 2.0, low=0.1, high=60.0),
            blend_in_s=c.number("blend_in_s", 0.5, low=0.0, high=10.0),
            damping_kd=spec.stand_kd.copy() if kd is None else np.full(spec.num_joints, kd))
        s = root.sub("safety", {})
        s.allow([], ["max_state_age_s", "max_tilt", "hard_limit_tolerance", "joint_velocity_factor",
                     "rate_limit_factor", "torque_limit_factor", "max_quat_norm_error",
                     "swap_require_verdict", "rollback_window_s", "max_repeated_ticks"])
        safety = SafetyConfig.from_spec(
            spec, **_safety_numbers(s, spec, list(safety_ranges(spec))),
            swap_require_verdict=s.get("swap_require_verdict", bool, None),
            max_repeated_ticks=s.integer("max_repeated_ticks", None, low=0, high=250))
        m = root.sub("commands", {})
        m.allow([], ["range_time_s", "max_accel_vx", "max_accel_vy", "max_accel_wz"])
        commands = CommandConfig(
            range_time_s=m.number("range_time_s", 1.0, low=0.0, high=60.0, open_low=True),
            **{k: m.number(k, None, low=0.0, high=100.0, open_low=True)
               for k in ("max_accel_vx", "max_accel_vy", "max_accel_wz")})
        trust = load_trust(root.sub("trust", {}), path)
        return cls(controller, safety, commands, str(path), trust=trust,
                   contact=load_contact(root.sub("contact", {}), spec))

    def with_safety(self, **over) -> "DeployConfig":
        return replace(self, safety=replace(self.safety, **over))

    def with_checked_safety(self, spec: RobotSpec, source: str, section: str,
                            **over: float) -> "DeployConfig":
        """with_safety for thresholds given outside a config file (a node's parameters): each
        is held to the range the file's would be, so no setting there can switch a check off."""
        s = Section(over, source, section)
        s.allow([], list(safety_ranges(spec)))
        return self.with_safety(**_safety_numbers(s, spec, list(over)))

    def with_controller(self, **over) -> "DeployConfig":
        return replace(self, controller=replace(self.controller, **over))

    def with_commands(self, **over) -> "DeployConfig":
        return replace(self, commands=replace(self.commands, **over))

    def repeats_within_age(self, spec: RobotSpec) -> "DeployConfig":
        """A state may be read again on the ticks within the age limit (the age check alone then
        decides): for a robot simulated on this host in real time, whose physics thread delivers
        a state whenever the host schedules it, or a machine too loaded to keep the 2-tick bound."""
        ticks = math.ceil(self.safety.max_state_age_s / spec.policy_dt - 1e-9) - 1
        return self.with_safety(max_repeated_ticks=max(self.safety.max_repeated_ticks, ticks))


def safety_ranges(spec: RobotSpec) -> dict[str, tuple[float, float, bool]]:
    """(low, high, open_low) of each numeric safety threshold, wherever it is set (the deploy file,
    the node's parameters): one table, so no entry point allows what the file does not."""
    return {"max_state_age_s": (spec.policy_dt, 5.0, False),
            "max_tilt": (0.0, math.pi / 2, True),
            "hard_limit_tolerance": (0.0, 0.5, False),
            "joint_velocity_factor": (0.1, 10.0, False),
            "rate_limit_factor": (0.01, 10.0, False),
            "torque_limit_factor": (0.05, 2.0, False),
            "max_quat_norm_error": (1e-3, 0.5, False),
            "rollback_window_s": (0.0, 600.0, False)}


def _safety_numbers(s: Section, spec: RobotSpec, keys: list[str]) -> dict[str, float | None]:
    ranges = safety_ranges(spec)
    return {k: s.number(k, None, low=ranges[k][0], high=ranges[k][1], open_low=ranges[k][2])
            for k in keys}


def load_contact(c: Section, spec: RobotSpec) -> ContactConfig:
    """The `contact:` section: a foot force threshold only for a robot whose hardware reports
    foot forces, finite and inside the reading's range."""
    c.allow([], ["foot_force_threshold"])
    threshold = c.number("foot_force_threshold", None, low=0.0, high=FOOT_FORCE_MAX, open_low=True)
    if threshold is not None and spec.interface not in FOOT_FORCE_INTERFACES:
        raise c.error("foot_force_threshold", f"robot '{spec.name}' (hardware interface "
                      f"'{spec.interface}') reports no foot force; only "
                      f"{', '.join(FOOT_FORCE_INTERFACES)} do: remove the key")
    return ContactConfig(threshold)


def load_trust(t: Section, path: Path) -> TrustConfig:
    """The `trust:` section: public keys read now, so a missing or bad key file stops the start."""
    t.allow([], ["require_signature", "keys"])
    entries = t.get("keys", list, [])
    for i, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            raise t.error(f"keys[{i}]", f"expected a key name or a .pub path, got {entry!r}")
    try:
        keys = trusted_keys(entries, path.parent)
    except SigningError as exc:
        raise t.error("keys", str(exc)) from exc
    return TrustConfig(t.get("require_signature", (bool, type(None)), None), keys, str(path))
