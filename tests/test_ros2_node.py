"""The policy_runner node (ros2_ws/src/policy_runner) with real rclpy and DDS on the loopback
interface: started as a process the way a user without ROS tooling starts it
(`python -m policy_runner.node --ros-args ...`), on the MuJoCo backend, driven through its
services and topics by a client node in the test process."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")   # DDS traffic on loopback only
if os.environ.get("CI"):
    import rclpy  # noqa: F401  (CI installs it: missing rclpy is a failure there)
else:
    pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros2]')")

from deploy.bridges.process import ChildProcess, dds_test_domain  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "ros2_ws" / "src" / "policy_runner"
DOMAIN = dds_test_domain(base=140, span=60)
sys.path.insert(0, str(PKG))


def _node_process(*params: str, ready: str = "~/start to stand and run", timeout_s: float = 60.0,
                  models: Path | None = None):
    """The node as a child process; `models` is its registry root ($SAC2REAL_MODELS)."""
    args = [sys.executable, "-m", "policy_runner.node", "--ros-args"]
    for p in params:
        args += ["-p", p]
    env = {"PYTHONPATH": f"{PKG}{os.pathsep}{REPO}", "ROS_DOMAIN_ID": str(DOMAIN)}
    if models is not None:
        env["SAC2REAL_MODELS"] = str(models)
    return ChildProcess(args, ready, timeout_s=timeout_s, env=env)


def _on_mujoco(robot: str, policy, *params: str, models: Path | None = None):
    return _node_process(f"robot:={robot}", "backend:=mujoco", f"policy:={policy}",
                         "diagnostics_rate_hz:=10.0", "limits.max_state_age_s:=0.5", *params,
                         models=models)


def _registry_of(bundle: Path) -> Path:
    """The registry root an exported bundle sits in (<root>/go2/<id>)."""
    assert bundle.parent.name == "go2", bundle
    return bundle.parent.parent


class Client:
    """The operator's side: services, /cmd_vel and what the node publishes."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        self.rclpy, self.Trigger, self.Twist = rclpy, Trigger, Twist
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=DOMAIN)
        self.node = rclpy.create_node("operator", context=self.ctx)
        from rclpy.executors import SingleThreadedExecutor
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.diags: list = []
        self.joint_states: list = []
        self.policy_ids: list = []
        self.refusals = 0
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      self.diags.append, 10)
        self.node.create_subscription(JointState, "/joint_states", self.joint_states.append, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "/policy_runner/policy_id",
                                      lambda m: self.policy_ids.append(m.data), latched)
        self.cmd_pub = self.node.create_publisher(Twist, "/cmd_vel", 10)
        self.clients = {n: self.node.create_client(Trigger, f"/policy_runner/{n}")
                        for n in ("start", "stop", "estop", "reset")}

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def call(self, name: str):
        cli = self.clients[name]
        assert cli.wait_for_service(timeout_sec=10), f"~/{name} not offered"
        fut = cli.call_async(self.Trigger.Request())
        end = time.monotonic() + 10
        while not fut.done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
        assert fut.done(), f"~/{name} did not answer"
        return fut.result()

    def start_robot(self) -> None:
        """Wait for the node's first diagnostics (PASSIVE), then ~/start."""
        self.wait(lambda c: c["mode"] == "PASSIVE", 20, "first diagnostics")
        assert self.call("start").success

    def set_parameter(self, name: str, value: str):
        """The SetParameters service `ros2 param set` calls; returns its SetParametersResult."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        cli = self.node.create_client(SetParameters, "/policy_runner/set_parameters")
        assert cli.wait_for_service(timeout_sec=10), "set_parameters not offered"
        req = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=value))])
        fut = cli.call_async(req)
        end = time.monotonic() + 20
        while not fut.done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
        assert fut.done(), "set_parameters did not answer"
        return fut.result().results[0]

    def controller(self) -> dict:
        """The latest controller status of /diagnostics, values as strings."""
        st = self.diags[-1].status[0]
        assert st.name == "policy_runner: controller"
        return {kv.key: kv.value for kv in st.values}

    def wait(self, pred, timeout_s: float, what: str) -> dict:
        end = time.monotonic() + timeout_s
        while True:
            self.spin(0.1)
            if self.diags and pred(self.controller()):
                return self.controller()
            if time.monotonic() > end:
                last = self.controller() if self.diags else "no diagnostics"
                raise AssertionError(f"{what} not seen within {timeout_s:g} s; last {last}")

    def send_cmd(self, vx: float, vy: float = 0.0, wz: float = 0.0, **other: float) -> None:
        """A Twist; `other` sets the axes the robot does not follow (linear_z=..., angular_x=...)."""
        msg = self.Twist()
        msg.linear.x, msg.linear.y, msg.angular.z = vx, vy, wz
        for name, value in other.items():
            group, axis = name.split("_")
            setattr(getattr(msg, group), axis, value)
        self.cmd_pub.publish(msg)

    def refused(self, name: str, *fragments: str) -> None:
        """~/name answers success false naming why, and the mode stays what it was."""
        before = self.controller()["mode"]
        reply = self.call(name)
        assert not reply.success and "refused" in reply.message and "Nothing changed" in reply.message
        self.refusals += 1
        for f in fragments:
            assert f in reply.message, reply.message
        self.spin(0.3)
        assert self.controller()["mode"] == before, (name, before, self.controller()["mode"])

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.ctx)


def _transitions(c: dict) -> list[dict]:
    return json.loads(c["transitions"])


def test_start_stand_policy_cmd_vel_estop_and_diagnostics(exported_bundle, tmp_path):
    """Services, /cmd_vel and diagnostics over DDS. Bad /cmd_vel is refused whole and counted,
    the previous command kept: NaN, out of range, and what a publisher's Python int in a float
    field becomes on the wire with the PyPI wheels (1 -> 5e-324, a subnormal; -1 -> NaN). A
    service the mode forbids answers false and changes nothing; ~/estop latches until ~/reset."""
    from deploy.bundle import read_meta

    bundle_id = read_meta(exported_bundle)["id"]
    node = _on_mujoco("go2", bundle_id, "limits.cmd_vel_timeout_s:=0.0",
                      f"replay_dir:={tmp_path / 'replay'}", models=_registry_of(exported_bundle))
    client = Client()
    try:
        c = client.wait(lambda c: c["mode"] == "PASSIVE", 20, "first diagnostics")
        client.spin(0.3)
        assert client.policy_ids and client.policy_ids[-1] == bundle_id
        for key in ("loop_period_ms_mean", "loop_jitter_ms_p99", "overruns", "state_age_ms",
                    "policy_id", "replay_dropped", "safety_events", "cmd_vel_rejected", "latched"):
            assert key in c, f"diagnostics lack {key}"
        assert c["policy_id"] == bundle_id
        assert c["replay_enabled"] == "true" and c["replay_dropped"] == "0"
        assert client.joint_states and len(client.joint_states[-1].name) == 12
        client.refused("stop", "nothing to stop")
        client.refused("reset", "nothing is latched")

        client.send_cmd(0.3)
        client.wait(lambda c: c["command"] == "0.300,0.000,0.000", 5, "forward command")
        bad = [((float("nan"),), {}, "not finite"), ((1e9, -1e9, 5.0), {}, "outside"),
               ((1,), {}, "subnormal"), ((0.2, -1), {}, "not finite"),
               ((0.2,), {"linear_z": float("inf")}, "linear.z"),
               ((0.2,), {"angular_x": 5e-324}, "subnormal")]
        for n, (args, other, why) in enumerate(bad, 1):
            client.send_cmd(*args, **other)
            c = client.wait(lambda c: c["cmd_vel_rejected"] == str(n), 5, f"bad /cmd_vel {args} counted")
            assert why in c["last_cmd_vel_problem"], c["last_cmd_vel_problem"]
            assert c["command"] == "0.300,0.000,0.000", c["command"]      # the previous one kept
        assert client.controller()["cmd_vel_received"] == str(len(bad) + 1)

        # ~/start: PASSIVE -> STAND -> POLICY; ~/start again is refused
        assert client.call("start").success
        c = client.wait(lambda c: any(t["to"] == "POLICY" for t in _transitions(c)), 20,
                        "STAND -> POLICY")
        modes = [(t["from"], t["to"]) for t in _transitions(c)]
        assert modes[:2] == [("PASSIVE", "STAND"), ("STAND", "POLICY")], modes
        if c["mode"] == "POLICY":
            client.refused("start", "already in POLICY")

        # ~/estop: DAMPING within one tick. A barely trained policy may fall first (a fault is
        # DAMPING too, latched); then reset, stand again and e-stop while standing.
        reply = client.call("estop")
        if "mode was DAMPING" in reply.message:
            client.refused("start", "latched")
            assert client.call("reset").success
            client.wait(lambda c: c["latched"] == "", 5, "the latch released")
            assert client.call("start").success
            client.wait(lambda c: c["mode"] == "STAND", 10, "STAND again")
            reply = client.call("estop")
        asked = int(reply.message.split("tick ")[1].split()[0])
        c = client.wait(lambda c: c["mode"] == "DAMPING", 5, "DAMPING after ~/estop")
        estop = [t for t in _transitions(c) if t["why"] == "operator: damping"][-1]
        assert estop["tick"] - asked <= 1, (asked, estop)
        status = client.diags[-1].status[0]
        assert status.level == b"\x01" and "operator: damping" in status.message
        client.wait(lambda c: c["latched"] != "", 5, "the e-stop latched")
        client.refused("start", "latched", "~/reset first")
        client.refused("stop", "nothing to stop")
        assert client.call("reset").success
        client.wait(lambda c: c["latched"] == "", 5, "the latch released")
        assert client.controller()["mode"] == "DAMPING"
        assert int(client.controller()["services_refused"]) == client.refusals >= 4
    finally:
        client.close()
        node.terminate()
    assert node.proc.returncode == 0, node.output()


@pytest.mark.parametrize("robot", ["go2", "go2_proprio", "g1"])
def test_forward_cmd_vel_moves_the_base_forward_with_a_walking_policy(robot):
    """Needs a policy that walks: SAC2REAL_GATE_BUNDLE (a Go2's), else the registry's current bundle
    of the robot. The G1 stands up hanging from its gantry and is let go after the blend-in."""
    from deploy.registry import PolicyRegistry, RegistryError

    ref = os.environ.get("SAC2REAL_GATE_BUNDLE") if robot == "go2" else None
    if not ref:
        try:
            current = PolicyRegistry().current(robot)
        except RegistryError as exc:
            current = None
            print(f"registry: {exc}")
        ref = str(current) if current else None
    if not ref:
        reason = (f"no walking {robot} policy: promote one (sac2real models promote ID)"
                  f"{' or set SAC2REAL_GATE_BUNDLE' if robot == 'go2' else ''}; the forward-motion "
                  f"check waits for it")
        print(reason)
        pytest.skip(reason)
    node = _on_mujoco(robot, ref, "allow_external_bundles:=true")
    client = Client()
    try:
        client.start_robot()
        client.wait(lambda c: c["mode"] == "POLICY", 30, "POLICY")
        x0 = float(client.controller()["base_pos"].split(",")[0])
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            client.send_cmd(0.5)
            client.spin(0.1)
        c = client.controller()
        assert c["mode"] == "POLICY", c
        dx = float(c["base_pos"].split(",")[0]) - x0
        assert dx > 0.75, f"base moved {dx:.2f} m in 5 s at 0.5 m/s"
    finally:
        client.close()
        node.terminate()


def test_a_g1_on_mujoco_hangs_from_its_stand_gantry_until_the_policy_has_blended_in(tmp_path):
    """The G1 cannot stand up on PD alone (configs/robots/g1.yaml stand.gantry): the node's
    simulated G1 hangs from the gantry from its start through STAND and the blend-in and is let
    go standing, under the policy (the sim2sim gate's rule), as the backend's diagnostics report;
    the registry's current G1 bundle drives it."""
    from g1_policy import copy_g1_bundle

    models = tmp_path / "models"
    bundle = copy_g1_bundle(models)
    node = _on_mujoco("g1", bundle.name, models=models)
    client = Client()
    seen = []           # (mode, gantry, base height) of each diagnostics message
    try:
        client.start_robot()
        end = time.monotonic() + 30
        while time.monotonic() < end and (not seen or seen[-1][1] == "hung"):
            client.spin(0.1)
            status = {s.name: {kv.key: kv.value for kv in s.values}
                      for s in client.diags[-1].status}
            c, b = status["policy_runner: controller"], status["policy_runner: backend mujoco"]
            seen.append((c["mode"], b["stand_gantry"], float(c["base_pos"].split(",")[2])))
        # limp in PASSIVE it sinks on the gantry (which holds it upright, not up); STAND raises it
        stand = [s for s in seen if s[0] == "STAND"]
        assert stand and all(g == "hung" for _, g, _ in stand), seen
        assert seen[-1][:2] == ("POLICY", "released") and seen[-1][2] > 0.7, seen
        modes = [(t["from"], t["to"]) for t in _transitions(client.controller())]
        assert modes[:2] == [("PASSIVE", "STAND"), ("STAND", "POLICY")], modes
    finally:
        client.close()
        node.terminate()
    assert node.proc.returncode == 0, node.output()


def test_an_unknown_parameter_stops_the_node_with_its_name():
    node = _node_process("robot:=go2", "backend:=mujoco", "policy:=none", "robto:=g1",
                         ready="policy_runner: error")
    node.proc.wait(30)
    node.kill()
    assert node.proc.returncode == 2
    assert "unknown parameter 'robto' (did you mean 'robot'?)" in node.output()


@pytest.mark.parametrize("name, value, message", [
    ("limits.max_tilt", 10.0, "limits.max_tilt: 10.0 is outside the allowed range (0, 1.5708"),
    ("limits.max_state_age_s", 1e6, "limits.max_state_age_s: 1000000.0 is outside the allowed range"),
    ("limits.max_state_age_s", 0.001, "limits.max_state_age_s: 0.001 is outside the allowed range"),
], ids=["tilt_beyond_90_degrees", "state_age_of_days", "state_age_below_one_tick"])
def test_a_limit_parameter_that_would_switch_a_check_off_stops_the_node(name, value, message):
    """A tilt limit beyond 90 degrees never trips, a state age of days never goes stale: the
    node's limit parameters are held to the deploy config file's ranges and named when refused."""
    import rclpy
    from rclpy.parameter import Parameter

    from deploy.config import ConfigError
    from policy_runner.node import PolicyRunner

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    try:
        with pytest.raises(ConfigError) as info:
            PolicyRunner(context=ctx, parameter_overrides=[
                Parameter("robot", value="go2"), Parameter("backend", value="mujoco"),
                Parameter("policy", value="none"), Parameter(name, value=value)])
        assert "policy_runner parameters" in str(info.value) and message in str(info.value)
    finally:
        rclpy.try_shutdown(context=ctx)


def test_a_missing_network_interface_stops_the_node_before_any_dds():
    from policy_runner.node import ParameterError, parse_parameters

    with pytest.raises(ParameterError, match="'network_interface': network interface 'eth9' "
                                             "does not exist .available: .*lo"):
        parse_parameters({"robot": "g1", "backend": "unitree", "network_interface": "eth9"})
    with pytest.raises(ParameterError, match="'backend' is 'dds', not one of unitree, ros2, mujoco"):
        parse_parameters({"robot": "g1", "backend": "dds"})
    with pytest.raises(ParameterError, match="'dds_domain' must be int, got str"):
        parse_parameters({"robot": "g1", "dds_domain": "zero"})
    with pytest.raises(ParameterError, match="'limits.backend_stale_timeout_s' 30.0 is above 1.0 s"):
        parse_parameters({"robot": "g1", "limits.backend_stale_timeout_s": 30.0})
    s = parse_parameters({"robot": "g1", "backend": "unitree", "network_interface": "lo",
                          "limits.max_tilt": 1})
    assert s.max_tilt == 1.0 and s.dds_domain == 0


def test_policy_parameter_swaps_only_signed_registry_bundles_when_signatures_are_required(
        exported_bundle, second_bundle, tmp_path):
    """`ros2 param set /policy_runner policy <bundle>` with a deploy config that requires
    signatures (as the unitree and ros2 backends do by default): a bundle outside the registry,
    a tampered one, an unsigned one and the review's forged self-consistent one are refused with
    the reason and the running policy stays; the same bundle signed by the trusted key is
    installed (its id published). Parameters other than `policy` are read at start only."""
    import shutil

    import yaml

    from bench.fuzzing.bundles import forge
    from deploy import bundle as B
    from deploy import signing

    root = tmp_path / "registry"
    first = shutil.copytree(exported_bundle, root / "go2" / exported_bundle.name)
    second = shutil.copytree(second_bundle, root / "go2" / second_bundle.name)
    key, pub = signing.new_key("lab", tmp_path / "private", tmp_path / "public")
    for path in (first, second):
        meta = B.read_meta(path)
        B.record_verdict(path, {"passed": True, "report": "sim2sim/r.json",
                                "spec_hash": meta["robot"]["spec_hash"],
                                "onnx_sha256": B.read_manifest(path)["policy.onnx"]})
    B.sign_bundle(first, key)
    tampered = shutil.copytree(second, root / "go2" / "20000101-000000-tampered")
    onnx = tampered / "policy.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    forged = shutil.copytree(first, root / "go2" / "20000101-000000-forged")
    forge(forged)                                   # the signature of `first` left in it
    config = yaml.safe_load((REPO / "configs" / "deploy" / "go2.yaml").read_text())
    config["trust"] = {"require_signature": True, "keys": [str(pub)]}
    (tmp_path / "go2.yaml").write_text(yaml.safe_dump(config))

    node = _on_mujoco("go2", first.name, f"deploy_config:={tmp_path / 'go2.yaml'}", models=root)
    client = Client()
    try:
        client.start_robot()
        client.wait(lambda c: c["mode"] in ("STAND", "POLICY"), 10, "STAND")
        for ref, why in ((str(second_bundle), "not a bundle in the registry"),
                         (tampered.name, "differs from the manifest"),
                         (second.name, "signature: missing"),
                         (forged.name, "signature: does not match the content")):
            refused = client.set_parameter("policy", ref)
            assert not refused.successful and "refused" in refused.reason, refused.reason
            assert why in refused.reason, refused.reason
            assert client.controller()["policy_id"] == first.name

        B.sign_bundle(second, key)
        accepted = client.set_parameter("policy", second.name)
        assert accepted.successful, accepted.reason
        client.wait(lambda c: c["policy_id"] == second.name, 5, "the swapped policy in diagnostics")
        client.spin(0.3)
        assert client.policy_ids[-1] == second.name

        other = client.set_parameter("robot", "g1")
        assert not other.successful and "read at start only" in other.reason
    finally:
        client.close()
        node.terminate()
    assert node.proc.returncode == 0, node.output()


def test_a_node_on_a_hardware_backend_refuses_an_unsigned_bundle_at_start(exported_bundle):
    """The default rule: the unitree backend drives hardware, and configs/deploy/go2.yaml trusts
    no key yet, so the unsigned bundle stops the node at start, before any DDS, naming the
    signature."""
    node = _node_process("robot:=go2", "backend:=unitree", "network_interface:=lo",
                         f"policy:={exported_bundle.name}", ready="policy_runner: error",
                         models=_registry_of(exported_bundle))
    node.proc.wait(60)
    node.kill()
    assert node.proc.returncode == 2, node.output()
    assert "signature: missing" in node.output() and "trusts no key" in node.output()


def test_cmd_vel_checks_every_field_of_what_arrives_over_the_wire():
    """policy_runner.inputs on messages that went through rclpy's serializer (the bytes DDS
    carries): ints in float fields arrive as garbage and are refused; a TwistStamped is checked
    the same way, with its stamp; valid messages give the command."""
    from geometry_msgs.msg import Twist, TwistStamped
    from policy_runner.inputs import InputRefused, twist_command
    from rclpy.serialization import deserialize_message, serialize_message

    low, high = (-1.0, -0.5, -1.0), (1.0, 0.5, 1.0)

    def wire(msg):
        return deserialize_message(serialize_message(msg), type(msg))

    ok = Twist()
    ok.linear.x, ok.linear.y, ok.angular.z, ok.linear.z = 0.5, -0.25, 1.0, 0.0
    assert twist_command(wire(ok), low, high) == (0.5, -0.25, 1.0)
    stamped = TwistStamped()
    stamped.twist = ok
    assert twist_command(wire(stamped), low, high) == (0.5, -0.25, 1.0)
    for field, value, why in (("linear.x", 1, "subnormal"), ("linear.y", -1, "not finite"),
                              ("angular.z", 2, "subnormal"), ("angular.y", float("inf"), "not finite"),
                              ("linear.z", 2.0, "outside"), ("angular.z", 1.0000001, "outside"),
                              ("linear.x", -0.0 - 1e-310, "subnormal")):
        msg = wire(ok)
        group, axis = field.split(".")
        setattr(getattr(msg, group), axis, value)
        for m in (wire(msg), _stamped(TwistStamped, wire(msg))):
            with pytest.raises(InputRefused, match=f"{field}.*{why}"):
                twist_command(wire(m), low, high)
    stamped.header.stamp.nanosec = 1_000_000_000
    with pytest.raises(InputRefused, match="header.stamp"):
        twist_command(wire(stamped), low, high)


def _stamped(kind, twist):
    msg = kind()
    msg.twist = twist
    return msg


def _call(client, srv_type, name: str, request, timeout_s: float = 20.0, output=lambda: ""):
    """The service's reply; none within `timeout_s` fails, with `output()` (the node's log)."""
    reply = _try_call(client, srv_type, name, request, timeout_s)
    assert reply is not None, f"{name} did not answer\n{output()}"
    return reply


def _try_call(client, srv_type, name: str, request, timeout_s: float):
    cli = client.node.create_client(srv_type, name)
    assert cli.wait_for_service(timeout_sec=10), f"{name} not offered"
    fut = cli.call_async(request)
    end = time.monotonic() + timeout_s
    while not fut.done() and time.monotonic() < end:
        client.executor.spin_once(timeout_sec=0.02)
    return fut.result() if fut.done() else None


def _transition(client, node_name: str, transition_id: int, output=lambda: "") -> None:
    """A lifecycle transition that must succeed. `wait_for_service` does not promise that the
    node has matched a new client, so DDS may drop a request (CI: configure never reached a node
    that answered get_state) or a reply. With no reply in 10 s the node's state decides: the goal
    state means the reply was lost; the state it started from means the request was, and it is
    sent again (three tries); anything else fails with the node's log."""
    from lifecycle_msgs.msg import Transition as T
    from lifecycle_msgs.srv import ChangeState, GetState

    start, goal = {T.TRANSITION_CONFIGURE: ("unconfigured", "inactive"),
                   T.TRANSITION_ACTIVATE: ("inactive", "active"),
                   T.TRANSITION_DEACTIVATE: ("active", "inactive"),
                   T.TRANSITION_CLEANUP: ("inactive", "unconfigured")}[transition_id]
    req = ChangeState.Request()
    req.transition.id = transition_id
    for _ in range(3):
        reply = _try_call(client, ChangeState, f"{node_name}/change_state", req, 10.0)
        if reply is not None:
            assert reply.success, output()
            return
        label = _call(client, GetState, f"{node_name}/get_state", GetState.Request(), 10.0,
                      output).current_state.label
        if label == goal:
            return
        assert label == start, f"{node_name}/change_state did not answer; state {label}\n{output()}"
    raise AssertionError(f"{node_name}/change_state did not answer in 3 tries\n{output()}")


def test_lifecycle_transitions_namespace_imu_and_joint_states_at_measurement_time():
    """autostart:=false and a namespace: the node waits unconfigured; configure joins the robot
    (here MuJoCo), activate starts the loop, deactivate damps, cleanup leaves; imu and
    joint_states appear under the namespace, stamped no later than they were published, in the
    base frame; diagnostics on /diagnostics say the lifecycle state."""
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import GetState
    from sensor_msgs.msg import Imu, JointState
    from std_srvs.srv import Trigger

    args = [sys.executable, "-m", "policy_runner.node", "--ros-args", "-r", "__ns:=/r1"]
    for p in ("robot:=go2", "backend:=mujoco", "policy:=none", "autostart:=false",
              "diagnostics_rate_hz:=10.0", "limits.max_state_age_s:=0.5"):
        args += ["-p", p]
    env = {"PYTHONPATH": f"{PKG}{os.pathsep}{REPO}", "ROS_DOMAIN_ID": str(DOMAIN)}
    node = ChildProcess(args, "waiting for lifecycle transitions", timeout_s=60, env=env)
    client = Client()
    imu, joints = [], []
    client.node.create_subscription(Imu, "/r1/imu", imu.append, 10)
    client.node.create_subscription(JointState, "/r1/joint_states", joints.append, 10)

    def state():
        return _call(client, GetState, "/r1/policy_runner/get_state", GetState.Request()).current_state

    def change(transition_id):
        _transition(client, "/r1/policy_runner", transition_id, node.output)

    try:
        assert state().id == State.PRIMARY_STATE_UNCONFIGURED
        client.wait(lambda c: c.get("lifecycle") == "unconfigured", 20, "unconfigured diagnostics")
        reply = _call(client, Trigger, "/r1/policy_runner/start", Trigger.Request())
        assert not reply.success and "not active" in reply.message
        change(Transition.TRANSITION_CONFIGURE)
        assert state().id == State.PRIMARY_STATE_INACTIVE
        client.spin(0.5)
        assert not joints                       # lifecycle publishers stay quiet while inactive
        change(Transition.TRANSITION_ACTIVATE)
        assert state().id == State.PRIMARY_STATE_ACTIVE
        client.wait(lambda c: c.get("lifecycle") == "active" and c["mode"] == "PASSIVE", 10, "active")
        assert _call(client, Trigger, "/r1/policy_runner/start", Trigger.Request()).success
        client.wait(lambda c: c["mode"] == "STAND", 10, "STAND")
        client.spin(1.5)                        # standing still at the default pose
        assert joints and len(imu) >= 20
        now = client.node.get_clock().now().nanoseconds
        j, m = joints[-1], imu[-1]
        assert j.header.frame_id == "base_link" and m.header.frame_id == "base_link"
        stamp = j.header.stamp.sec * 10**9 + j.header.stamp.nanosec
        assert 0 < stamp <= now
        assert abs(m.orientation.w) > 0.9                        # upright: w is the scalar part
        accel_z = np.mean([x.linear_acceleration.z for x in imu[-20:]])
        assert abs(accel_z - 9.81) < 1.5, accel_z               # specific force: +g when still
        change(Transition.TRANSITION_DEACTIVATE)
        client.wait(lambda c: c["mode"] == "DAMPING" and c["lifecycle"] == "inactive", 10,
                    "DAMPING on deactivate")
        change(Transition.TRANSITION_CLEANUP)
        assert state().id == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        client.close()
        node.terminate()
    assert node.proc.returncode == 0, node.output()


def test_lifecycle_on_the_unitree_bridge_configure_leaves_the_robot_activate_releases_it(tmp_path):
    """The Go2 bridge in its built-in mode: configure joins DDS and checks the robot without a
    single lowcmd or motion-service call; activate stands it down and releases it; the wireless
    remote's L2+B then damps through the node."""
    pytest.importorskip("unitree_sdk2py", reason="unitree_sdk2py not installed (pip install -e '.[unitree]')")
    from lifecycle_msgs.msg import Transition

    from deploy.bridges.process import unitree_bridge

    robot_domain = (DOMAIN + 37) % 233
    inject = tmp_path / "inject.json"
    inject.write_text("{}")
    bridge = unitree_bridge("go2", robot_domain, tmp_path / "go2.json", 200.0,
                            builtin_mode="normal", inject_file=inject)
    node = _node_process("robot:=go2", "backend:=unitree", "policy:=none", "autostart:=false",
                         "network_interface:=lo", f"dds_domain:={robot_domain}",
                         "state_rate_hz:=200.0", "limits.backend_stale_timeout_s:=0.25",
                         "limits.max_state_age_s:=0.5", "diagnostics_rate_hz:=10.0",
                         ready="waiting for lifecycle transitions")
    client = Client()

    def change(transition_id):
        _transition(client, "/policy_runner", transition_id, node.output)

    try:
        change(Transition.TRANSITION_CONFIGURE)
        client.spin(0.5)
        st = bridge.status()
        assert st["builtin_mode"] == "normal" and not st["service_calls"]
        assert st.get("lowcmd_received", 0) == 0
        change(Transition.TRANSITION_ACTIVATE)
        st = bridge.wait_status(lambda s: s.get("lowcmd_received", 0) > 10, 10, "lowcmd after activate")
        calls = st["service_calls"]
        assert st["builtin_mode"] == "" and calls.index("StandDown") < calls.index("ReleaseMode")
        assert client.call("start").success
        client.wait(lambda c: c["mode"] == "STAND", 10, "STAND")
        tmp = inject.with_name("inject.tmp")
        tmp.write_text(json.dumps({"remote": ["L2", "B"]}))
        os.replace(tmp, inject)
        c = client.wait(lambda c: c["mode"] == "DAMPING", 10, "DAMPING from the remote")
        assert c["latched"] != ""
        backend = [s for s in client.diags[-1].status if "backend" in s.name][0]
        values = {kv.key: kv.value for kv in backend.values}
        assert json.loads(values["remote"])["damping"] == 1
    finally:
        client.close()
        node.terminate()
        bridge.kill()
    assert node.proc.returncode == 0, node.output()


def test_the_cmd_vel_timeout_acts_while_the_executor_is_stalled():
    """The node in this process and its executor never spun (as stalled by a slow callback): a
    /cmd_vel that arrived is still zeroed after limits.cmd_vel_timeout_s, by the supervisor
    thread rather than a ROS timer."""
    import rclpy
    from geometry_msgs.msg import Twist
    from rclpy.parameter import Parameter

    from policy_runner.node import PolicyRunner

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    params = [Parameter("robot", value="go2"), Parameter("backend", value="mujoco"),
              Parameter("policy", value="none"), Parameter("limits.cmd_vel_timeout_s", value=0.3),
              Parameter("limits.max_state_age_s", value=0.5)]
    node = PolicyRunner(context=ctx, parameter_overrides=params)
    try:
        msg = Twist()
        msg.linear.x = 0.3
        node._on_cmd_vel(msg)                      # what the subscription would deliver
        assert float(node.controller.command[0]) == pytest.approx(0.3)
        end = time.monotonic() + 5.0
        while node.counters["cmd_vel_timeouts"] == 0 and time.monotonic() < end:
            time.sleep(0.05)
        assert node.counters["cmd_vel_timeouts"] == 1
        assert float(node.controller.command[0]) == 0.0
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_an_estop_is_answered_while_a_policy_swap_is_still_being_verified(exported_bundle,
                                                                          second_bundle):
    """The node in this process on the executor main() uses; its swap of `policy` is held open
    (as verifying a large bundle would hold it) while the operator calls ~/estop: the e-stop is
    answered and damps the robot before the swap's callback has returned."""
    import threading

    import rclpy
    from rclpy.parameter import Parameter

    from policy_runner.node import PolicyRunner, make_executor

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    node = PolicyRunner(context=ctx, parameter_overrides=[
        Parameter("robot", value="go2"), Parameter("backend", value="mujoco"),
        Parameter("policy", value=str(exported_bundle)), Parameter("allow_external_bundles", value=True),
        Parameter("limits.max_state_age_s", value=0.5)])
    entered, release = threading.Event(), threading.Event()
    swap = node.controller.swap_policy

    def held_swap(bundle):
        entered.set()
        release.wait(30.0)
        return swap(bundle)

    node.controller.swap_policy = held_swap
    executor = make_executor(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = Client()
    try:
        from rcl_interfaces.msg import Parameter as ParameterMsg
        from rcl_interfaces.msg import ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        assert client.call("start").success
        end = time.monotonic() + 10
        while node.controller.mode.value == "PASSIVE" and time.monotonic() < end:
            client.spin(0.05)
        assert node.controller.mode.value in ("STAND", "POLICY")
        cli = client.node.create_client(SetParameters, "/policy_runner/set_parameters")
        assert cli.wait_for_service(timeout_sec=10)
        swapping = cli.call_async(SetParameters.Request(parameters=[ParameterMsg(
            name="policy", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                string_value=str(second_bundle)))]))
        end = time.monotonic() + 10
        while not entered.is_set() and time.monotonic() < end:
            client.spin(0.05)
        assert entered.is_set(), "the swap never reached the controller"
        reply = client.call("estop")
        assert reply.success and "damping requested" in reply.message
        end = time.monotonic() + 5
        while node.controller.mode.value != "DAMPING" and time.monotonic() < end:
            client.spin(0.05)
        assert node.controller.mode.value == "DAMPING"
        assert not swapping.done() and not release.is_set(), "the swap was not held: proves nothing"
        release.set()
        end = time.monotonic() + 20
        while not swapping.done() and time.monotonic() < end:
            client.spin(0.05)
        assert swapping.done()
    finally:
        release.set()
        client.close()
        executor.shutdown(timeout_sec=2.0)       # no callback runs into the teardown below
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
