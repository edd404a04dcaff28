"""The reference rollout: how the bundle behaves where it was trained, for the same episodes
(start heading, command schedule, pushes, friction, added mass and where it sits, motor
strength and seed).

Why not training.envs.velocity.VelocityEnv itself: it imports torch (through training), and the
deploy side never imports training. It is built from the same deploy parts, called the same way,
so that it *is* the training env's physics and data flow: deploy.sim_world.SimWorld (the PD law
in MuJoCo's actuators at the spec's policy gains, set_friction / set_added_base_mass /
set_motor_strength as VelocityEnv._randomize calls them), ObservationPipeline.compute with the
training-time noise drawn from an rng, the previous action as last_action and the command held
as given, ActionMap.joint_targets, and `world.step(spec.decimation)` per action, exactly as
VelocityEnv.step. The policy is the bundle's own onnxruntime session, batched over episodes.
What the training env has and the reference leaves out is the task's random part (command
resampling, random pushes and physics): the episode fixes those.

Each robot starts at the default pose, at the spawn height, with the episode's heading, and the
policy drives from t = 0 (the deployment path starts from PASSIVE, stands and blends in: the
statistics' window in behaviour.py skips that)."""
from __future__ import annotations

import numpy as np

from deploy.action_map import ActionMap
from deploy.observations import ObservationPipeline
from deploy.sim2sim.scenarios import Episode, Start, start_pose
from deploy.sim_world import SimWorld
from deploy.spec import RobotSpec


def reference_rollout(spec: RobotSpec, bundle, episodes: list[Episode], threads: int = 1
                      ) -> list[dict]:
    """One arrays dict per episode (the keys behaviour.episode_statistics reads, plus `fell`)."""
    n = len(episodes)
    world = SimWorld(spec, n, threads)
    try:
        return _roll(spec, bundle, episodes, world)
    finally:
        world.close()


def _roll(spec: RobotSpec, bundle, episodes: list[Episode], world: SimWorld) -> list[dict]:
    n, dt = len(episodes), spec.policy_dt
    pipeline, action_map = ObservationPipeline(spec), ActionMap(spec)
    world.set_friction(np.array([e.friction for e in episodes]))
    world.set_added_base_mass(np.array([e.added_base_mass for e in episodes]),
                              np.array([e.payload_offset for e in episodes], dtype=np.float64))
    world.set_motor_strength(np.array([e.motor_strength for e in episodes]))
    poses = [start_pose(spec, Start(), e.yaw, np.random.default_rng(e.seed)) for e in episodes]
    world.reset(np.arange(n), joint_pos=np.stack([p[0] for p in poses]),
                base_pos=np.stack([p[1] for p in poses]), base_quat=np.stack([p[2] for p in poses]))
    rng = np.random.default_rng([e.seed for e in episodes])
    action = np.zeros((n, spec.num_joints))
    alive = np.ones(n, dtype=bool)
    pushed = [0] * n
    keys = ("t_policy", "command", "lin_vel", "ang_vel", "height", "joint_pos", "target", "feet")
    rec = {k: [[] for _ in range(n)] for k in keys}
    steps = int(round(max(e.duration_s for e in episodes) / dt))
    for k in range(steps):
        t = k * dt
        command = np.array([e.command_at(t) for e in episodes])
        _push_due(world, episodes, pushed, t)
        obs = pipeline.compute(world.read_state(), command, action, rng, clock=np.full(n, t))
        action = np.asarray(bundle.act(obs), dtype=np.float64)
        target = action_map.joint_targets(action, np.full(n, t + dt))
        world.set_targets(target)
        world.step(spec.decimation)
        st = world.read_state()
        fall, _, feet = world.contacts()
        height = world.base_pos[:, 2]
        cos_tilt = 1.0 - 2.0 * (st.base_quat[:, 1] ** 2 + st.base_quat[:, 2] ** 2)
        fell = spec.fallen(fall, cos_tilt, height, st.joint_pos)
        for i in np.flatnonzero(alive):
            for key, value in (("t_policy", t + dt), ("command", command[i]),
                               ("lin_vel", st.base_lin_vel[i]), ("ang_vel", st.base_ang_vel[i]),
                               ("height", height[i]), ("joint_pos", st.joint_pos[i]),
                               ("target", target[i]), ("feet", feet[i])):
                rec[key][i].append(value)
        alive &= ~fell & (t + dt < np.array([e.duration_s for e in episodes]) - 1e-9)
        if not alive.any():
            break
    return [{**{key: np.asarray(rec[key][i]) for key in keys},
             "fell": bool(len(rec["t_policy"][i]) * dt < episodes[i].duration_s - 1e-6)}
            for i in range(n)]


def _push_due(world: SimWorld, episodes: list[Episode], pushed: list[int], t: float) -> None:
    for i, e in enumerate(episodes):
        while pushed[i] < len(e.pushes) and e.pushes[pushed[i]].t <= t + 1e-9:
            world.push(np.array([i]), np.asarray(e.pushes[pushed[i]].dv, dtype=np.float64)[None])
            pushed[i] += 1
