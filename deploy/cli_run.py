"""`sac2real run --robot ROBOT --backend mujoco --policy BUNDLE [--duration S] [--viewer]`

Runs the Controller (the robot's own loop thread, paced to the wall clock) on a backend: PASSIVE,
then STAND, then POLICY with the given velocity command, then DAMPING at the end. With
`--fast` the MuJoCo robot is stepped in lockstep on the simulation clock, faster than real time.
Ctrl-C ends the run in DAMPING."""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the Controller with a policy on a robot backend")
    p.add_argument("--robot", required=True, help="robot name or spec YAML")
    p.add_argument("--backend", default="mujoco", help="robot backend: mujoco, unitree, ros2 "
                                                       "(default mujoco)")
    p.add_argument("--network-interface", help="network interface of the robot (unitree backend)")
    p.add_argument("--domain", type=int, help="DDS domain (unitree and ros2 backends)")
    p.add_argument("--policy", required=True, help="current (the robot's current bundle), bundle folder, ID, ROBOT/ID or ID prefix")
    p.add_argument("--duration", type=float, default=10.0, help="seconds under the policy")
    p.add_argument("--explore", type=float, default=0.0,
                   help="sample actions within the bundle's std times this (0: deterministic; "
                        "for collecting fine-tuning data)")
    p.add_argument("--command", default="0.5,0,0", help="vx,vy,wz (clamped to the spec)")
    p.add_argument("--viewer", action="store_true", help="MuJoCo passive viewer (needs a display)")
    p.add_argument("--fast", action="store_true", help="lockstep simulation, faster than real time")
    p.add_argument("--randomize", action="store_true",
                   help="draw friction, mass and motor strength from the task's ranges; pushes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replay", help="log transitions to this replay directory")
    p.add_argument("--deploy-config", help="deploy settings YAML (default configs/deploy/<robot>.yaml)")
    p.add_argument("--rt-priority", type=int, default=None,
                   help="SCHED_FIFO priority of the control loop (the MuJoCo physics thread one "
                        "below); needs CAP_SYS_NICE")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from deploy.backends import make_backend
    from deploy.bundle import BundleError, PolicyBundle
    from deploy.controller import Controller, PolicyRefused
    from deploy.deploy_config import DeployConfig
    from deploy.registry import PolicyRegistry, RegistryError
    from deploy.spec import RobotSpec
    from deploy.state_machine import Mode

    spec = RobotSpec.load(args.robot)
    try:
        cmd = [float(v) for v in args.command.split(",")]
        assert len(cmd) == 3 and all(math.isfinite(v) for v in cmd)
    except (ValueError, AssertionError):
        print(f"sac2real run: --command expects three finite numbers vx,vy,wz, got "
              f"{args.command!r}", file=sys.stderr)
        return 2
    try:
        path = PolicyRegistry().resolve(args.policy, spec.name)
        bundle = PolicyBundle.load(path, spec)
    except (BundleError, RegistryError) as exc:
        print(f"sac2real run: policy refused, not loaded: {exc}", file=sys.stderr)
        return 1
    config = DeployConfig.load(spec, args.deploy_config)
    if args.backend != "mujoco":
        options = {"network_interface": args.network_interface} if args.backend == "unitree" else {}
        if args.domain is not None:
            options["domain"] = args.domain
        backend = make_backend(args.backend, spec, **options)
        realtime = True
    else:
        realtime = not args.fast
        if args.viewer and not realtime:
            print("sac2real run: --viewer needs real time; ignoring --fast", file=sys.stderr)
            realtime = True
        backend = make_backend("mujoco", spec, seed=args.seed, randomize=args.randomize,
                               realtime=realtime, viewer=args.viewer)
        if realtime:      # the physics thread runs when this host schedules it, not as a robot
            config = config.repeats_within_age(spec)
    writer = None
    if args.replay:
        from deploy.robot_rewards import robot_replay_writer
        writer = robot_replay_writer(args.replay, spec, bundle).start()
    try:
        ctrl = Controller(spec, backend, bundle, replay=writer, config=config,
                          clock=getattr(backend, "clock", time.monotonic))
    except PolicyRefused as exc:
        print(f"sac2real run: {exc}", file=sys.stderr)
        return 1
    if hasattr(backend, "remote_handler"):      # the robot's wireless remote: damping always works
        from deploy.remote import controller_handler
        backend.remote_handler = controller_handler(ctrl)
    try:
        ctrl.set_exploration(args.explore)
    except ValueError as exc:
        print(f"sac2real run: --explore: {exc}", file=sys.stderr)
        return 2
    applied = ctrl.set_command(*cmd)
    print(f"run: {spec.name} on {args.backend}{' (lockstep)' if not realtime else ''}, policy "
          f"{bundle.id}, command {applied}", file=sys.stderr)
    sys.setswitchinterval(0.001)     # a waiting loop thread gets the GIL sooner
    signal.signal(signal.SIGTERM, _interrupt)     # `kill`, systemd, a launcher: damp as for Ctrl-C
    try:
        if realtime:
            _run_realtime(ctrl, backend, args.duration, Mode, args.rt_priority)
        else:
            _run_lockstep(ctrl, backend, args.duration, Mode)
    except KeyboardInterrupt:
        print("run: interrupted, damping", file=sys.stderr)
        ctrl.request_damping()
        if not realtime:
            ctrl.tick()
        else:
            time.sleep(3 * spec.policy_dt)
    finally:
        ctrl.stop()
        backend.close()
        if writer is not None:
            writer.close()
    d = ctrl.diagnostics()
    print(json.dumps({k: d[k] for k in ("mode", "tick", "policy_id", "state_age_ms", "loop",
                                        "replay", "safety", "transitions")}, indent=1))
    return 0 if not d["safety"]["last_fatal"] else 1


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run_realtime(ctrl, backend, duration, Mode, rt_priority=None) -> None:
    if hasattr(backend, "start"):
        backend.start(None if rt_priority is None else max(1, rt_priority - 1))
    ctrl.start(rt_priority=rt_priority)
    ctrl.request_stand()
    _wait(lambda: ctrl.mode is Mode.STAND, 2.0)
    ctrl.request_policy()
    _wait(lambda: ctrl.mode is Mode.POLICY, ctrl._stand_T + 3.0)
    t_end = time.monotonic() + duration
    next_print = time.monotonic()
    while time.monotonic() < t_end and ctrl.mode is Mode.POLICY:
        if time.monotonic() >= next_print:
            _status(ctrl, backend)
            next_print += 1.0
        time.sleep(0.05)
    ctrl.request_damping()
    time.sleep(3 * ctrl.period)


def _run_lockstep(ctrl, backend, duration, Mode) -> None:
    ctrl.request_stand()
    t_policy = None
    while True:
        ctrl.tick()
        backend.advance()
        now = backend.clock()
        if ctrl.mode is Mode.STAND and ctrl.last_request.get("request") == "stand":
            ctrl.request_policy()
        if ctrl.mode is Mode.POLICY and t_policy is None:
            t_policy = now
        if ctrl.mode is Mode.DAMPING or (t_policy is not None and now - t_policy >= duration):
            break
        if t_policy is None and now > ctrl._stand_T + 5.0:
            print("run: the policy did not start", file=sys.stderr)
            break
        if int(now / ctrl.period) % 50 == 0:
            _status(ctrl, backend)
    ctrl.request_damping()
    ctrl.tick()


def _status(ctrl, backend) -> None:
    d = ctrl.diagnostics()
    sample = backend.read_state()
    v = sample.state.base_lin_vel[0] if sample is not None and sample.state.base_lin_vel is not None \
        else [float("nan")] * 3
    tick = (d["loop"]["stages_us"].get("tick") or {})
    jit = d["loop"]["jitter_ms"] or {}
    print(f"t {d['time']:8.2f}  {d['mode']:7s}  v [{v[0]:+.2f} {v[1]:+.2f}]  cmd "
          f"{[round(c, 2) for c in d['command']]}  tick p99 {tick.get('p99', 0):.0f} us  "
          f"jitter p99 {jit.get('p99', 0):.2f} ms  overruns {d['loop']['overruns']}",
          file=sys.stderr)


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
