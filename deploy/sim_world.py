"""A MuJoCo world holding N copies of one robot on one floor, stepped as a single model.

Training steps many robots; sim2sim and the MuJoCo backend step one. Putting every copy into the
same model makes every state read a vectorized numpy gather (no per-env Python loop), and lets each
copy carry its own randomized friction, mass and motor strength. Copies never collide with each
other, only with the floor. The PD law runs inside MuJoCo's actuators at the sim rate:
torque = clip(kp (target - q) - kd qd, +-effort), with ctrl = target."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import mujoco
import numpy as np

from deploy.mjcf import MjcfMap, load_model, write_pd_actuators
from deploy.observations import RobotState, quat_rotate_inverse
from deploy.spec import RobotSpec

ROBOT_CONTYPE, ROBOT_CONAFFINITY = 2, 1  # collide with the floor (contype 1), never with each other
GANTRY_K, GANTRY_K_ROT = 2000.0, 400.0    # N/m on the base's horizontal position, N m/rad on attitude


def build_world_model(spec: RobotSpec, num_robots: int, spacing: float = 2.0) -> mujoco.MjModel:
    """Compile the spec's scene with `num_robots` prefixed copies (r0/, r1/, ...) of the robot."""
    load_model(spec)  # clear errors for a missing or broken MJCF before MjSpec sees it
    world = mujoco.MjSpec.from_file(spec.mjcf)
    world.delete(world.body(spec.base_body))
    for actuator in list(world.actuators):
        world.delete(actuator)
    for sensor in list(world.sensors):
        world.delete(sensor)
    for key in list(world.keys):
        world.delete(key)
    world.copy_during_attach = True
    cols = int(np.ceil(np.sqrt(num_robots)))
    for i in range(num_robots):
        robot = _robot_only(mujoco.MjSpec.from_file(spec.mjcf), spec.base_body)
        frame = world.worldbody.add_frame(pos=[spacing * (i % cols), spacing * (i // cols), 0.0])
        world.attach(robot, prefix=f"r{i}/", frame=frame)
    model = world.compile()
    model.opt.timestep = spec.sim_dt
    return model


def _robot_only(robot: mujoco.MjSpec, base_body: str) -> mujoco.MjSpec:
    """The scene reduced to the robot: scenery (the floor, other bodies) stays in the parent only,
    and the robot's geoms collide with the floor, never with another copy. Scenery is found
    structurally (what hangs off the world body besides the base), never by comparing wrapper
    identities, which Python may reuse."""
    for geom in list(robot.worldbody.geoms):
        robot.delete(geom)
    for body in list(robot.worldbody.bodies):
        if body.name != base_body:
            robot.delete(body)
    for geom in robot.body(base_body).find_all(mujoco.mjtObj.mjOBJ_GEOM):
        if geom.contype or geom.conaffinity:
            geom.contype, geom.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
    return robot


@dataclass(frozen=True)
class WorldIndex:
    """(N, ...) address arrays, row i for robot i, derived by joint and body name."""

    qpos: np.ndarray       # (N, J)
    dof: np.ndarray        # (N, J)
    actuator: np.ndarray   # (N, J)
    free_qpos: np.ndarray  # (N,)
    free_dof: np.ndarray   # (N,)
    base_body: np.ndarray  # (N,)
    feet: np.ndarray       # (N, F)
    body_robot: np.ndarray  # (nbody,) robot owning each body, -1 for the world/scenery
    contact_body: np.ndarray    # (nbody,) True where contact ends an episode
    penalized_body: np.ndarray  # (nbody,) True where contact is penalized
    floor_geoms: np.ndarray     # geoms that belong to no robot


def index_world(spec: RobotSpec, model: mujoco.MjModel, num_robots: int) -> WorldIndex:
    maps = [MjcfMap.build(spec, model, prefix=f"r{i}/") for i in range(num_robots)]
    stack = lambda attr: np.stack([getattr(m, attr) for m in maps])
    body_robot = np.full(model.nbody, -1, dtype=np.int64)
    contact = np.zeros(model.nbody, dtype=bool)
    penalized = np.zeros(model.nbody, dtype=bool)
    for i, m in enumerate(maps):
        body_robot[_subtree(model, m.base_body)] = i
        contact[m.contact_bodies] = True
        penalized[m.penalized_bodies] = True
    floor = np.flatnonzero(body_robot[model.geom_bodyid] < 0)
    return WorldIndex(qpos=stack("qpos_adr"), dof=stack("dof_adr"), actuator=stack("actuator"),
                      free_qpos=stack("free_qpos"), free_dof=stack("free_dof"),
                      base_body=stack("base_body"), feet=stack("foot_bodies"), body_robot=body_robot,
                      contact_body=contact, penalized_body=penalized, floor_geoms=floor)


def _subtree(model: mujoco.MjModel, root: int) -> np.ndarray:
    inside = np.zeros(model.nbody, dtype=bool)
    inside[root] = True
    for b in range(root + 1, model.nbody):  # MuJoCo orders bodies parent-before-child
        inside[b] = inside[model.body_parentid[b]]
    return np.flatnonzero(inside)


@dataclass(frozen=True)
class Gantry:
    """What a humanoid hangs from while it stands up on PD (RobotSpec.stand_gantry): springs on its
    base that hold the horizontal position and the orientation it was hung at, with no vertical
    force, so its legs carry its whole weight. Applied at every physics step."""

    anchor_xy: np.ndarray    # (2,) world frame
    attitude: np.ndarray     # (3, 3) base orientation to hold
    mass: float              # kg, the whole robot (sets the critical damping)

    @classmethod
    def hang(cls, data: mujoco.MjData, body: int, mass: float) -> "Gantry":
        return cls(data.xpos[body][:2].copy(), data.xmat[body].reshape(3, 3).copy(), float(mass))

    def apply(self, data: mujoco.MjData, body: int, free_dof: int) -> np.ndarray:
        """Write this step's force and torque on `body` into data.xfrc_applied; returns the force."""
        rot = data.xmat[body].reshape(3, 3)
        lin = data.qvel[free_dof:free_dof + 2]
        ang = rot @ data.qvel[free_dof + 3:free_dof + 6]          # body-frame rate -> world frame
        damping = 2.0 * np.sqrt(GANTRY_K * self.mass)
        force = GANTRY_K * (self.anchor_xy - data.xpos[body][:2]) - damping * lin
        tilt = 0.5 * sum(np.cross(rot[:, i], self.attitude[:, i]) for i in range(3))   # small angles
        data.xfrc_applied[body, :2] = force
        data.xfrc_applied[body, 3:] = GANTRY_K_ROT * tilt - 2.0 * np.sqrt(GANTRY_K_ROT) * ang
        return force


class _Shard:
    """One compiled model with a contiguous block of robots [start, start + n)."""

    def __init__(self, spec: RobotSpec, start: int, n: int):
        self.start, self.n = start, n
        self.model = build_world_model(spec, n)
        self.data = mujoco.MjData(self.model)
        self.idx = index_world(spec, self.model, n)
        self.nominal_body_mass = self.model.body_mass.copy()
        self.nominal_body_inertia = self.model.body_inertia.copy()
        self.nominal_body_ipos = self.model.body_ipos.copy()
        self.origins = self.data.qpos[self.idx.free_qpos[:, None] + np.arange(3)].copy()
        self.gantries: dict[int, Gantry] = {}    # local robot index -> the gantry it hangs from
        self.assist = 0.0                          # N m/rad: SimWorld.set_upright_assist
        self.posed = mujoco.MjData(self.model)   # kinematics of the current qpos, beside `data`

    def holds(self, robots: np.ndarray) -> np.ndarray:
        """Which of the global robot ids live in this shard (a mask over `robots`)."""
        return (robots >= self.start) & (robots < self.start + self.n)

    def step(self, substeps: int) -> None:
        if not self.gantries and not self.assist:
            mujoco.mj_step(self.model, self.data, nstep=substeps)
            return
        for _ in range(substeps):
            if self.assist:
                self._apply_assist()
            for r, g in self.gantries.items():
                g.apply(self.data, self.idx.base_body[r], self.idx.free_dof[r])
            mujoco.mj_step(self.model, self.data)

    def _apply_assist(self) -> None:
        """SimWorld.set_upright_assist's torque on every base: the gantry's attitude spring and
        damping, about the horizontal axes only."""
        b = self.idx.base_body
        rot = self.data.xmat[b].reshape(-1, 3, 3)
        tilt = np.cross(rot[:, :, 2], [0.0, 0.0, 1.0])                  # axis x sin(tilt)
        rate = np.einsum("nij,nj->ni", rot, self.data.qvel[self.idx.free_dof[:, None] + np.arange(3, 6)])
        rate[:, 2] = 0.0                                                  # world frame, yaw left free
        self.data.xfrc_applied[b, 3:] = self.assist * tilt - 2.0 * np.sqrt(self.assist) * rate

    def robot_mass(self, local: int) -> float:
        return float(self.model.body_mass[self.idx.body_robot == local].sum())


class SimWorld:
    """N robots of one spec: reset, command, step and read back in policy order.

    Robots are split over several models stepped by `threads` worker threads (MuJoCo releases the
    GIL while it steps), so training uses every core while the interface stays one (N, ...) batch.
    A model holds at most `robots_per_model` copies: per robot, MuJoCo steps a 64-robot model about
    half as fast as a 16-robot one (measured on the Go2, bench/sac_vs_sb3.py env_throughput)."""

    def __init__(self, spec: RobotSpec, num_robots: int, threads: int = 1, robots_per_model: int = 16):
        self.spec = spec
        self.n = num_robots
        threads = max(1, min(threads, num_robots))
        shards = max(threads, -(-num_robots // robots_per_model))
        bounds = np.linspace(0, num_robots, shards + 1).round().astype(int)
        self.shards = [_Shard(spec, a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]
        self._pool = ThreadPoolExecutor(threads) if len(self.shards) > 1 else None
        self.set_motor_strength(np.ones(num_robots))
        self.reset(np.arange(num_robots))

    @property
    def model(self) -> mujoco.MjModel:
        """The first shard's model (the whole world when there is one shard, as on the robot side)."""
        return self.shards[0].model

    @property
    def data(self) -> mujoco.MjData:
        return self.shards[0].data

    def _cat(self, fn) -> np.ndarray:
        return np.concatenate([fn(s) for s in self.shards])

    def _split(self, values: np.ndarray, shard: _Shard) -> np.ndarray:
        return values[shard.start:shard.start + shard.n]

    # ---- parameters ------------------------------------------------------------------------
    def set_motor_strength(self, strength: np.ndarray, kp_scale: np.ndarray | None = None) -> None:
        """Write the spec's PD gains and effort limits into each copy's actuators, scaled per robot
        (motor strength scales the torque limit and both gains; kp_scale scales kp alone)."""
        spec = self.spec
        kp_scale = np.ones(self.n) if kp_scale is None else kp_scale
        self.strength = np.asarray(strength, dtype=np.float64).copy()
        self.kp_scale = np.asarray(kp_scale, dtype=np.float64).copy()
        for sh in self.shards:
            st, ks = self._split(strength, sh)[:, None], self._split(kp_scale, sh)[:, None]
            write_pd_actuators(sh.model, sh.idx.actuator, spec.kp * st * ks, spec.kd * st,
                               spec.effort_limit * st)

    def set_pd_gains(self, robots: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> None:
        """Per-robot PD gains (rows of (k, J), policy order) for `robots`, as a controller commands
        them from tick to tick; scaled by each robot's motor strength (and kp scale) like
        set_motor_strength; effort limits unchanged."""
        robots = np.asarray(robots, dtype=np.int64)
        kp, kd = np.asarray(kp, dtype=np.float64), np.asarray(kd, dtype=np.float64)
        for sh in self.shards:
            sel = sh.holds(robots)
            if not sel.any():
                continue
            r = robots[sel]
            st, ks = self.strength[r][:, None], self.kp_scale[r][:, None]
            act = sh.idx.actuator[r - sh.start]
            kpv, kdv = kp[sel] * st * ks, kd[sel] * st
            sh.model.actuator_gainprm[act, 0] = kpv
            sh.model.actuator_biasprm[act, 1] = -kpv
            sh.model.actuator_biasprm[act, 2] = -kdv

    def set_added_base_mass(self, added: np.ndarray, offset: np.ndarray | None = None) -> None:
        """Add mass to each base, scaling its inertia with it (IsaacLab's add_base_mass event).
        `offset` (N, 3): where the added mass sits relative to the base's centre of mass, in the
        base frame (a payload strapped on off-centre): the centre of mass moves by m r / (M + m)
        and the principal inertia gains the parallel-axis terms of the two masses about it,
        M m / (M + m) (|r|^2 - r_i^2) (the products of inertia this adds are left out: MuJoCo
        keeps a body's inertia diagonal in its inertial frame)."""
        for sh in self.shards:
            b = sh.idx.base_body
            m, big_m = self._split(added, sh), sh.nominal_body_mass[b]
            ratio = (big_m + m) / big_m
            sh.model.body_mass[b] = big_m * ratio
            sh.model.body_inertia[b] = sh.nominal_body_inertia[b] * ratio[:, None]
            sh.model.body_ipos[b] = sh.nominal_body_ipos[b]
            if offset is None:
                continue
            r = self._split(np.asarray(offset, dtype=np.float64), sh)
            sh.model.body_ipos[b] += (m / (big_m + m))[:, None] * r
            r_inertial = quat_rotate_inverse(sh.model.body_iquat[b], r)
            reduced = (m * big_m / (big_m + m))[:, None]
            sh.model.body_inertia[b] += reduced * ((r_inertial ** 2).sum(1, keepdims=True)
                                                   - r_inertial ** 2)

    def set_friction(self, friction: np.ndarray) -> None:
        """Sliding friction per robot; MuJoCo takes the larger of two touching geoms' values, so
        the floor is set to zero and each robot's geoms carry their own."""
        for sh in self.shards:
            geom_robot = sh.idx.body_robot[sh.model.geom_bodyid]
            on_robot = geom_robot >= 0
            sh.model.geom_friction[on_robot, 0] = self._split(friction, sh)[geom_robot[on_robot]]
            sh.model.geom_friction[sh.idx.floor_geoms, 0] = 0.0

    # ---- state -----------------------------------------------------------------------------
    def reset(self, robots: np.ndarray, joint_pos: np.ndarray | None = None,
              base_pos: np.ndarray | None = None, base_quat: np.ndarray | None = None,
              base_vel: np.ndarray | None = None) -> None:
        """Place robots (default pose at the spec's spawn height unless given; base_pos is relative
        to each robot's own origin) with the given base velocity and zero joint velocity."""
        robots = np.asarray(robots, dtype=np.int64)
        k = len(robots)
        if k == 0:
            return
        q = np.broadcast_to(self.spec.default_pos, (k, self.spec.num_joints)) if joint_pos is None else joint_pos
        pos = np.tile([0.0, 0.0, self.spec.base_height], (k, 1)) if base_pos is None else base_pos
        quat = np.tile([1.0, 0.0, 0.0, 0.0], (k, 1)) if base_quat is None else base_quat
        vel = np.zeros((k, 6)) if base_vel is None else base_vel
        for sh in self.shards:
            sel = sh.holds(robots)
            if not sel.any():
                continue
            loc = robots[sel] - sh.start
            d, idx = sh.data, sh.idx
            fq = idx.free_qpos[loc]
            d.qpos[fq[:, None] + np.arange(3)] = sh.origins[loc] * [1, 1, 0] + pos[sel]
            d.qpos[fq[:, None] + np.arange(3, 7)] = quat[sel]
            d.qpos[idx.qpos[loc]] = q[sel]
            d.qvel[idx.free_dof[loc][:, None] + np.arange(6)] = vel[sel]
            d.qvel[idx.dof[loc]] = 0.0
            d.ctrl[idx.actuator[loc]] = q[sel]
            mujoco.mj_forward(sh.model, d)

    def set_gantry(self, robots: np.ndarray, on: bool) -> None:
        """Hang `robots` from a gantry where they are now (Gantry), or take it away."""
        robots = np.asarray(robots, dtype=np.int64)
        for sh in self.shards:
            for r in robots[sh.holds(robots)] - sh.start:
                body = sh.idx.base_body[r]
                sh.data.xfrc_applied[body] = 0.0
                if on:
                    sh.gantries[int(r)] = Gantry.hang(sh.data, body, sh.robot_mass(int(r)))
                else:
                    sh.gantries.pop(int(r), None)

    def set_targets(self, joint_targets: np.ndarray) -> None:
        """(N, J) joint position targets in policy order."""
        for sh in self.shards:
            sh.data.ctrl[sh.idx.actuator] = self._split(joint_targets, sh)

    @property
    def targets(self) -> np.ndarray:
        """(N, J) the joint position targets the actuators hold now, in policy order."""
        return self._cat(lambda s: s.data.ctrl[s.idx.actuator])

    def set_upright_assist(self, stiffness: float) -> None:
        """A training aid, never on the robot's side: a torque on every base pulling it upright
        (`stiffness` N m per rad of tilt, with the gantry's damping; roll and pitch only, yaw
        stays free), so a robot that cannot yet balance on one foot lives long enough to learn
        stepping. Set at every physics step, as the gantry's springs are; 0 switches it off."""
        for sh in self.shards:
            sh.assist = float(stiffness)
            if sh.assist == 0.0:
                sh.data.xfrc_applied[sh.idx.base_body, 3:] = 0.0

    def step(self, substeps: int) -> None:
        if self._pool is None:
            self.shards[0].step(substeps)
        else:
            list(self._pool.map(lambda sh: sh.step(substeps), self.shards))

    def read_state(self) -> RobotState:
        quat = self._cat(lambda s: s.data.qpos[s.idx.free_qpos[:, None] + np.arange(3, 7)])
        v_world = self._cat(lambda s: s.data.qvel[s.idx.free_dof[:, None] + np.arange(3)])
        return RobotState(
            base_quat=quat,
            base_ang_vel=self._cat(lambda s: s.data.qvel[s.idx.free_dof[:, None] + np.arange(3, 6)]),
            joint_pos=self._cat(lambda s: s.data.qpos[s.idx.qpos]),
            joint_vel=self._cat(lambda s: s.data.qvel[s.idx.dof]),
            base_lin_vel=quat_rotate_inverse(quat, v_world))

    @property
    def base_pos(self) -> np.ndarray:
        """(N, 3) base position relative to each robot's own origin on the grid."""
        return self._cat(lambda s: s.data.qpos[s.idx.free_qpos[:, None] + np.arange(3)]
                         - s.origins * [1, 1, 0])

    def foot_height(self) -> np.ndarray:
        """(N, F) world height of each foot body's origin (the grid's floor is at 0) at the state
        the robots are in now. After mj_step, `data.xpos` still holds the pose the last substep
        started from, so the pose is computed afresh on a side copy, leaving `data` untouched:
        what a robot's leg kinematics compute from the joint angles it reads."""
        def one(s: _Shard) -> np.ndarray:
            s.posed.qpos[:] = s.data.qpos
            mujoco.mj_kinematics(s.model, s.posed)
            return s.posed.xpos[s.idx.feet][..., 2]
        return self._cat(one)

    @property
    def joint_torque(self) -> np.ndarray:
        return self._cat(lambda s: s.data.actuator_force[s.idx.actuator])

    @property
    def imu_accel(self) -> np.ndarray:
        """(N, 3) specific force at the base origin in the body frame (what an accelerometer reads,
        from the base's linear acceleration of the last step minus gravity)."""
        quat = self._cat(lambda s: s.data.qpos[s.idx.free_qpos[:, None] + np.arange(3, 7)])
        acc = self._cat(lambda s: s.data.qacc[s.idx.free_dof[:, None] + np.arange(3)]
                        - s.model.opt.gravity)
        return quat_rotate_inverse(quat, acc)

    @property
    def joint_acc(self) -> np.ndarray:
        return self._cat(lambda s: s.data.qacc[s.idx.dof])

    def foot_velocity(self) -> np.ndarray:
        """(N, F, 3) world-frame linear velocity of each foot body's origin, from MuJoCo's cvel
        (spatial velocity about the kinematic root's subtree centre of mass)."""
        def one(s: _Shard) -> np.ndarray:
            b = s.idx.feet
            cvel = s.data.cvel[b]
            root_com = s.data.subtree_com[s.model.body_rootid[b]]
            return cvel[..., 3:] + np.cross(cvel[..., :3], s.data.xpos[b] - root_com)
        return self._cat(one)

    def get_state(self) -> list[np.ndarray]:
        """MuJoCo's full integration state of every shard (exact restart)."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        out = []
        for sh in self.shards:
            buf = np.empty(mujoco.mj_stateSize(sh.model, spec))
            mujoco.mj_getState(sh.model, sh.data, buf, spec)
            out.append(buf)
        return out

    def set_state(self, states: list[np.ndarray]) -> None:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        if len(states) != len(self.shards):
            raise ValueError(f"state has {len(states)} shards, this world has {len(self.shards)}")
        for sh, buf in zip(self.shards, states):
            mujoco.mj_setState(sh.model, sh.data, np.asarray(buf), spec)
            mujoco.mj_forward(sh.model, sh.data)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def push(self, robots: np.ndarray, dv_xy: np.ndarray, dwz: np.ndarray | None = None) -> None:
        """Add a planar velocity kick (world frame) and optionally a yaw rate (body z) to the bases
        (IsaacLab's push_by_setting_velocity)."""
        robots = np.asarray(robots)
        for sh in self.shards:
            sel = sh.holds(robots)
            fd = sh.idx.free_dof[robots[sel] - sh.start]
            sh.data.qvel[fd[:, None] + np.arange(2)] += dv_xy[sel]
            if dwz is not None:
                sh.data.qvel[fd + 5] += dwz[sel]

    def foot_forces(self) -> np.ndarray:
        """(N, F) normal contact force on each foot body (N), what a foot force sensor reads."""
        return np.concatenate([_shard_foot_forces(s) for s in self.shards])

    def contacts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per robot: any terminating contact, count of penalized contacts, and (N, F) foot contact."""
        parts = [_shard_contacts(s) for s in self.shards]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _shard_foot_forces(sh: _Shard) -> np.ndarray:
    d, m, idx = sh.data, sh.model, sh.idx
    forces = np.zeros(idx.feet.shape)
    wrench = np.zeros(6)
    for i in range(d.ncon):
        if d.contact.dist[i] > 0.0:
            continue
        for b in m.geom_bodyid[d.contact.geom[i]]:
            robot = idx.body_robot[b]
            if robot < 0:
                continue
            slot = np.flatnonzero(idx.feet[robot] == b)
            if len(slot):
                mujoco.mj_contactForce(m, d, i, wrench)
                forces[robot, slot[0]] += abs(wrench[0])
    return forces


def _shard_contacts(sh: _Shard) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, idx = sh.data, sh.idx
    terminate = np.zeros(sh.n, dtype=bool)
    penalized = np.zeros(sh.n, dtype=np.int64)
    feet = np.zeros((sh.n, idx.feet.shape[1]), dtype=bool)
    ncon = d.ncon
    if ncon == 0:
        return terminate, penalized, feet
    bodies = sh.model.geom_bodyid[d.contact.geom[:ncon]]          # (ncon, 2)
    bodies = bodies[d.contact.dist[:ncon] <= 0.0]
    robot = idx.body_robot[bodies]
    for side in (0, 1):
        b, r = bodies[:, side], robot[:, side]
        own = r >= 0
        terminate[r[own & idx.contact_body[b]]] = True
        np.add.at(penalized, r[own & idx.penalized_body[b]], 1)
    feet[:] = np.isin(idx.feet, bodies.ravel())
    return terminate, penalized, feet
