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

from deploy.cli_types import count, dds_domain, exploration, number, seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the Controller with a policy on a robot backend")
    p.add_argument("--robot", required=True, help="robot name or spec YAML")
    p.add_argument("--backend", default="mujoco", help="robot backend: mujoco, unitree, ros2 "
                                                       "(default mujoco)")
    p.add_argument("--network-interface", help="network interface of the robot (unitree backend)")
    p.add_argument("--domain", type=dds_domain, help="DDS domain (unitree and ros2 backends)")
    p.add_argument("--policy", required=True, help="current (the robot's current bundle), bundle folder, ID, ROBOT/ID or ID prefix")
    p.add_argument("--duration", type=number(0.0, open_low=True), default=10.0, help="seconds under the policy")
    p.add_argument("--explore", type=exploration, default=0.0,
                   help="sample actions within the bundle's std times this (0: deterministic; "
                        "for collecting fine-tuning data)")
    p.add_argument("--command", default="0.5,0,0",
                   help="vx,vy,wz (clamped to the spec), or `random` with --episodes: drawn as "
                        "training draws them, every resampling_time of the spec")
    p.add_argument("--episodes", type=number(0.0, open_low=True), metavar="S",
                   help="mujoco: run episodes of S seconds for --duration in all, the simulated "
                        "robot put back on its feet after each episode and each fall "
                        "(deploy/sim_operator.py)")
    p.add_argument("--physics", action="append", default=[], metavar="KEY=VALUE",
                   help="mujoco: the simulated robot's physics differ from training, e.g. "
                        "added_base_mass=5 payload_offset=-0.2,0.1,0 friction=0.5 "
                        "motor_strength=0.8 action_latency_s=0.02 (repeatable)")
    p.add_argument("--follow", action="store_true",
                   help="follow the robot's `current` pointer: swap to each promoted bundle at a "
                        "tick boundary, roll back after a fault right after a swap")
    p.add_argument("--events", help="append episodes, swaps and rollbacks here (JSON lines)")
    p.add_argument("--viewer", action="store_true", help="MuJoCo passive viewer (needs a display)")
    p.add_argument("--fast", action="store_true", help="lockstep simulation, faster than real time")
    p.add_argument("--randomize", action="store_true",
                   help="draw friction, mass and motor strength from the task's ranges; pushes")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--replay", help="log transitions to this replay directory")
    p.add_argument("--deploy-config", help="deploy settings YAML (default configs/deploy/<robot>.yaml)")
    p.add_argument("--rt-priority", type=count(1, 99), default=None,
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
    problem, cmd, physics = _check_session_args(args)
    if problem:
        print(f"sac2real run: {problem}", file=sys.stderr)
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
        from deploy.backends.mujoco_backend import SimConditions
        conditions = SimConditions(**physics) if physics else None
        backend = make_backend("mujoco", spec, seed=args.seed, randomize=args.randomize,
                               realtime=realtime, viewer=args.viewer, conditions=conditions)
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
    if args.backend == "mujoco":     # a G1 hangs from its stand gantry until the policy blended in
        from deploy.backends.mujoco_backend import release_after_blend_in
        release_after_blend_in(ctrl, backend)
    if hasattr(backend, "remote_handler"):      # the robot's wireless remote: damping always works
        from deploy.remote import controller_handler
        backend.remote_handler = controller_handler(ctrl)
    try:
        ctrl.set_exploration(args.explore)
    except ValueError as exc:
        print(f"sac2real run: --explore: {exc}", file=sys.stderr)
        return 2
    applied = ctrl.set_command(*cmd) if cmd is not None else "random"
    print(f"run: {spec.name} on {args.backend}{' (lockstep)' if not realtime else ''}, policy "
          f"{bundle.id}, command {applied}", file=sys.stderr)
    follower = None
    if args.follow:
        from deploy.follow import PolicyFollower
        follower = PolicyFollower(ctrl, PolicyRegistry(), log_path=args.events).start()
    sys.setswitchinterval(0.001)     # a waiting loop thread gets the GIL sooner
    # `kill`, systemd, a launcher: damp as for Ctrl-C; and SIGINT explicitly, since a process
    # started in the background inherits it ignored, and a robot run must damp on it anyway
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    try:
        if args.episodes:
            _run_episodes(ctrl, backend, args, cmd)
        elif realtime:
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
        if follower is not None:
            follower.stop()
        ctrl.stop()
        backend.close()
        if writer is not None:
            writer.close()
    d = ctrl.diagnostics()
    print(json.dumps({k: d[k] for k in ("mode", "tick", "policy_id", "state_age_ms", "loop",
                                        "replay", "safety", "transitions")}, indent=1))
    return 0 if not d["safety"]["last_fatal"] else 1


def _check_session_args(args: argparse.Namespace) -> tuple[str | None, list | None, dict]:
    """(why the arguments do not fit together, or None; the fixed command or None for random;
    the simulated robot's physics)."""
    from deploy.sim2sim.scenarios import parse_physics

    sim_only = [name for name, given in (("--episodes", args.episodes), ("--physics", args.physics))
                if given]
    if args.backend != "mujoco" and sim_only:
        return f"{', '.join(sim_only)}: only for the mujoco backend", None, {}
    if args.episodes and args.fast:
        return "--episodes runs in real time (the Controller's own loop); drop --fast", None, {}
    if args.physics and args.randomize:
        return "--physics and --randomize: give one", None, {}
    try:
        physics = parse_physics(args.physics)
    except ValueError as exc:
        return str(exc), None, {}
    if args.command == "random":
        if not args.episodes:
            return "--command random needs --episodes", None, physics
        return None, None, physics
    try:
        cmd = [float(v) for v in args.command.split(",")]
        assert len(cmd) == 3 and all(math.isfinite(v) for v in cmd)
    except (ValueError, AssertionError):
        return (f"--command expects three finite numbers vx,vy,wz or `random`, got "
                f"{args.command!r}"), None, physics
    return None, cmd, physics


def _run_episodes(ctrl, backend, args: argparse.Namespace, cmd) -> None:
    from deploy.sim_operator import SimOperator

    _start_realtime(ctrl, backend, args.rt_priority)
    operator = SimOperator(ctrl, backend, args.episodes, seed=args.seed,
                           command=None if cmd is None else tuple(cmd), log_path=args.events,
                           log=lambda line: print(f"run: {line}", file=sys.stderr, flush=True))
    operator.run(args.duration)
    ctrl.request_damping()
    time.sleep(3 * ctrl.period)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _start_realtime(ctrl, backend, rt_priority: int | None) -> None:
    """The backend's own thread (a simulated robot's physics) one priority below the loop's."""
    if hasattr(backend, "start"):
        backend.start(None if rt_priority is None else max(1, rt_priority - 1))
    ctrl.start(rt_priority=rt_priority)


def _run_realtime(ctrl, backend, duration, Mode, rt_priority=None) -> None:
    from deploy.sim_operator import wait_until

    _start_realtime(ctrl, backend, rt_priority)
    ctrl.request_stand()
    wait_until(lambda: ctrl.mode is Mode.STAND, 2.0)
    ctrl.request_policy()
    wait_until(lambda: ctrl.mode is Mode.POLICY, ctrl._stand_T + 3.0)
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

