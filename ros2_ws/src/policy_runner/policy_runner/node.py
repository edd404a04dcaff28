"""policy_runner: the ROS 2 node around deploy.Controller, the same Controller sim2sim validated.

    ros2 launch policy_runner g1.launch.py network_interface:=eth0
    ros2 run policy_runner policy_runner --ros-args -p robot:=go2 -p backend:=mujoco
    python -m policy_runner.node --ros-args -p robot:=go2 -p backend:=mujoco    (no ROS tooling)

A lifecycle node (PolicyRunner's docstring: configure checks the robot, activate takes control,
deactivate damps; autostart:=true does both at start).

Interfaces (`x` resolves under the namespace, `~/x` = <namespace>/policy_runner/x):
    cmd_vel          geometry_msgs/Twist (TwistStamped with cmd_vel_stamped:=true) in: linear.x,
                     linear.y, angular.z -> the velocity command. Every field is checked
                     (policy_runner/inputs.py): the followed axes inside the spec's command
                     ranges (x limits.max_speed_fraction), the others finite and bounded; NaN, inf,
                     a subnormal (an int published into a float field arrives as one) or a value
                     out of range refuses the whole message: counted (cmd_vel_rejected), the
                     previous command kept; silence for limits.cmd_vel_timeout_s sets it to zero
    ~/start          std_srvs/Trigger: PASSIVE or unlatched DAMPING -> STAND -> POLICY (the policy
                     request follows once the default pose is reached); STAND -> POLICY
    ~/stop           std_srvs/Trigger: POLICY -> STAND (stop walking, hold the pose); STAND -> DAMPING
    ~/estop          std_srvs/Trigger: any mode -> DAMPING at the controller's next tick, latched
    ~/reset          std_srvs/Trigger: unlatch DAMPING (the robot stays there until ~/start)
                     A service the current mode forbids (~/start in POLICY or latched DAMPING,
                     ~/stop in PASSIVE or DAMPING, ~/reset with nothing latched) answers
                     success false with the reason and changes nothing; ~/estop always acts.
    joint_states     sensor_msgs/JointState out, the measured joints in policy order, stamped at
                     measurement time, frame base_frame
    imu              sensor_msgs/Imu out, the robot's IMU, stamped likewise
    /tf              odom_frame -> base_frame from the state estimate (where tf2_msgs imports)
    /diagnostics     diagnostic_msgs/DiagnosticArray out: the lifecycle state, the controller (mode, loop period and
                     jitter, overruns, state age, policy id, replay drops, safety events, command
                     input counters) and the backend (its own counters)
    ~/policy_id      std_msgs/String out, transient local: the installed bundle's id
    policy (param)   settable at run time: a registry id or `current` (a bundle folder outside
                     the registry only with allow_external_bundles:=true) is verified and swapped
                     in at a tick boundary (refused with the reason otherwise). On the unitree and
                     ros2 backends a bundle must carry a valid signature from a key the deploy
                     config trusts (deploy/signing.py), at start and at every swap

The control loop is the Controller's own thread (absolute deadlines at the policy rate); ROS
callbacks only hand requests and commands to it. Parameters are declared from PARAMETERS below;
an unknown one, a bad value or a missing network interface stops the node at start with a
message naming it."""
from __future__ import annotations

import difflib
import json
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from policy_runner.inputs import InputRefused, twist_command

BACKENDS = ("unitree", "ros2", "mujoco")
HARDWARE_BACKENDS = ("unitree", "ros2")     # signed bundles only, unless the deploy config says

# name: (default, description). The default's type is the parameter's type.
PARAMETERS: dict[str, tuple[object, str]] = {
    "robot": ("", "robot spec: a name in configs/robots (g1, go2, anymal_d) or a spec YAML path"),
    "backend": ("mujoco", "robot backend: unitree (DDS), ros2 (ANYmal topics) or mujoco (simulation)"),
    "policy": ("current", "'current' (the registry's current bundle for the robot), a bundle "
                          "ID, ROBOT/ID or folder in the registry, or 'none' (stand only)"),
    "allow_external_bundles": (False, "accept a `policy` folder outside the registry "
                                      "($SAC2REAL_MODELS or models/policies)"),
    "cmd_vel_stamped": (False, "subscribe /cmd_vel as geometry_msgs/TwistStamped"),
    "network_interface": ("", "unitree: the network interface facing the robot (eth0, enp3s0; "
                              "lo for the MuJoCo DDS bridge)"),
    "dds_domain": (0, "unitree: DDS domain of rt/lowstate and rt/lowcmd (the robots use 0)"),
    "release_motion_mode": (True, "unitree: release the built-in motion mode before taking control"),
    "namespace": ("/anymal", "ros2: namespace of joint_states, imu and joint_command"),
    "state_rate_hz": (0.0, "the robot's state rate; 0 = its own (Unitree 500, ANYmal 400)"),
    "replay_dir": ("", "onboard replay directory ('' = no replay log)"),
    "deploy_config": ("", "deploy settings YAML (default configs/deploy/<robot>.yaml if present)"),
    "diagnostics_rate_hz": (2.0, "rate of /diagnostics"),
    "joint_states_rate_hz": (50.0, "rate of joint_states, imu and the odom->base TF"),
    "autostart": (True, "configure and activate at start (false: wait for `ros2 lifecycle set`)"),
    "rt_priority": (0, "SCHED_FIFO priority of the control loop thread (0 = normal scheduling; "
                       "needs CAP_SYS_NICE or an rtprio limit, else it runs normally and "
                       "diagnostics say why)"),
    "odom_frame": ("odom", "TF parent frame of the estimated base pose"),
    "base_frame": ("base_link", "TF child frame; frame_id of joint_states and imu"),
    "limits.max_speed_fraction": (1.0, "fraction (0, 1] of the spec's command ranges /cmd_vel may use"),
    "limits.cmd_vel_timeout_s": (0.5, "no /cmd_vel for this long: command zero (0 = never)"),
    "limits.max_state_age_s": (0.0, "older robot state faults the controller, and a state may be "
                                    "read again on the ticks within this age (0 = deploy config: "
                                    "DAMPING by the 2nd tick after the last new state)"),
    "limits.max_tilt": (0.0, "rad of base tilt that faults the controller (0 = deploy config)"),
    "limits.backend_stale_timeout_s": (0.1, "hardware backends damp by themselves after this long "
                                            "without robot state"),
}
ROS_OWN_PARAMETERS = {"use_sim_time", "start_type_description_service"}
MAX_BACKEND_STALE_S = 1.0


class ParameterError(ValueError):
    """A parameter stops the node at start; the message names it."""


@dataclass(frozen=True)
class Settings:
    robot: str
    backend: str
    policy: str
    allow_external_bundles: bool
    cmd_vel_stamped: bool
    network_interface: str
    dds_domain: int
    release_motion_mode: bool
    namespace: str
    state_rate_hz: float
    replay_dir: str
    deploy_config: str
    diagnostics_rate_hz: float
    joint_states_rate_hz: float
    autostart: bool
    rt_priority: int
    odom_frame: str
    base_frame: str
    max_speed_fraction: float
    cmd_vel_timeout_s: float
    max_state_age_s: float
    max_tilt: float
    backend_stale_timeout_s: float


def parse_parameters(values: dict[str, object]) -> Settings:
    """Check names, types and ranges of the node's parameters (a dict name -> value, as given)."""
    for name in values:
        if name not in PARAMETERS and name not in ROS_OWN_PARAMETERS:
            hint = difflib.get_close_matches(name, list(PARAMETERS), n=1)
            raise ParameterError(f"unknown parameter '{name}'"
                                 f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; known: "
                                 f"{', '.join(PARAMETERS)}")
    v = {}
    for name, (default, _) in PARAMETERS.items():
        value = values.get(name, default)
        kind = type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ParameterError(f"parameter '{name}' must be {kind.__name__}, got "
                                 f"{type(value).__name__} {value!r}")
        if kind is float and not math.isfinite(value):
            raise ParameterError(f"parameter '{name}' must be finite, got {value!r}")
        v[name] = value
    if not v["robot"]:
        raise ParameterError("parameter 'robot' is required (g1, go2, anymal_d or a spec YAML)")
    if v["backend"] not in BACKENDS:
        raise ParameterError(f"parameter 'backend' is '{v['backend']}', not one of {', '.join(BACKENDS)}")
    if not 0 <= v["rt_priority"] <= 99:
        raise ParameterError(f"parameter 'rt_priority' {v['rt_priority']} is outside 0..99")
    for name in ("odom_frame", "base_frame"):
        if not v[name] or v[name].startswith("/"):
            raise ParameterError(f"parameter '{name}' must be a frame name without a leading "
                                 f"'/', got {v[name]!r}")
    if not 0 <= v["dds_domain"] <= 232:
        raise ParameterError(f"parameter 'dds_domain' {v['dds_domain']} is outside 0..232")
    if not 0.0 < v["limits.max_speed_fraction"] <= 1.0:
        raise ParameterError("parameter 'limits.max_speed_fraction' must be in (0, 1]")
    for name in ("limits.cmd_vel_timeout_s", "limits.max_state_age_s", "limits.max_tilt",
                 "state_rate_hz"):
        if v[name] < 0:
            raise ParameterError(f"parameter '{name}' must be >= 0, got {v[name]}")
    for name in ("diagnostics_rate_hz", "joint_states_rate_hz", "limits.backend_stale_timeout_s"):
        if v[name] <= 0:
            raise ParameterError(f"parameter '{name}' must be > 0, got {v[name]}")
    if v["limits.backend_stale_timeout_s"] > MAX_BACKEND_STALE_S:
        raise ParameterError(f"parameter 'limits.backend_stale_timeout_s' {v['limits.backend_stale_timeout_s']} "
                             f"is above {MAX_BACKEND_STALE_S} s: a backend that waits longer without "
                             f"robot state before damping does not guard the robot")
    if v["backend"] == "unitree":
        from deploy.backends.netif import interface_problem
        problem = interface_problem(v["network_interface"])
        if problem:
            raise ParameterError(f"parameter 'network_interface': {problem}")
    return Settings(**{k.split(".")[-1]: val for k, val in v.items()})


def resolve_policy(settings: Settings, spec, trust=None):
    """The PolicyBundle the parameters name (verified against the spec and, where `trust`
    requires it, signed by a trusted key), or None for 'none'."""
    from deploy.bundle import PolicyBundle
    from deploy.registry import PolicyRegistry, RegistryError

    ref = settings.policy.strip()
    if ref.lower() == "none":
        return None
    try:
        path = PolicyRegistry().resolve(ref, spec.name, external=settings.allow_external_bundles)
    except RegistryError as exc:
        raise ParameterError(f"parameter 'policy': {exc} (or policy:=none to stand only)") from exc
    return PolicyBundle.load(path, spec, trust=trust)


def build_backend(settings: Settings, spec):
    rate = settings.state_rate_hz or None
    stale = settings.backend_stale_timeout_s
    if settings.backend == "unitree":
        from deploy.backends.unitree import STATE_RATE_HZ, UnitreeBackend
        backend = UnitreeBackend(spec, settings.network_interface, settings.dds_domain,
                                 state_rate_hz=rate or STATE_RATE_HZ, stale_timeout_s=stale,
                                 release_motion_mode=settings.release_motion_mode,
                                 take_control=False)
        try:
            backend.check_robot()
        except BaseException:
            backend.close()
            raise
        return backend
    if settings.backend == "ros2":
        from deploy.backends.ros2_topics import STATE_RATE_HZ, Ros2TopicsBackend
        return Ros2TopicsBackend(spec, settings.namespace, state_rate_hz=rate or STATE_RATE_HZ,
                                 stale_timeout_s=stale)
    from deploy.backends import make_backend
    backend = make_backend("mujoco", spec, realtime=True)
    backend.start()
    return backend


def _import_ros():
    try:
        import rclpy  # noqa: F401
        from rclpy.lifecycle import LifecycleNode
    except ModuleNotFoundError as exc:
        raise SystemExit(f"policy_runner: rclpy is not importable ({exc}); source a ROS 2 install "
                         f"or pip install -e '.[ros2]' (see ros2_ws/src/policy_runner/README.md)")
    return LifecycleNode


LifecycleNode = _import_ros()
STARTUP_ERRORS = ("ParameterError", "ConfigError", "BundleError", "RegistryError",
                  "UnitreeBackendError", "Ros2BackendError", "PolicyRefused")


class PolicyRunner(LifecycleNode):
    """A managed (lifecycle) node: the constructor reads and checks parameters, the spec and the
    policy bundle; configure joins the robot's middleware and checks the robot (UnitreeBackend.
    check_robot: a valid lowstate, no health fault, nobody else sending rt/lowcmd); activate
    takes control (the built-in motion mode released, StandDown first) and starts the control
    loop; deactivate damps (the loop keeps commanding damping); cleanup and shutdown stop the
    loop and leave the middleware. With autostart (default) the node configures and activates
    itself, as nav2's lifecycle manager would."""

    def __init__(self, *, context=None, cli_args=None, parameter_overrides=None):
        super().__init__("policy_runner", context=context, cli_args=cli_args,
                         parameter_overrides=parameter_overrides,
                         automatically_declare_parameters_from_overrides=True)
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist, TwistStamped
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import Imu, JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from deploy.deploy_config import DeployConfig
        from deploy.signing import TrustCheck
        from deploy.spec import RobotSpec
        from deploy.state_machine import Mode

        self.Mode = Mode
        given = {n: self.get_parameter(n).value for n in self.list_parameters([], 0).names}
        self.settings = s = parse_parameters(given)
        for name, (default, text) in PARAMETERS.items():     # every parameter visible to `ros2 param`
            if not self.has_parameter(name):
                self.declare_parameter(name, default)

        self.spec = spec = RobotSpec.load(s.robot)
        if s.backend == "ros2" and spec.interface != "anymal_ros2":
            raise ParameterError(f"backend 'ros2' drives the anymal_ros2 topic contract; robot "
                                 f"'{spec.name}' uses '{spec.interface}' (backend:=unitree)")
        if s.backend == "unitree" and not spec.interface.startswith("unitree_"):
            raise ParameterError(f"backend 'unitree' needs a Unitree robot; '{spec.name}' uses "
                                 f"'{spec.interface}'")
        config = DeployConfig.load(spec, s.deploy_config or None)
        bundle = resolve_policy(s, spec, TrustCheck(config.trust, s.backend in HARDWARE_BACKENDS))
        over = {}
        if s.max_state_age_s > 0:
            over["max_state_age_s"] = s.max_state_age_s
        if s.max_tilt > 0:
            over["max_tilt"] = s.max_tilt
        if over:
            config = config.with_checked_safety(spec, "policy_runner parameters", "limits", **over)
        if s.max_state_age_s > 0 or s.backend == "mujoco":   # (mujoco: paced by this host)
            config = config.repeats_within_age(spec)
        self.cmd_low = spec.commands.low * s.max_speed_fraction
        self.cmd_high = spec.commands.high * s.max_speed_fraction

        self.config, self.bundle = config, bundle
        self.replay = self.backend = self.controller = None
        self.startup_error: Exception | None = None
        self.odometry = None

        self.counters = {"cmd_vel_received": 0, "cmd_vel_rejected": 0, "cmd_vel_timeouts": 0,
                         "services_refused": 0}
        self.last_cmd_vel_problem = ""
        self._last_cmd_vel = None
        self._want_policy = False
        self._published_policy_id = None

        # relative names resolve under the launch file's namespace (cmd_vel, joint_states, imu)
        self.create_subscription(TwistStamped if s.cmd_vel_stamped else Twist, "cmd_vel",
                                 self._on_cmd_vel, 10)
        # ~/estop in a callback group of its own: with make_executor's second thread it is
        # answered while another callback runs (a policy swap verifying its bundle)
        for name in ("start", "stop", "estop", "reset"):
            group = MutuallyExclusiveCallbackGroup() if name == "estop" else None
            self.create_service(Trigger, f"~/{name}", getattr(self, f"_on_{name}"),
                                callback_group=group)
        self.joint_pub = self.create_lifecycle_publisher(JointState, "joint_states", 10)
        self.imu_pub = self.create_lifecycle_publisher(Imu, "imu", 10)
        self.tf_pub = self._tf_publisher()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.policy_pub = self.create_publisher(String, "~/policy_id", latched)
        self._String, self._JointState, self._DiagnosticArray = String, JointState, DiagnosticArray
        self._Imu = Imu
        self.create_timer(0.05, self._publish_policy_id_if_changed)
        self._supervisor: threading.Thread | None = None
        self._supervisor_stop = threading.Event()
        self._cmd_lock = threading.Lock()     # /cmd_vel callback vs the supervisor's timeout
        self.create_timer(1.0 / s.joint_states_rate_hz, self._publish_state)
        self.create_timer(1.0 / s.diagnostics_rate_hz, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)   # after every declaration
        if s.autostart:
            self._autostart()
        else:
            self.get_logger().info(f"{spec.name} on {s.backend}: unconfigured, waiting for "
                                   f"lifecycle transitions (ros2 lifecycle set {self.get_fully_qualified_name()} configure)")

    def _tf_publisher(self):
        """/tf as tf2_msgs/TFMessage where tf2_msgs is importable (every ROS 2 install; the PyPI
        wheels this project's CI uses have no tf2_msgs, so there the TF is not published and
        diagnostics say so)."""
        try:
            from tf2_msgs.msg import TFMessage
        except ModuleNotFoundError:
            return None
        self._TFMessage = TFMessage
        return self.create_lifecycle_publisher(TFMessage, "/tf", 10)

    def _autostart(self) -> None:
        """configure + activate now; a startup error is raised to main() (exit 2, its message)."""
        self.trigger_configure()
        if self.startup_error is None:
            self.trigger_activate()
        if self.startup_error is not None:
            raise self.startup_error

    # ---- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state):
        from rclpy.lifecycle import TransitionCallbackReturn

        from deploy.controller import Controller
        from deploy.remote import controller_handler
        from policy_runner.outputs import Odometry
        s, spec = self.settings, self.spec
        try:
            if s.replay_dir:
                from deploy.robot_rewards import robot_replay_writer
                self.replay = robot_replay_writer(s.replay_dir, spec, self.bundle).start()
            self.backend = build_backend(s, spec)
            self.controller = Controller(spec, self.backend, self.bundle, replay=self.replay,
                                         config=self.config)
            if s.backend == "mujoco":    # a G1 hangs from its stand gantry until the blend-in ends
                from deploy.backends.mujoco_backend import release_after_blend_in
                release_after_blend_in(self.controller, self.backend)
        except Exception as exc:
            return self._failed("configure", exc)
        if hasattr(self.backend, "remote_handler"):
            self.backend.remote_handler = controller_handler(self.controller)
        self.odometry = Odometry()
        self.get_logger().info(f"configured: {spec.name} on {s.backend}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        try:
            take = getattr(self.backend, "take_control", None)
            if take is not None:
                released = take()
                if released:
                    self.get_logger().info(f"released the built-in motion mode '{released}'")
        except Exception as exc:
            return self._failed("activate", exc)
        if not self.controller.running:      # (after deactivate it still runs, damping)
            self.controller.start(rt_priority=self.settings.rt_priority or None)
        self._start_supervisor()
        self._publish_policy_id()
        result = super().on_activate(state)
        self.get_logger().info(
            f"{self.spec.name} on {self.settings.backend}: policy "
            f"{self.controller.policy_id or 'none'}, mode {self.controller.mode.value}; "
            f"~/start to stand and run")
        return result

    def on_deactivate(self, state):
        self._want_policy = False
        tick = self.controller.request_damping()
        self.get_logger().warning(f"deactivated: damping from tick {tick}")
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        from rclpy.lifecycle import TransitionCallbackReturn
        self._teardown(damp=False)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        from rclpy.lifecycle import TransitionCallbackReturn
        self._teardown(damp=True)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        from rclpy.lifecycle import TransitionCallbackReturn
        self._teardown(damp=True)
        return TransitionCallbackReturn.SUCCESS

    def _failed(self, transition: str, exc: Exception):
        from rclpy.lifecycle import TransitionCallbackReturn

        self.startup_error = exc
        self.get_logger().error(f"{transition} failed: {exc}")
        self._teardown(damp=False)
        return TransitionCallbackReturn.FAILURE

    @property
    def active(self) -> bool:
        return self.controller is not None and self.controller.running

    # ---- runtime parameters: the policy hot swap ------------------------------------------------
    def _on_set_parameters(self, params):
        """`ros2 param set /policy_runner policy <bundle|id|current>` swaps the running policy:
        the Controller verifies the bundle and installs it at a tick boundary, or refuses it and
        keeps the running one. Every other parameter is read once at start."""
        from rcl_interfaces.msg import SetParametersResult

        for p in params:
            if p.name != "policy":
                return SetParametersResult(successful=False, reason=(
                    f"parameter '{p.name}' is read at start only; restart the node to change it"))
        ref = str(params[-1].value)
        if ref.strip().lower() == "none":
            return SetParametersResult(successful=False, reason=(
                "policy 'none' cannot be swapped in; ~/stop holds the robot in STAND instead"))
        if self.controller is None:
            return SetParametersResult(successful=False, reason="the node is not configured")
        try:
            bundle = resolve_policy(replace(self.settings, policy=ref), self.spec, self.controller.trust)
            result = self.controller.swap_policy(bundle)
        except Exception as exc:    # a missing folder, unknown id, failed verification
            return SetParametersResult(successful=False, reason=f"policy '{ref}' refused: {exc}")
        log = self.get_logger().info if result.accepted else self.get_logger().warning
        log(f"policy swap to '{ref}': {result.reason}")
        return SetParametersResult(successful=result.accepted, reason=result.reason)

    # ---- input ---------------------------------------------------------------------------------
    def _on_cmd_vel(self, msg) -> None:
        from deploy.controller import CommandRefused

        self.counters["cmd_vel_received"] += 1
        if self.controller is None:
            return
        try:
            command = twist_command(msg, tuple(self.cmd_low), tuple(self.cmd_high))
            with self._cmd_lock:
                self.controller.set_command(*command)
                self._last_cmd_vel = time.monotonic()
        except (InputRefused, CommandRefused) as exc:
            self.counters["cmd_vel_rejected"] += 1
            self.last_cmd_vel_problem = f"/cmd_vel refused, previous command kept: {exc}"
            self.get_logger().warning(self.last_cmd_vel_problem, throttle_duration_sec=1.0)

    def _answer(self, response, ok: bool, message: str):
        """A service reply; a refusal (the mode forbids the service) is counted and logged."""
        response.success, response.message = ok, message
        if not ok:
            self.counters["services_refused"] += 1
            self.get_logger().warning(message, throttle_duration_sec=1.0)
        return response

    def _inactive(self, response, name: str):
        """A service asked of a node that is not active answers so and changes nothing."""
        if self.active:
            return None
        return self._answer(response, False, f"~/{name} refused: the node is not active "
                                             f"(ros2 lifecycle set /policy_runner activate). "
                                             f"Nothing changed")

    def _on_start(self, request, response):
        if (refused := self._inactive(response, "start")) is not None:
            return refused
        ctrl, M = self.controller, self.Mode
        mode, has_policy = ctrl.mode, ctrl.bundle is not None
        if mode is M.DAMPING and ctrl.latched:
            return self._answer(response, False, f"~/start refused: DAMPING is latched "
                                f"({ctrl.latched}); ~/reset first. Nothing changed")
        if mode in (M.PASSIVE, M.DAMPING):
            tick = ctrl.request_stand()
            self._want_policy = has_policy
            return self._answer(response, True, f"stand requested at tick {tick}; " + (
                "POLICY follows at the default pose" if has_policy
                else "no policy loaded (policy:=none): standing only"))
        if mode is M.STAND and has_policy:
            tick = ctrl.request_policy()
            self._want_policy = True
            return self._answer(response, True, f"policy requested at tick {tick}")
        why = "no policy loaded (policy:=none)" if mode is M.STAND else "already in POLICY"
        return self._answer(response, False, f"~/start refused in {mode.value}: {why}. "
                                             f"Nothing changed")

    def _on_stop(self, request, response):
        if (refused := self._inactive(response, "stop")) is not None:
            return refused
        mode, M = self.controller.mode, self.Mode
        if mode is M.POLICY:
            self._want_policy = False
            tick = self.controller.request_stand()
            return self._answer(response, True, f"POLICY -> STAND requested at tick {tick}")
        if mode is M.STAND:
            self._want_policy = False
            tick = self.controller.request_damping()
            return self._answer(response, True, f"STAND -> DAMPING requested at tick {tick}")
        return self._answer(response, False, f"~/stop refused in {mode.value}: nothing to stop. "
                                             f"Nothing changed")

    def _on_estop(self, request, response):
        if self.controller is None:
            return self._answer(response, True, "not configured: nothing drives the motors")
        self._want_policy = False
        was = self.controller.mode.value
        tick = self.controller.estop()
        self.get_logger().warning(f"e-stop at tick {tick} in {was}")
        return self._answer(response, True, f"damping requested at tick {tick} (mode was {was})")

    def _on_reset(self, request, response):
        if (refused := self._inactive(response, "reset")) is not None:
            return refused
        ctrl = self.controller
        if ctrl.mode is not self.Mode.DAMPING or not ctrl.latched:
            return self._answer(response, False, f"~/reset refused in {ctrl.mode.value}: nothing "
                                                 f"is latched. Nothing changed")
        tick = ctrl.request_reset()
        return self._answer(response, True, f"reset of latched DAMPING ({ctrl.latched}) requested "
                                            f"at tick {tick}; DAMPING holds until ~/start")

    # ---- the supervisor thread and timers ---------------------------------------------------------
    def _start_supervisor(self) -> None:
        """The /cmd_vel timeout and the STAND -> POLICY hand-off run in a thread of their own at
        20 Hz, not in a ROS timer: a stalled executor (a slow callback, a parameter swap being
        verified) must not leave the last velocity command in force."""
        self._stop_supervisor()
        self._supervisor_stop.clear()
        self._supervisor = threading.Thread(target=self._supervisor_loop, name="supervisor",
                                            daemon=True)
        self._supervisor.start()

    def _stop_supervisor(self) -> None:
        self._supervisor_stop.set()
        if self._supervisor is not None:
            self._supervisor.join(1.0)
            self._supervisor = None

    def _supervisor_loop(self) -> None:
        while not self._supervisor_stop.wait(0.05):
            try:
                self._supervise()
            except Exception as exc:    # never let the watchdog thread die silently
                self.get_logger().error(f"supervisor: {exc!r}", throttle_duration_sec=1.0)

    def _supervise(self) -> None:
        ctrl = self.controller
        if ctrl is None:
            return
        M, mode = self.Mode, ctrl.mode
        if self._want_policy:
            if mode is M.STAND and ctrl.diagnostics()["pending_request"] is None:
                ctrl.request_policy()                 # waits in STAND until the pose is reached
            elif mode in (M.POLICY, M.DAMPING):
                self._want_policy = False
        timeout = self.settings.cmd_vel_timeout_s
        with self._cmd_lock:
            last = self._last_cmd_vel
            if timeout > 0 and last is not None and time.monotonic() - last > timeout:
                ctrl.set_command(0.0, 0.0, 0.0)
                self._last_cmd_vel = None
                self.counters["cmd_vel_timeouts"] += 1

    def _publish_policy_id_if_changed(self) -> None:
        if self.controller is not None and self.controller.policy_id != self._published_policy_id:
            self._publish_policy_id()

    def _publish_policy_id(self) -> None:
        pid = self.controller.policy_id
        self.policy_pub.publish(self._String(data=pid or ""))
        self._published_policy_id = pid

    def _publish_state(self) -> None:
        """joint_states, imu and odom->base, each stamped at the sample's measurement time (the
        backend's monotonic receive stamp carried over to the ROS clock)."""
        sample = self.backend.read_state() if self.backend is not None else None
        if sample is None:
            return
        from policy_runner.outputs import imu_message, joint_state_message, ros_stamp, tf_message
        stamp = ros_stamp(self.get_clock().now(), sample.stamp)
        frame = self.settings.base_frame
        self.joint_pub.publish(joint_state_message(self._JointState(), sample, self.spec, stamp, frame))
        self.imu_pub.publish(imu_message(self._Imu(), sample, stamp, frame))
        pose = self.odometry.update(sample) if self.odometry is not None else None
        if self.tf_pub is not None and pose is not None:
            self.tf_pub.publish(tf_message(self._TFMessage(), pose, stamp,
                                           self.settings.odom_frame, frame))

    def diagnostics_status(self) -> list[dict]:
        """The /diagnostics content as plain dicts (name, level, message, values)."""
        ctrl, backend = self.controller, self.backend      # a teardown may clear them meanwhile
        if ctrl is None or backend is None:
            state = self._state_machine.current_state[1]
            return [{"name": "policy_runner: controller", "level": 1,
                     "message": f"node {state}: not configured", "values": {"lifecycle": state}}]
        d = ctrl.diagnostics()
        loop, safety, replay = d["loop"], d["safety"], d["replay"] or {}
        period, jitter = loop.get("period_ms") or {}, loop.get("jitter_ms") or {}
        last = safety.get("last_fatal") or {}
        sample = backend.read_state()
        base_pos = getattr(sample, "base_pos", None) if sample is not None else None
        mode = d["mode"]
        why = d["transitions"][-1]["why"] if d["transitions"] else ""
        faulted = mode == "DAMPING" and why.startswith("safety fault")
        level = 2 if faulted else 1 if mode == "DAMPING" or replay.get("malformed") else 0
        values = {
            "mode": mode, "tick": d["tick"], "policy_id": d["policy_id"] or "",
            "latched": d.get("latched") or "",
            "command": ",".join(f"{c:.3f}" for c in d["command"]),
            "loop_period_ms_mean": period.get("mean"), "loop_period_ms_p99": period.get("p99"),
            "loop_jitter_ms_p50": jitter.get("p50"), "loop_jitter_ms_p99": jitter.get("p99"),
            "loop_jitter_ms_max": jitter.get("max"), "overruns": loop.get("overruns"),
            "missed_deadlines": loop.get("missed_deadlines"),
            "state_age_ms": d["state_age_ms"],
            "replay_enabled": bool(d["replay"]), "replay_dropped": replay.get("dropped", 0),
            "replay_written": replay.get("written", 0),
            "replay_malformed": replay.get("malformed", 0),
            "safety_events": json.dumps(safety.get("counts", {}), sort_keys=True),
            "last_safety_event": json.dumps(last) if last else "",
            "last_request": json.dumps(d["last_request"]),
            "transitions": json.dumps(d["transitions"]),
            **self.counters, "last_cmd_vel_problem": self.last_cmd_vel_problem,
            "lifecycle": self._state_machine.current_state[1],
            "scheduling": str(d["loop"].get("scheduling", "")),
            "tf": "published" if self.tf_pub is not None else "not published: no tf2_msgs",
        }
        if base_pos is not None:
            values["base_pos"] = ",".join(f"{x:.4f}" for x in base_pos)
        message = f"{mode} ({why})" if mode == "DAMPING" else mode
        if replay.get("malformed"):
            message += f"; replay dropped {replay['malformed']} malformed transitions"
        statuses = [{"name": "policy_runner: controller", "level": level, "message": message,
                     "values": values}]
        bdiag = getattr(backend, "diagnostics", None)
        if callable(bdiag):
            b = bdiag()
            statuses.append({"name": f"policy_runner: backend {self.settings.backend}",
                             "level": 1 if b.get("damping") and mode not in ("PASSIVE", "DAMPING") else 0,
                             "message": b.get("damping_reason") or "ok",
                             "values": b})
        return statuses

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        arr = self._DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        for st in self.diagnostics_status():
            arr.status.append(DiagnosticStatus(
                level=bytes([st["level"]]), name=st["name"], message=str(st["message"]),
                hardware_id=self.spec.name,
                values=[KeyValue(key=k, value=v if isinstance(v, str) else json.dumps(v))
                        for k, v in st["values"].items()]))
        self.diag_pub.publish(arr)

    # ---- shutdown ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Damping first, then stop the loop, the backend and the replay writer."""
        self._teardown(damp=True)

    def _teardown(self, damp: bool) -> None:
        self._stop_supervisor()
        ctrl, backend, replay = self.controller, self.backend, self.replay
        self.controller = self.backend = self.replay = None
        try:
            if damp and ctrl is not None and ctrl.running:
                ctrl.request_damping()
                time.sleep(3 * self.spec.policy_dt)
        finally:
            if ctrl is not None:
                ctrl.stop()
            if backend is not None:
                backend.close()
            if replay is not None:
                replay.close()


def make_executor(node: "PolicyRunner"):
    """Two threads: the node's callbacks run one at a time in its default group, and the e-stop,
    in a group of its own, never waits behind one of them (an e-stop always wins)."""
    from rclpy.executors import MultiThreadedExecutor

    executor = MultiThreadedExecutor(num_threads=2, context=node.context)
    executor.add_node(node)
    return executor


def main(args: list[str] | None = None) -> int:
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException

    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    argv = sys.argv if args is None else args
    rclpy.init(args=argv)
    node = None
    try:
        node = PolicyRunner()
    except Exception as exc:
        if type(exc).__name__ not in STARTUP_ERRORS:
            raise
        print(f"policy_runner: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    sys.setswitchinterval(0.001)       # the control loop thread gets the GIL sooner
    executor = make_executor(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if rclpy.ok():
            raise
        # SIGTERM's handler shut the context down while the executor was building its wait
        # set: rclpy raises this instead of ExternalShutdownException; it is the same shutdown
    finally:
        logging.getLogger("policy_runner").info("shutting down: damping")
        node.shutdown()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    # run from a source checkout without ROS tooling: find `deploy` two levels above ros2_ws
    repo = Path(__file__).resolve().parents[4]
    if (repo / "deploy" / "__init__.py").is_file() and str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    sys.exit(main())
