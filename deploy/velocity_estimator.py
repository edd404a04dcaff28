"""Base linear velocity for robots that do not measure it.

The paper's Go2, G1 and ANYmal observations start with the base linear velocity, which simulation
reads off the physics but a Unitree lowstate or an ANYmal IMU/joint-state pair does not contain.
This estimator gives the hardware backends that term from what they do receive: leg kinematics
(a foot on the ground does not move, so the base moves opposite to the foot's velocity relative to
the base) blended with the accelerometer's short-term integration, which bridges foot impacts and
swing phases. Kinematics come from the spec's own MJCF, so the estimate uses the same link lengths
the policy was trained on.

The accelerometer is integrated, so one bad reading would otherwise stay in the estimate (a NaN
for good; a 3e38 m/s^2 spike as a ~6e35 m/s velocity decaying for seconds). The backends drop such
samples at decode; the estimator also protects itself: an accelerometer reading that is not
finite or beyond `max_accel` is not integrated (the estimate holds for that reading), and an
estimate that is not finite or faster than `max_speed_mps` is never passed on (NaN, which the
Controller's state check turns into DAMPING where the policy reads the term, and which leaves the
reward unknown where only the reward path does: deploy/backends/hardware_link.py) and is thrown
away, so the next reading starts again from the legs. One bad sample never outlives itself.

The same kinematics give the sole heights (`sole_heights`) that the contact estimate of robots
without foot sensors reads (deploy/contacts.py)."""
from __future__ import annotations

import mujoco
import numpy as np

from deploy.config import ConfigError
from deploy.mjcf import check_model, load_model, pose_at_origin
from deploy.observations import RobotState, _cross, quat_rotate_inverse
from deploy.spec import RobotSpec

_BOX_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
_UP = np.array([0.0, 0.0, 1.0])


class LegOdometry:
    """Batch-1 estimator fed one state at a time (the backend's I/O thread, at the robot's rate).

    contact_band_m: a foot counts as on the ground in proportion to how close it is to the lowest
    foot (fully within 0 m, not at all beyond the band); robots without foot force sensors (the
    G1's hg lowstate has none) need nothing else.
    blend_time_s: time constant of the complementary filter; longer trusts the accelerometer more.
    agreement_mps: how far a foot's answer may stray from the accelerometer's prediction and still
    count (a Gaussian weight of this width).
    max_accel: m/s^2 beyond which an accelerometer reading is not a measurement (default: the
    widest full-scale range of the IMUs these robots use, deploy.backends.hardware_link).
    max_speed_mps: a base velocity estimate beyond this is a diverged filter, not motion (several
    times faster than any of these robots runs).
    """

    def __init__(self, spec: RobotSpec, contact_band_m: float = 0.03, blend_time_s: float = 0.05,
                 agreement_mps: float = 0.15, max_accel: float | None = None,
                 max_speed_mps: float = 10.0):
        self.spec = spec
        self.model = load_model(spec)
        self.map = check_model(spec, self.model)
        self.data = mujoco.MjData(self.model)
        self.contact_band_m = float(contact_band_m)
        self.blend_time_s = float(blend_time_s)
        self.agreement_mps = float(agreement_mps)
        if max_accel is None:
            from deploy.backends.hardware_link import IMU_ACCEL_MAX
            max_accel = IMU_ACCEL_MAX
        self.max_accel = float(max_accel)
        self.max_speed_mps = float(max_speed_mps)
        m = self.model
        collides = (m.geom_contype != 0) | (m.geom_conaffinity != 0)
        self._foot_geoms = [np.flatnonzero((m.geom_bodyid == b) & collides) for b in self.map.foot_bodies]
        for name, geoms in zip(spec.foot_bodies, self._foot_geoms):
            if len(geoms) == 0:
                raise ConfigError(spec.mjcf, f"body '{name}'", "a foot body (bodies.feet in "
                                  f"{spec.source}) needs a colliding geom to find its sole")
        self._jacp = np.zeros((3, m.nv))
        # (F,) each foot's sole above the lowest one (m) at the last reading: deploy/contacts.py
        self.sole_heights = np.full(len(spec.foot_bodies), np.nan)
        self._v: np.ndarray | None = None
        self._stamp: float | None = None

    def legs(self, state: RobotState, prior: np.ndarray | None = None) -> np.ndarray:
        """(3,) body-frame base velocity from the feet alone. Feet count by how near they are to
        the lowest one, and, given a `prior` (body frame), by how well their answer agrees with
        it: a swing foot skimming the ground gives an outlier, a planted one does not."""
        m, d, mp = self.model, self.data, self.map
        pose_at_origin(m, d, mp, state.base_quat[0], state.joint_pos[0])
        d.qvel[mp.free_dof:mp.free_dof + 3] = 0.0
        d.qvel[mp.free_dof + 3:mp.free_dof + 6] = state.base_ang_vel[0]   # free joint: body frame
        d.qvel[mp.dof_adr] = state.joint_vel[0]
        mujoco.mj_comPos(m, d)
        feet = mp.foot_bodies
        soles = np.array([self._sole(g) for g in self._foot_geoms])
        self.sole_heights = soles[:, 2] - soles[:, 2].min()
        weight = np.clip(1.0 - self.sole_heights / self.contact_band_m, 0.0, 1.0)
        per_foot = np.zeros((len(feet), 3))
        for i, body in enumerate(feet):
            if weight[i] > 0.0:
                mujoco.mj_jac(m, d, self._jacp, None, soles[i], int(body))
                per_foot[i] = -(self._jacp @ d.qvel)
        per_foot = quat_rotate_inverse(np.repeat(state.base_quat, len(feet), 0), per_foot)
        if prior is not None:
            agree = weight * np.exp(-0.5 * np.sum((per_foot - prior) ** 2, 1) / self.agreement_mps ** 2)
            if agree.sum() > 1e-3:
                weight = agree
        return weight @ per_foot / weight.sum()

    def _sole(self, geoms: np.ndarray) -> np.ndarray:
        """The foot's lowest point (world frame, base at the origin): the point that stays put on
        the ground, also while a foot rolls over its toe or heel, unlike the body's origin."""
        m, d = self.model, self.data
        points = []
        for g in geoms:
            c, size = d.geom_xpos[g], m.geom_size[g]
            if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE:
                points.append(c - size[0] * _UP)
            elif m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX:
                points.extend(c + (_BOX_CORNERS * size) @ d.geom_xmat[g].reshape(3, 3).T)
            elif m.geom_type[g] == mujoco.mjtGeom.mjGEOM_CAPSULE:
                axis = d.geom_xmat[g].reshape(3, 3)[:, 2] * size[1]
                points.extend([c + axis - size[0] * _UP, c - axis - size[0] * _UP])
            else:
                points.append(c)
        points = np.array(points)
        return points[points[:, 2] <= points[:, 2].min() + 0.005].mean(0)

    def update(self, state: RobotState, imu_accel: np.ndarray, stamp: float) -> np.ndarray:
        """(1, 3) body-frame base velocity after this reading (stamp in seconds, monotonic). NaN
        when even the legs' answer is not finite or plausible (a bad joint reading): the
        hardware link passes it to a policy that reads it, whose state check then faults, and the
        next reading starts afresh. Also updates `sole_heights`."""
        dt = 0.0 if self._stamp is None else stamp - self._stamp
        self._stamp = stamp
        accel = np.asarray(imu_accel, dtype=np.float64).reshape(1, 3)
        measured = bool(np.isfinite(accel).all() and np.abs(accel).max() <= self.max_accel)
        if self._v is None or not 0.0 < dt < 0.1:
            v = self.legs(state)                        # first reading, or after a gap: legs only
        else:
            prior = self._v[None]
            if measured:
                accel = accel + quat_rotate_inverse(state.base_quat, self.model.opt.gravity[None])
                predicted = (prior + dt * (accel - _cross(state.base_ang_vel, prior)))[0]
            else:                                       # a bad reading: hold, do not integrate
                predicted = prior[0]
            keep = self.blend_time_s / (self.blend_time_s + dt)
            v = keep * predicted + (1.0 - keep) * self.legs(state, predicted)
        if not (np.isfinite(v).all() and np.abs(v).max() <= self.max_speed_mps):
            self._v = None                              # the next reading starts from the legs
            return np.full((1, 3), np.nan)              # not passed on: the state check faults
        self._v = v
        return v[None].copy()
