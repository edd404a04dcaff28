"""Preflight: what must hold before a robot session, checked and printed as PASS / FAIL / SKIP lines.

    sac2real preflight --robot g1 --backend unitree --network-interface eth0 [--domain 0]
                       [--policy current] [--wait 1.0]

Checks, in order (a check that cannot run because an earlier one failed is skipped and says so):
  python environment       a virtualenv (Ubuntu 24.04 refuses a bare pip install), the platform
  NumPy for ROS            (a sourced ROS install) NumPy < 2, the major version the distribution's
                           own packages are built against (Humble, Jazzy, Kilted: NumPy 1.x)
  spec                     the robot's spec loads and validates against its MJCF
  backend                  the backend drives this robot's hardware interface
  network interface        (unitree) exists and is up
  DDS domain               in range; the Unitree robots use 0, ROS_DOMAIN_ID for the ros2 backend
  unitree_sdk2py           (unitree) imports, with cyclonedds (on aarch64: built from source,
                           CYCLONEDDS_HOME set; see README.md, "The robot computer")
  robot publishes state    (unitree) someone publishes rt/lowstate; (ros2) <ns>/joint_states and <ns>/imu
  robot health             (unitree) the last lowstate reports no motor error, over-temperature,
                           low battery, and (G1) the spec's variant (deploy/robot_health.py)
  no other lowcmd publisher (unitree) nobody else sends rt/lowcmd (traffic; an idle writer is no
                           competitor, as UnitreeBackend judges it)
  ROS 2 middleware         rclpy imports and a context starts (the node needs it for every backend)
  bundle                   the policy resolves to a bundle folder ('current' via the registry)
  spec and bundle agree    robot, spec hash, joint names and order, dt, gains, observation layout
  bundle verified          manifest hashes, ONNX loads, golden obs -> action pairs match

No torch; DDS and ROS are imported only by the checks that need them."""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable

BACKENDS = ("unitree", "ros2", "mujoco")


@dataclass
class Check:
    name: str
    status: str          # PASS | FAIL | SKIP
    detail: str

    @property
    def line(self) -> str:
        return f"{self.status:4s}  {self.name:26s} {self.detail}"


class Preflight:
    def __init__(self, robot: str, backend: str, network_interface: str = "", domain: int | None = None,
                 policy: str = "current", namespace: str = "/anymal", wait_s: float = 1.0,
                 registry_root: str | None = None, emit: Callable[[str], None] | None = None):
        self.robot, self.backend = robot, backend
        self.network_interface = network_interface
        self.domain = domain
        self.policy = policy
        self.namespace = namespace.rstrip("/")
        self.wait_s = wait_s
        self.registry_root = registry_root
        self.emit = emit or (lambda line: None)
        self.checks: list[Check] = []
        self.spec = None
        self.bundle_path = None

    # ---- bookkeeping ------------------------------------------------------------------------------
    def _add(self, name: str, status: str, detail: str) -> bool:
        c = Check(name, status, detail)
        self.checks.append(c)
        self.emit(c.line)
        return status == "PASS"

    def _run(self, name: str, fn) -> bool:
        try:
            detail = fn()
        except Exception as exc:   # every refusal becomes a FAIL line, never a traceback
            msg = str(exc) or type(exc).__name__
            return self._add(name, "FAIL", msg)
        if isinstance(detail, tuple):      # (status, detail)
            return self._add(name, *detail)
        return self._add(name, "PASS", detail)

    @property
    def passed(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)

    def summary(self) -> str:
        failed = [c.name for c in self.checks if c.status == "FAIL"]
        ran = sum(c.status != "SKIP" for c in self.checks)
        if failed:
            return f"preflight: NOT READY: {len(failed)} of {ran} checks failed ({', '.join(failed)})"
        return f"preflight: ready ({ran} checks passed, {len(self.checks) - ran} skipped)"

    # ---- the checks -----------------------------------------------------------------------------
    def run(self) -> bool:
        if self.backend not in BACKENDS:
            self._add("backend", "FAIL", f"'{self.backend}' is not one of {', '.join(BACKENDS)}")
            return False
        self._run("python environment", self._environment)
        self._run("NumPy for ROS", self._numpy_for_ros)
        spec_ok = self._run("spec", self._spec)
        if spec_ok:
            self._run("backend", self._backend_fits)
        else:
            self._add("backend", "SKIP", "no spec")
        if self.backend == "unitree":
            nic_ok = self._run("network interface", self._interface)
            dom_ok = self._run("DDS domain", self._unitree_domain)
            sdk_ok = self._run("unitree_sdk2py", self._sdk)
            if nic_ok and dom_ok and sdk_ok and spec_ok:
                self._unitree_traffic()
            else:
                for n in ("robot publishes state", "robot health", "no other lowcmd publisher"):
                    self._add(n, "SKIP", "needs the interface, domain, SDK and spec above")
        else:
            self._add("network interface", "SKIP", f"not used by the {self.backend} backend")
            self._run("DDS domain", self._ros_domain)
        ros_ok = self._run("ROS 2 middleware", self._ros)
        if self.backend == "ros2":
            if ros_ok and spec_ok:
                self._run("robot publishes state", self._ros2_traffic)
            else:
                self._add("robot publishes state", "SKIP", "needs rclpy and the spec")
        if self.policy.strip().lower() == "none":
            for n in ("bundle", "spec and bundle agree", "bundle verified"):
                self._add(n, "SKIP", "policy none: stand only")
        elif spec_ok and self._run("bundle", self._bundle):
            if self._run("spec and bundle agree", self._agree):
                self._run("bundle verified", self._verify)
            else:
                self._add("bundle verified", "SKIP", "the bundle does not fit the spec")
        else:
            for n in (["bundle"] if not spec_ok else []) + ["spec and bundle agree", "bundle verified"]:
                self._add(n, "SKIP", "needs the spec and a bundle")
        return self.passed

    def _environment(self) -> str:
        """A virtualenv, as the install guide sets up (README.md, "The robot computer")."""
        where = f"{platform.machine()}, {_os_name()}, Python {platform.python_version()}"
        if sys.prefix == sys.base_prefix:
            raise ValueError(f"not in a virtualenv ({where}; {sys.executable}): python3 -m venv "
                             f"--system-site-packages ~/sac2real-venv, activate it, then pip install")
        return f"virtualenv {sys.prefix} ({where})"

    def _numpy_for_ros(self):
        import numpy
        distro = os.environ.get("ROS_DISTRO", "")
        if not distro:
            return "SKIP", f"no ROS install sourced (ROS_DISTRO unset); NumPy {numpy.__version__}"
        if int(numpy.__version__.split(".")[0]) >= 2:
            raise ValueError(f"NumPy {numpy.__version__} with ROS {distro}, whose packages are built "
                             f"against NumPy 1.x: pip install 'numpy<2' in this virtualenv")
        return f"NumPy {numpy.__version__} with ROS {distro}"

    def _spec(self) -> str:
        from deploy.spec import RobotSpec
        self.spec = RobotSpec.load(self.robot)
        return (f"{self.spec.name}: {self.spec.num_joints} joints, interface {self.spec.interface}, "
                f"policy dt {self.spec.policy_dt} s, hash {self.spec.hash[:12]}")

    def _backend_fits(self) -> str:
        iface = self.spec.interface
        ok = {"unitree": iface.startswith("unitree_"), "ros2": iface == "anymal_ros2",
              "mujoco": True}[self.backend]
        if not ok:
            raise ValueError(f"backend {self.backend} cannot drive interface {iface} "
                             f"({'unitree' if iface.startswith('unitree_') else 'ros2'} can)")
        return f"{self.backend} drives {iface}"

    def _interface(self) -> str:
        from deploy.backends.netif import describe, interface_problem
        problem = interface_problem(self.network_interface)
        if problem:
            raise ValueError(problem)
        return describe(self.network_interface)

    def _unitree_domain(self) -> str:
        from deploy.backends.unitree import UNITREE_DOMAIN
        d = UNITREE_DOMAIN if self.domain is None else int(self.domain)
        self.domain = d
        if not 0 <= d <= 232:
            raise ValueError(f"domain {d} is outside 0..232")
        note = "the robots' domain" if d == UNITREE_DOMAIN else \
            f"not the robots' domain {UNITREE_DOMAIN} (a simulated robot?)"
        return f"{d} ({note})"

    def _ros_domain(self) -> str:
        env = os.environ.get("ROS_DOMAIN_ID")
        d = self.domain if self.domain is not None else int(env) if env else 0
        self.domain = d
        if not 0 <= d <= 232:
            raise ValueError(f"ROS domain {d} is outside 0..232")
        return f"ROS domain {d}" + (" (ROS_DOMAIN_ID)" if env and self.domain == int(env) else "")

    def _sdk(self) -> str:
        from importlib.metadata import PackageNotFoundError, version
        try:
            import cyclonedds  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"cyclonedds does not import ({exc}); where pip has no wheel for "
                             f"{platform.machine()}, build CycloneDDS from source, export "
                             f"CYCLONEDDS_HOME=<its install prefix> and pip install "
                             f"cyclonedds==11.0.1 again (README.md, 'The robot computer')") from exc
        import unitree_sdk2py  # noqa: F401
        try:
            v = version("unitree-sdk2py-dimos")
        except PackageNotFoundError:
            v = "?"
        return f"unitree_sdk2py {v}, cyclonedds {version('cyclonedds')}"

    def _unitree_traffic(self) -> None:
        from deploy.backends import unitree_msgs as M
        from deploy.backends.unitree import (LOWCMD_TOPIC, LOWSTATE_TOPIC, DdsLink,
                                             init_channel_factory)
        try:
            init_channel_factory(self.domain, self.network_interface)
            state_t, cmd_t = M.sdk_types(self.spec.interface)
            link = DdsLink(self.domain)
        except Exception as exc:
            self._add("robot publishes state", "FAIL", str(exc))
            self._add("no other lowcmd publisher", "SKIP", "DDS did not start")
            return
        try:
            states = link.reader(LOWSTATE_TOPIC, state_t)
            cmds = link.reader(LOWCMD_TOPIC, cmd_t)
            fam = M.family(self.spec.interface)
            received, valid, problems, last_valid = 0, 0, set(), None
            end = time.monotonic() + self.wait_s
            while time.monotonic() < end:      # samples, not matched writers: a dead robot's
                states.wait(0.05)              # writer stays matched until its lease expires
                for data in states.take(8):
                    received += 1
                    try:
                        last_valid = M.decode_state(fam, data)
                        valid += 1
                    except M.MalformedMessage as exc:
                        problems.add(exc.reason)
            where = f"domain {self.domain} via '{self.network_interface}'"
            if valid:
                self._add("robot publishes state", "PASS", f"{valid} valid {LOWSTATE_TOPIC} in "
                          f"{self.wait_s:g} s on {where}")
            elif received:
                self._add("robot publishes state", "FAIL", f"{received} {LOWSTATE_TOPIC} on {where}, "
                          f"none valid ({', '.join(sorted(problems))}): another robot model?")
            else:
                self._add("robot publishes state", "FAIL", f"no {LOWSTATE_TOPIC} on {where} within "
                          f"{self.wait_s:g} s: robot off, wrong interface or domain")
            self._health(fam, last_valid)
            senders = sorted(set(cmds.senders()))
            idle = sorted(set(cmds.foreign_publishers()) - set(senders))
            if senders:
                self._add("no other lowcmd publisher", "FAIL",
                          f"{LOWCMD_TOPIC} is being sent by {', '.join(senders)} on {where}: "
                          f"stop the other controller first")
            else:
                self._add("no other lowcmd publisher", "PASS", f"no {LOWCMD_TOPIC} traffic on {where}"
                          + (f" (idle writer(s) {', '.join(idle)}: no competitor)" if idle else ""))
        finally:
            link.close()

    def _health(self, fam, reading) -> None:
        from deploy.robot_health import HealthMonitor
        if reading is None:
            self._add("robot health", "SKIP", "no valid lowstate")
            return
        h = HealthMonitor(self.spec, check_mode_machine=fam.has_mode_machine).assess(
            reading.temperature, reading.motor_error, reading.battery_soc, reading.mode_machine)
        if h.fault:
            self._add("robot health", "FAIL", h.fault)
        else:
            self._add("robot health", "PASS", f"no motor error; hottest {h.hottest_joint} at "
                      f"{h.max_motor_temp_c:g} C" + (f"; battery {h.battery_soc:g} %"
                                                     if h.battery_soc is not None else "")
                      + (f"; mode_machine {h.mode_machine}" if fam.has_mode_machine else ""))

    def _ros(self) -> str:
        import rclpy
        from rclpy.utilities import get_rmw_implementation_identifier
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=self.domain)
        try:
            rmw = get_rmw_implementation_identifier()
        finally:
            rclpy.try_shutdown(context=ctx)
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("ros-kilted-rclpy")
        except PackageNotFoundError:
            v = os.environ.get("ROS_DISTRO", "?")
        return f"rclpy ({v}), {rmw}"

    def _ros2_traffic(self) -> str:
        import rclpy
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=self.domain)
        node = rclpy.create_node("sac2real_preflight", context=ctx)
        try:
            topics = [f"{self.namespace}/joint_states", f"{self.namespace}/imu"]
            end = time.monotonic() + self.wait_s
            counts = [0, 0]
            while time.monotonic() < end:
                counts = [node.count_publishers(t) for t in topics]
                if all(counts):
                    break
                time.sleep(0.05)
            cmd = node.count_publishers(f"{self.namespace}/joint_command")
        finally:
            node.destroy_node()
            rclpy.try_shutdown(context=ctx)
        missing = [t for t, n in zip(topics, counts) if not n]
        if missing:
            raise ValueError(f"no publisher of {', '.join(missing)} within {self.wait_s:g} s on ROS "
                             f"domain {self.domain}: robot driver off or another namespace/domain")
        if cmd:
            raise ValueError(f"{self.namespace}/joint_command already has {cmd} publisher(s): stop "
                             f"the other controller first")
        return f"{', '.join(topics)} published; no other {self.namespace}/joint_command publisher"

    def _bundle(self) -> str:
        from deploy.registry import PolicyRegistry
        reg = PolicyRegistry(self.registry_root)
        path = reg.resolve(self.policy.strip(), self.spec.name)
        self.bundle_path = path
        return str(path)

    def _agree(self) -> str:
        from deploy.bundle import check_against_spec, read_meta
        meta = read_meta(self.bundle_path)
        check_against_spec(meta, self.spec, self.bundle_path, None)
        return (f"{meta['robot']['name']} spec {meta['robot']['spec_hash'][:12]}, "
                f"{len(meta['joints'])} joints in order, dt {meta['timing']['policy_dt']} s")

    def _verify(self) -> str:
        from deploy.bundle import PolicyBundle
        b = PolicyBundle.load(self.bundle_path, self.spec, providers="cpu")
        v = b.sim2sim
        verdict = "none" if v is None else ("passed" if v.get("passed") is True else "FAILED")
        return (f"{b.id}: manifest {len(b.manifest)} files unchanged, "
                f"{len(b.meta['golden']['obs'])} golden pairs within {b.golden_error:.1e}; "
                f"sim2sim verdict {verdict}")


def run_preflight(**kwargs) -> Preflight:
    p = Preflight(**kwargs)
    p.run()
    return p


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "unknown OS")
    except OSError:
        return platform.platform()
