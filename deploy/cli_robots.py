"""`sac2real robots list | show ROBOT`: what a spec resolves to (index maps, layout, action bounds),
so a user can check a robot before anything moves."""
from __future__ import annotations

import argparse

from deploy.action_map import ActionMap
from deploy.observations import ObservationPipeline
from deploy.spec import RobotSpec, available_robots


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("robots", help="list robot specs or show one resolved")
    rsub = p.add_subparsers(dest="robots_command", required=True)
    rsub.add_parser("list", help="robot specs in configs/robots").set_defaults(func=_list)
    show = rsub.add_parser("show", help="a spec with its derived maps, layout and bounds")
    show.add_argument("robot", help="robot name or path to a spec YAML")
    show.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    for name in available_robots():
        spec = RobotSpec.load(name, check_mjcf=False)
        print(f"{name:10s} {spec.num_joints:3d} joints  {spec.interface:12s} spec {spec.hash[:12]}")
    return 0


def _show(args: argparse.Namespace) -> int:
    spec = RobotSpec.load(args.robot)
    amap = ActionMap(spec)
    print(f"robot {spec.name}  spec hash {spec.hash}\n  file {spec.source}\n  mjcf {spec.mjcf}")
    print(f"  policy dt {spec.policy_dt} s = sim dt {spec.sim_dt} s x {spec.decimation}; "
          f"action scale {spec.action_scale}")
    print(f"  {'#':>2} {'joint':28s} {'motor':>5} {'default':>8} {'soft limits':>19} "
          f"{'action bounds':>19} {'kp':>6} {'kd':>5}")
    for i, j in enumerate(spec.joints):
        print(f"  {i:2d} {j.name:28s} {j.motor:5d} {j.default:8.3f} "
              f"[{spec.soft_lower[i]:7.3f},{spec.soft_upper[i]:7.3f}] "
              f"[{amap.low[i]:7.3f},{amap.high[i]:7.3f}] {j.kp:6.1f} {j.kd:5.2f}")
    for rough in (False, True):
        layout = ObservationPipeline(spec, height_scan=rough).layout
        terms = ", ".join(f"{e.name}[{e.offset}:{e.offset + e.dim}]" for e in layout.entries)
        print(f"  observation ({'rough' if rough else 'flat'}) dim {layout.dim} "
              f"hash {layout.hash[:12]}: {terms}")
    if spec.critic_observations:
        print("  the critic also reads, exact, after the policy's observation (training only): "
              + ", ".join(t.term for t in spec.critic_observations))
    return 0
