"""`sac2real preflight --robot ROBOT --backend unitree|ros2|mujoco [...]`: the checks of
deploy/preflight.py, one PASS / FAIL / SKIP line each and a verdict; exit status 0 when nothing
failed, 1 otherwise."""
from __future__ import annotations

import argparse

from deploy.cli_types import dds_domain, number


def register(sub: argparse._SubParsersAction) -> None:
    from deploy.preflight import BACKENDS

    p = sub.add_parser("preflight", help="check network, DDS, middleware and policy bundle before a "
                                         "robot session")
    p.add_argument("--robot", required=True, help="robot name or spec YAML")
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument("--network-interface", default="", help="unitree: the NIC facing the robot")
    p.add_argument("--domain", type=dds_domain, help="DDS domain (unitree default 0; ros2 default "
                                              "ROS_DOMAIN_ID or 0)")
    p.add_argument("--policy", default="current", help="'current', a bundle folder / ID, or 'none'")
    p.add_argument("--namespace", default="/anymal", help="ros2: topic namespace of the robot")
    p.add_argument("--wait", type=number(0.0, 60.0, open_low=True), default=1.0, help="seconds to listen for DDS publishers")
    p.add_argument("--root", help="registry root (default $SAC2REAL_MODELS or models/policies)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from deploy.preflight import Preflight

    print(f"preflight: {args.robot} on {args.backend}")
    pf = Preflight(args.robot, args.backend, args.network_interface, args.domain, args.policy,
                   args.namespace, args.wait, args.root, emit=print)
    pf.run()
    print(pf.summary())
    return 0 if pf.passed else 1
