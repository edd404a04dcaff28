"""Deployment settings of one robot: `configs/deploy/<robot>.yaml` (optional).

Two sections, both optional, every key optional; what a file leaves out is derived from the
RobotSpec, so gains, limits and rates are never typed twice:

    controller:
      stand_duration_s: 2.0     # shortest PASSIVE/DAMPING -> default pose interpolation
      blend_in_s: 0.5           # STAND -> POLICY: targets and gains cross-fade over this time
      damping_kd: null          # N m s/rad in PASSIVE and DAMPING; default: the spec's stand kd
    safety:
      max_state_age_s: null     # default 3 policy periods
      max_tilt: null            # rad; default the spec's termination.max_tilt (training's fall)
      hard_limit_tolerance: 0.03   # rad a measured joint may sit beyond its hard limit
      joint_velocity_factor: 1.5   # x the spec's joint velocity limit
      rate_limit_factor: 1.0       # per-tick target change <= factor x velocity limit x policy_dt
      torque_limit_factor: 1.0     # |kp (q* - q) - kd qd| <= factor x effort (targets clamped)
      max_quat_norm_error: 0.1
      swap_require_verdict: false  # refuse a swapped-in bundle without a passing sim2sim verdict
      rollback_window_s: 2.0       # a fault this soon after a swap restores the previous bundle

Errors name the file and key (deploy.config.Section)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deploy.config import Section, load_yaml
from deploy.spec import REPO_ROOT, RobotSpec

DEPLOY_DIR = REPO_ROOT / "configs" / "deploy"


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

    @classmethod
    def from_spec(cls, spec: RobotSpec, **over) -> "SafetyConfig":
        base = dict(max_state_age_s=3 * spec.policy_dt, max_tilt=spec.termination.max_tilt)
        base.update({k: v for k, v in over.items() if v is not None})
        return cls(**base)


@dataclass(frozen=True)
class DeployConfig:
    controller: ControllerConfig
    safety: SafetyConfig
    source: str = "<defaults from the spec>"
    extra: dict = field(default_factory=dict)

    @classmethod
    def defaults(cls, spec: RobotSpec) -> "DeployConfig":
        return cls(ControllerConfig(damping_kd=spec.stand_kd.copy()), SafetyConfig.from_spec(spec))

    @classmethod
    def load(cls, spec: RobotSpec, path: str | Path | None = None) -> "DeployConfig":
        """`path`, else configs/deploy/<robot>.yaml when it exists, else the spec's defaults."""
        if path is None:
            path = DEPLOY_DIR / f"{spec.name}.yaml"
            if not path.is_file():
                return cls.defaults(spec)
        path = Path(path)
        root = Section(load_yaml(path), path)
        root.allow([], ["controller", "safety"])
        c = root.sub("controller", {})
        c.allow([], ["stand_duration_s", "blend_in_s", "damping_kd"])
        kd = c.number("damping_kd", None, low=0.0)
        controller = ControllerConfig(
            stand_duration_s=c.number("stand_duration_s", 2.0, low=0.1, high=60.0),
            blend_in_s=c.number("blend_in_s", 0.5, low=0.0, high=10.0),
            damping_kd=spec.stand_kd.copy() if kd is None else np.full(spec.num_joints, kd))
        s = root.sub("safety", {})
        s.allow([], ["max_state_age_s", "max_tilt", "hard_limit_tolerance", "joint_velocity_factor",
                     "rate_limit_factor", "torque_limit_factor", "max_quat_norm_error",
                     "swap_require_verdict", "rollback_window_s"])
        safety = SafetyConfig.from_spec(
            spec,
            max_state_age_s=s.number("max_state_age_s", None, low=spec.policy_dt, high=5.0),
            max_tilt=s.number("max_tilt", None, low=0.05, high=3.1416),
            hard_limit_tolerance=s.number("hard_limit_tolerance", None, low=0.0, high=0.5),
            joint_velocity_factor=s.number("joint_velocity_factor", None, low=0.1, high=10.0),
            rate_limit_factor=s.number("rate_limit_factor", None, low=0.01, high=10.0),
            torque_limit_factor=s.number("torque_limit_factor", None, low=0.05, high=2.0),
            max_quat_norm_error=s.number("max_quat_norm_error", None, low=1e-3, high=0.5),
            swap_require_verdict=s.get("swap_require_verdict", bool, None),
            rollback_window_s=s.number("rollback_window_s", None, low=0.0, high=600.0))
        return cls(controller, safety, str(path))

    def with_safety(self, **over) -> "DeployConfig":
        return replace(self, safety=replace(self.safety, **over))

    def with_controller(self, **over) -> "DeployConfig":
        return replace(self, controller=replace(self.controller, **over))
