"""How good the robot's base-velocity estimate is where fine-tuning needs it: the shipped Go2 policy
walks in MuJoCo through a command schedule, observing the *estimate* (deploy/velocity_estimator.py,
fed at the physics rate with sensor noise, as on the robot); reported against MuJoCo's ground truth:
the estimate's RMS error per axis, and the task's reward computed by the robot path
(deploy/robot_rewards.py) from the estimate against the same from the true velocity: correlation,
mean difference, and the tracking terms' share of it. Prints ONE JSON object.

    python3 bench/estimator.py [--seconds 60] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploy.action_map import ActionMap  # noqa: E402
from deploy.bundle import PolicyBundle  # noqa: E402
from deploy.observations import ObservationPipeline  # noqa: E402
from deploy.registry import PolicyRegistry  # noqa: E402
from deploy.rewards import TaskRewards  # noqa: E402
from deploy.robot_rewards import RobotRewards, simulated_fields  # noqa: E402
from deploy.sim_world import SimWorld  # noqa: E402
from deploy.spec import RobotSpec  # noqa: E402
from deploy.velocity_estimator import LegOdometry  # noqa: E402

SCHEDULE = [(0.0, (0.0, 0.0, 0.0)), (3.0, (0.5, 0.0, 0.0)), (13.0, (-0.4, 0.0, 0.0)),
            (23.0, (0.0, 0.3, 0.0)), (33.0, (0.3, 0.0, 0.8)), (43.0, (0.8, 0.0, 0.0))]


def command_at(t: float) -> np.ndarray:
    return np.array([c for start, c in SCHEDULE if t >= start][-1], dtype=np.float64)


def run(spec: RobotSpec, bundle: PolicyBundle, seconds: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    world = SimWorld(spec, 1, 1)
    world.reset(np.array([0]))
    pipeline, amap = ObservationPipeline(spec), ActionMap(spec)
    est = LegOdometry(spec)
    task = TaskRewards.load("velocity_flat", spec)
    paid = {"estimate": RobotRewards(spec, task), "truth": RobotRewards(spec, task)}
    last_action = np.zeros((1, spec.num_joints))
    errors, rewards, tracking = [], {k: [] for k in paid}, {k: [] for k in paid}
    v_est = np.zeros((1, 3))
    t = 0.0
    for _ in range(int(seconds / spec.policy_dt)):
        st = world.read_state()
        st.base_lin_vel = v_est
        command = command_at(t)
        action = bundle.act(pipeline.compute(st, command[None], last_action, clock=np.array([t]))[0])
        world.set_targets(amap.joint_targets(action[None]))
        for _ in range(spec.decimation):
            world.step(1)
            t += spec.sim_dt
            noisy = world.read_state()
            noisy.joint_vel = noisy.joint_vel + rng.normal(0, 0.3, noisy.joint_vel.shape)
            noisy.base_ang_vel = noisy.base_ang_vel + rng.normal(0, 0.05, 3)
            v = est.update(noisy, world.imu_accel[0] + rng.normal(0, 0.3, 3), t)
            if np.isfinite(v).all():
                v_est = v
        truth = world.read_state()
        errors.append(v_est[0] - truth.base_lin_vel[0])
        fell, _, _ = world.contacts()
        if fell[0]:
            break
        for name, vel in (("estimate", v_est[0]), ("truth", truth.base_lin_vel[0])):
            fields = {**simulated_fields(world, spec, action, command), "base_lin_vel": vel}
            paid[name](fields)
            rewards[name].append(fields["reward"])
            tracking[name].append(fields["reward"] - fields["reward_base"] - fields["reward_air"])
        last_action = action[None].astype(np.float64)
    world.close()
    err = np.array(errors)
    est_r, true_r = np.array(rewards["estimate"]), np.array(rewards["truth"])
    est_t, true_t = np.array(tracking["estimate"]), np.array(tracking["truth"])
    return {"seed": seed, "seconds": seconds,
            "velocity_rmse_m_s": np.sqrt((err ** 2).mean(0)).round(4).tolist(),
            "reward_correlation": round(float(np.corrcoef(est_r, true_r)[0, 1]), 4),
            "reward_mean": {"estimate": round(float(est_r.mean()), 5), "truth": round(float(true_r.mean()), 5)},
            "tracking_reward_mean": {"estimate": round(float(est_t.mean()), 5),
                                     "truth": round(float(true_t.mean()), 5)},
            "fell": bool(fell[0]), "ticks": len(err)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    spec = RobotSpec.load("go2")
    bundle = PolicyBundle.load(PolicyRegistry().resolve("current", "go2"), spec, providers="cpu")
    runs = [run(spec, bundle, args.seconds, s) for s in args.seeds]
    print(json.dumps({"robot": "go2", "bundle": bundle.id, "schedule": SCHEDULE, "runs": runs,
                      "velocity_rmse_mean_m_s": np.mean([r["velocity_rmse_m_s"] for r in runs], 0)
                      .round(4).tolist(),
                      "reward_correlation_mean": round(float(np.mean([r["reward_correlation"] for r in runs])), 4)}))


if __name__ == "__main__":
    main()
