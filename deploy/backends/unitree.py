"""UnitreeBackend: a Unitree G1 (hg messages) or Go2 (go messages) over low-level DDS.

    backend = UnitreeBackend(spec, network_interface="eth0", domain=0)
    sample = backend.read_state()                 # latest rt/lowstate, policy order, or None
    backend.write_command(q_target, kp, kd)       # policy order; sent at the robot's rate
    backend.diagnostics()                         # counters, state age and rate, damping reason
    backend.close()                               # a short burst of damping, then leave DDS

What happens, in order:
 1. the network interface must exist and be up; unitree_sdk2py's channel factory is initialised
    on it (`ChannelFactoryInitialize(domain, interface)`), which also configures cyclonedds;
 2. one I/O thread waits on rt/lowstate (below); until `take_control()` nothing is sent, so
    constructing the backend (a lifecycle node's configure) leaves the robot as it is.
    `check_robot()` waits for a valid lowstate and refuses a health fault (motor error, over-
    temperature, battery, a G1 `mode_machine` not the spec's variant: deploy/robot_health.py)
    or another process sending rt/lowcmd;
 3. `take_control()` (the constructor calls it unless take_control=False; a node's activate
    does) refuses if another process sends rt/lowcmd (traffic, not DataWriters: an idle tool
    or paused bag player is no competitor), releases the built-in motion mode (StandDown first
    on a Go2, retried as the SDK examples do: release_builtin_motion_mode), then starts sending;
 4. each valid lowstate (LowStateLink.receive: size, header,
    CRC; every field the observation or the velocity estimator reads finite and plausible; the
    robot's tick counter moving; the sensor data not byte-identical to the previous
    `max_identical_states` messages; anything else is dropped and counted by reason, and counts as
    missing) becomes the latest StateSample (a Go2's foot_force readings mapped to the spec's
    feet by name, with the contact they show: deploy/contacts.py; no policy reads them, so a bad
    one makes that foot's contact unknown and never drops a state) and is answered at once by
    one rt/lowcmd built from the latest targets the Controller wrote (mode_machine copied from
    the lowstate, motors mapped by the spec's hardware index, CRC filled in). So commands go out
    at the robot's own state rate, with the least delay after each state; while no valid
    lowstate comes, the thread keeps sending at the nominal rate;
 5. damping instead of the Controller's target (deploy/backends/hardware_link.py): when the
    target is older than `command_timeout_s` (the control thread stopped producing targets);
    from the lowstate on which the wireless remote's stop combination is pressed (deploy/
    remote.py; `remote_handler` then asks the Controller to latch DAMPING); for good once
    another process sends rt/lowcmd while this one drives;
 6. if no valid lowstate arrives for `stale_timeout_s`, the thread sends damping (kp 0, the
    deploy config's damping kd) instead, and keeps damping after lowstate returns until the
    Controller writes a command newer than the recovery: a target computed from a stale state is
    never sent. Before the first command it sends damping too. The Controller itself damps sooner:
    a sample it reads again on a later tick is stale (safety.max_repeated_ticks), so DAMPING
    follows by the 2nd policy tick after the last valid lowstate.

Messages travel as bytes (deploy.backends.unitree_msgs) on topics typed with the SDK's own IDL
classes, read and written through cyclonedds' raw sample calls (`cyclonedds._clayer`, pinned by
`cyclonedds==11.0.1`); this keeps a 500 Hz state stream to a few percent of a core in Python.
Quaternions arrive w, x, y, z (the project's order): no conversion.

unitree_sdk2py and cyclonedds are imported here only; `deploy` imports without them."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from deploy.backend import StateSample
from deploy.backends import unitree_msgs as M
from deploy.backends.hardware_link import HardwareLink
from deploy.backends.netif import interface_problem
from deploy.config import ConfigError
from deploy.contacts import force_contact
from deploy.observations import RobotState
from deploy.remote import RemoteMap
from deploy.robot_health import HealthMonitor
from deploy.spec import RobotSpec

log = logging.getLogger("deploy.backends.unitree")

LOWSTATE_TOPIC = "rt/lowstate"
LOWCMD_TOPIC = "rt/lowcmd"
STATE_RATE_HZ = 500.0          # both G1 and Go2 publish rt/lowstate at 500 Hz
UNITREE_DOMAIN = 0             # the robots' DDS domain


class UnitreeBackendError(RuntimeError):
    """The backend refuses to start (or to go on); the message says why and what to do."""


# ---- unitree_sdk2py's channel factory: one domain and interface per process --------------------
_sdk_init: tuple[int, str] | None = None
_sdk_lock = threading.Lock()


def init_channel_factory(domain: int, network_interface: str) -> None:
    """`ChannelFactoryInitialize(domain, interface)` once per process (the SDK keeps the first call
    and silently ignores later ones, so a second, different call is refused here instead)."""
    global _sdk_init
    problem = interface_problem(network_interface)
    if problem:
        raise UnitreeBackendError(problem)
    if not 0 <= int(domain) <= 232:
        raise UnitreeBackendError(f"DDS domain {domain} is outside 0..232")
    with _sdk_lock:
        if _sdk_init is not None:
            if _sdk_init != (int(domain), network_interface):
                raise UnitreeBackendError(
                    f"unitree_sdk2py is already initialised for domain {_sdk_init[0]} on "
                    f"'{_sdk_init[1]}' in this process; it cannot also join domain {domain} on "
                    f"'{network_interface}' (one process drives one robot)")
            return
        try:
            from unitree_sdk2py.core.channel import ChannelFactoryInitialize
        except ModuleNotFoundError as exc:
            raise UnitreeBackendError(
                f"unitree_sdk2py is not installed ({exc.name}): pip install -e '.[unitree]' "
                f"(unitree-sdk2py-dimos, cyclonedds==11.0.1)") from exc
        try:
            ChannelFactoryInitialize(int(domain), network_interface)
        except Exception as exc:  # the SDK raises a bare Exception
            raise UnitreeBackendError(f"unitree_sdk2py could not join DDS domain {domain} on "
                                      f"'{network_interface}': {exc}") from exc
        _sdk_init = (int(domain), network_interface)


# ---- raw DDS channels ---------------------------------------------------------------------------
class DdsLink:
    """One cyclonedds participant with raw-bytes readers and writers on SDK-typed topics."""

    def __init__(self, domain: int):
        from cyclonedds.domain import DomainParticipant

        self.participant = DomainParticipant(int(domain))
        self.guid = str(self.participant.guid)
        self._topics: dict[str, object] = {}
        self._closed = False

    def topic(self, name: str, idl_type):
        from cyclonedds.topic import Topic

        if name not in self._topics:
            self._topics[name] = Topic(self.participant, name, idl_type)
        return self._topics[name]

    def reader(self, name: str, idl_type, depth: int = 1, ignore_own: bool = False) -> "RawReader":
        """`ignore_own`: samples this participant writes are not delivered to this reader."""
        return RawReader(self, self.topic(name, idl_type), depth, ignore_own)

    def writer(self, name: str, idl_type) -> "RawWriter":
        return RawWriter(self, self.topic(name, idl_type))

    def close(self) -> None:
        """Delete the participant and everything in it now (not at garbage collection), so that a
        later participant in this process never sees this one's writers as another publisher."""
        if self._closed:
            return
        self._closed = True
        p = self.participant
        try:
            p._delete(p._ref)
        except Exception:   # already gone
            pass
        self._topics.clear()


class RawReader:
    def __init__(self, link: DdsLink, topic, depth: int, ignore_own: bool = False):
        from cyclonedds.core import GuardCondition, InstanceState, ReadCondition, SampleState, \
            ViewState, WaitSet
        from cyclonedds.qos import Policy, Qos
        from cyclonedds.sub import DataReader

        self.link = link
        policies = [Policy.Reliability.BestEffort, Policy.History.KeepLast(depth)]
        if ignore_own:
            policies.append(Policy.IgnoreLocal.Participant)
        qos = Qos(*policies)
        self.reader = DataReader(link.participant, topic, qos)
        self._mask = SampleState.Any | ViewState.Any | InstanceState.Any
        self._cond = ReadCondition(self.reader, self._mask)
        self._guard = GuardCondition(link.participant)
        self._waitset = WaitSet(link.participant)
        self._waitset.attach(self._cond)
        self._waitset.attach(self._guard)
        from cyclonedds._clayer import ddspy_take
        self._take = ddspy_take

    def wait(self, timeout_s: float) -> None:
        """Block until a sample arrives, wake() is called or `timeout_s` passes."""
        self._waitset.wait(max(0, int(timeout_s * 1e9)))

    def wake(self) -> None:
        self._guard.set(True)

    def clear_wake(self) -> None:
        self._guard.set(False)

    def take(self, n: int = 8) -> list[bytes]:
        if self.link._closed:
            return []
        ret = self._take(self.reader._ref, self._mask, n)
        if isinstance(ret, int):
            return []
        return [data for data, info in ret if info.valid_data]

    def senders(self, n: int = 64) -> list[str]:
        """Take what arrived and return the participant GUID of each sample's writer: traffic,
        not matched DataWriters (an idle writer, a tool or a paused bag player, sends nothing)."""
        if self.link._closed:
            return []
        ret = self._take(self.reader._ref, self._mask, n)
        if isinstance(ret, int):
            return []
        out = []
        for _, info in ret:
            if not info.valid_data:
                continue
            try:
                data = self.reader.get_matched_publication_data(info.publication_handle)
                out.append(str(data.participant_key))
            except Exception:    # the writer went away between the sample and the look-up
                out.append("unknown participant")
        return out

    def publishers(self) -> list[str]:
        """GUIDs of the participants whose writers this reader has matched."""
        out = []
        for h in self.reader.get_matched_publications():
            try:
                out.append(str(self.reader.get_matched_publication_data(h).participant_key))
            except Exception:    # the publication went away between the two calls
                continue
        return out

    def foreign_publishers(self) -> list[str]:
        return sorted({g for g in self.publishers() if g != self.link.guid})


class RawWriter:
    def __init__(self, link: DdsLink, topic):
        from cyclonedds._clayer import ddspy_write
        from cyclonedds.pub import DataWriter

        self.link = link
        self.writer = DataWriter(link.participant, topic)
        self._write = ddspy_write

    def write(self, data: bytes) -> bool:
        if self.link._closed:
            return False
        return self._write(self.writer._ref, data) == 0


# ---- the built-in motion mode -------------------------------------------------------------------
def release_builtin_motion_mode(interface: str, timeout_s: float = 10.0, rpc_timeout_s: float = 5.0,
                                log_fn: Callable[[str], None] = log.info) -> str:
    """Release the robot's built-in motion service (sport mode, AI mode, ...) so that low-level
    commands are obeyed; returns the name of the mode released ('' if none was active). As
    unitree_sdk2_python's example/go2/low_level/go2_stand_example.py does: while CheckMode names
    a mode, StandDown (go robots: a standing Go2 would otherwise collapse when its motors go
    limp), ReleaseMode, CheckMode again, one second apart, RPC timeout 5 s; the G1 example
    (example/g1/low_level/g1_low_level_example.py) has no StandDown (it hangs from a gantry).
    Here the retries end after `timeout_s` with a refusal naming what did not answer. Needs
    init_channel_factory() first."""
    from unitree_sdk2py.comm.motion_switcher.motion_switcher_client import MotionSwitcherClient

    clients = [MotionSwitcherClient()]
    sport = None
    if interface == "unitree_go":
        from unitree_sdk2py.go2.sport.sport_client import SportClient
        sport = SportClient()
        clients.append(sport)
    for c in clients:
        c.SetTimeout(rpc_timeout_s)
        c.Init()
    try:
        return _release_modes(clients[0], sport, time.monotonic() + timeout_s, log_fn)
    finally:
        for c in clients:
            _close_sdk_client(c)


RELEASE_RETRY_S = 1.0     # the SDK examples' pause between attempts


def _release_modes(switcher, sport, deadline: float, log_fn: Callable[[str], None]) -> str:
    released, problem = "", ""
    code, data = switcher.CheckMode()
    while True:
        if code == 0 and data is not None:
            name = data.get("name", "")
            if not name:
                return released
            log_fn(f"releasing the built-in motion mode '{name}'")
            released = released or name
            if sport is not None:
                sd = sport.StandDown()
                if sd != 0:
                    log_fn(f"StandDown answered {sd}; releasing anyway, as the SDK example does")
            code, _ = switcher.ReleaseMode()
            problem = f"ReleaseMode answered {code} for '{name}'" if code != 0 else \
                f"'{name}' still active after ReleaseMode"
            code, data = switcher.CheckMode()       # checked at once, as the SDK example does
            if code == 0 and data is not None and not data.get("name", ""):
                return released
        else:
            problem = f"motion_switcher did not answer CheckMode (code {code})"
        if time.monotonic() + RELEASE_RETRY_S > deadline:
            raise UnitreeBackendError(
                f"the built-in motion mode could not be released: {problem}; is the robot on "
                f"this network interface and DDS domain? (to skip this step on a robot without "
                f"a motion service: release_motion_mode false)")
        time.sleep(RELEASE_RETRY_S)
        code, data = switcher.CheckMode()


def _close_sdk_client(client) -> None:
    """The SDK's RPC clients have no Close(): their response reader (a cyclonedds listener plus a
    'ch_reader' thread) would live until interpreter exit, where cyclone calling into a finalizing
    interpreter segfaults the process. Their channels do have Close methods; call them."""
    stub = getattr(client, "_ClientBase__stub", None)
    recv = getattr(stub, "_ClientStub__recvChannel", None)
    send = getattr(stub, "_ClientStub__sendChannel", None)
    if recv is not None:
        recv.CloseReader()
    if send is not None:
        send.CloseWriter()


# ---- lowstate in: bytes -> checked StateSample ------------------------------------------------
def go_foot_slots(spec: RobotSpec) -> np.ndarray:
    """For each of the spec's feet (bodies.feet order), its index in a go lowstate's foot_force
    (M.GO_FOOT_ORDER), by name: a foot named FR_foot reads Unitree's FR."""
    legs = [foot.split("_")[0] for foot in spec.foot_bodies]
    if sorted(legs) != sorted(M.GO_FOOT_ORDER):
        raise ConfigError(spec.source, "bodies.feet", f"{list(spec.foot_bodies)}: a Unitree go "
                          f"robot's feet are named by leg, each of {', '.join(M.GO_FOOT_ORDER)} "
                          f"once, followed by '_' (e.g. FR_foot), so that foot_force maps by name")
    return np.array([M.GO_FOOT_ORDER.index(leg) for leg in legs])


# Sensor data byte-identical for this many lowstates in a row (10 = 20 ms at 500 Hz, one policy
# period) is a frozen sensor or a replayed message, not a robot: real IMUs and encoders never
# repeat their noise for that long.
MAX_IDENTICAL_STATES = 10


class LowStateLink(HardwareLink):
    """The lowstate half of the Unitree backend, without DDS: `receive(bytes, now)` is everything
    a lowstate goes through before the Controller or the velocity estimator sees it (the fuzzer
    bench/fuzzing/lowstate.py drives it directly)."""

    state_name = "lowstate"
    state_topic = input_name = LOWSTATE_TOPIC
    log = log

    def __init__(self, spec: RobotSpec, *, state_rate_hz: float = STATE_RATE_HZ,
                 stale_timeout_s: float = 0.1, damping_kd: np.ndarray | None = None,
                 close_damping_s: float = 0.05, max_identical_states: int = MAX_IDENTICAL_STATES,
                 command_timeout_s: float | None = None, remote: bool = True,
                 foot_force_threshold: float | None = None):
        if spec.interface not in M.FAMILIES:
            raise UnitreeBackendError(f"robot '{spec.name}' uses hardware interface "
                                      f"'{spec.interface}', not a Unitree one "
                                      f"({', '.join(M.FAMILIES)})")
        self.fam = M.family(spec.interface)
        super().__init__(spec, state_rate_hz=state_rate_hz, stale_timeout_s=stale_timeout_s,
                         damping_kd=damping_kd, close_damping_s=close_damping_s,
                         command_timeout_s=command_timeout_s)
        self._p2h = spec.policy_to_hardware
        # foot sensors (go lowstates): readings in the spec's foot order, contact over the deploy
        # config's threshold (contact.foot_force_threshold, raw counts) unless one is given;
        # without a threshold, or on a G1, HardwareLink estimates contact from the legs
        self._feet = go_foot_slots(spec) if self.fam.interface == "unitree_go" else None
        if foot_force_threshold is None and self._feet is not None:
            from deploy.deploy_config import DeployConfig
            foot_force_threshold = DeployConfig.load(spec).contact.foot_force_threshold
        self.foot_force_threshold = foot_force_threshold
        self.health = HealthMonitor(spec, check_mode_machine=self.fam.has_mode_machine)
        self.remote = RemoteMap(spec.family) if remote else None
        # called on the I/O thread with (action, buttons) when a remote combination is pressed;
        # deploy.remote.controller_handler(controller) is the usual one
        self.remote_handler: Callable[[str, str], None] | None = None
        self.last_remote: tuple[str, str, float] | None = None     # (action, buttons, time)
        self.max_identical_states = int(max_identical_states)
        self._mode_machine = 0
        self._last_tick: int | None = None
        self._last_data = b""
        self._identical = 0

    def receive(self, data: bytes | bytearray | memoryview, now: float) -> bool:
        """Decode and check one lowstate; deliver it (True) or drop and count it (False)."""
        try:
            r = M.decode_state(self.fam, data)
        except M.MalformedMessage as exc:
            self._drop(exc.reason, exc.detail)
            return False
        p2h = self._p2h
        q, dq, tau = r.q[p2h], r.dq[p2h], r.tau_est[p2h]
        problem = self.bounds.problem(q, dq, tau, r.quat_wxyz, r.gyro, r.accel)
        if problem is not None:
            self._drop(*problem)
            return False
        if r.tick == self._last_tick:
            self._drop("frozen_tick", f"tick {r.tick} again")
            return False
        self._last_tick = r.tick
        sensors = b"".join(a.tobytes() for a in (q, dq, tau, r.quat_wxyz, r.gyro, r.accel))
        self._identical = self._identical + 1 if sensors == self._last_data else 0
        self._last_data = sensors
        if self._identical >= self.max_identical_states:
            self._drop("repeated", f"sensor data unchanged for {self._identical + 1} lowstates")
            return False
        state = RobotState(base_quat=r.quat_wxyz.reshape(1, 4), base_ang_vel=r.gyro.reshape(1, 3),
                           joint_pos=q.reshape(1, -1), joint_vel=dq.reshape(1, -1),
                           base_lin_vel=None)
        self._mode_machine = r.mode_machine
        health = self.health.assess(r.temperature, r.motor_error, r.battery_soc, r.mode_machine)
        force = contact = None
        if self._feet is not None and r.foot_force is not None:
            force = r.foot_force[self._feet]
            force[np.abs(force) >= M.GO_FOOT_FORCE_RAIL] = np.nan     # saturated or broken
            if self.foot_force_threshold is not None:
                contact = force_contact(force, self.foot_force_threshold)
        self._state_received(StateSample(state=state, joint_torque=tau, imu_accel=r.accel,
                                         stamp=now, sequence=r.tick, health=health,
                                         foot_force=force, foot_contact=contact), now)
        if self.remote is not None:
            self._remote(r.remote, now)
        return True

    def _remote(self, data: bytes, now: float) -> None:
        """A pressed combination: damping is forced here, on this lowstate, before anything else
        (deploy/remote.py); every action then goes to the handler (the Controller). Without a
        handler the remote's damping is latched here until release_forced_damping()."""
        pressed = self.remote.update(int.from_bytes(data[2:4], "little"))
        if pressed is None:
            return
        action, label = pressed
        self.last_remote = (action, label, now)
        self._counts[f"remote_{action}"] += 1
        handler = self.remote_handler
        if action == "damping":     # with no Controller to latch it, the link holds it itself
            self.force_damping(f"wireless remote {label}: damping", now, latch=handler is None)
        self.log.warning("wireless remote %s: %s", label, action)
        if handler is not None:
            try:
                handler(action, label)
            except Exception:
                self.log.exception("remote handler failed for %s", action)

    def _send(self, now: float) -> None:
        """Nothing to send without a transport (UnitreeBackend sends over DDS)."""


# ---- the backend ------------------------------------------------------------------------------
class UnitreeBackend(LowStateLink):
    """Joining DDS (the constructor) and taking control (`take_control`) are separate steps, as a
    lifecycle node's configure and activate are: the constructor only listens (rt/lowstate in,
    nothing out), so starting a node does not make the robot limp."""

    def __init__(self, spec: RobotSpec, network_interface: str, domain: int = UNITREE_DOMAIN, *,
                 state_rate_hz: float = STATE_RATE_HZ, stale_timeout_s: float = 0.1,
                 damping_kd: np.ndarray | None = None, release_motion_mode: bool = True,
                 release_timeout_s: float = 10.0, lowcmd_check_s: float = 0.5,
                 close_damping_s: float = 0.05, max_identical_states: int = MAX_IDENTICAL_STATES,
                 command_timeout_s: float | None = None, remote: bool = True,
                 foot_force_threshold: float | None = None, take_control: bool = True):
        self.network_interface = network_interface
        self.domain = int(domain)
        super().__init__(spec, state_rate_hz=state_rate_hz, stale_timeout_s=stale_timeout_s,
                         damping_kd=damping_kd, close_damping_s=close_damping_s,
                         max_identical_states=max_identical_states,
                         command_timeout_s=command_timeout_s, remote=remote,
                         foot_force_threshold=foot_force_threshold)
        self._encoder = M.LowCmdEncoder(self.fam)
        slots = self.fam.motor_slots
        self._mode = np.zeros(slots)
        self._mode[self._p2h] = M.HG_MODE_ENABLE if self.fam.interface == "unitree_hg" else M.GO_MODE_SERVO
        self._idle_q = np.zeros(slots)
        self._idle_dq = np.zeros(slots)
        if self.fam.interface == "unitree_go":   # unused go slots: Unitree's stop sentinels
            unused = np.setdiff1d(np.arange(slots), self._p2h)
            self._idle_q[unused] = M.GO_POS_STOP
            self._idle_dq[unused] = M.GO_VEL_STOP
        self.release_motion_mode = release_motion_mode
        self.release_timeout_s = float(release_timeout_s)
        self.lowcmd_check_s = float(lowcmd_check_s)

        # shared with the I/O thread (single assignments)
        self._foreign: str | None = None        # set once foreign lowcmd traffic is seen: latched
        self._cmd_out: RawWriter | None = None  # None: listening only
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.released_mode = ""

        init_channel_factory(self.domain, network_interface)
        LowState_, self._LowCmd = M.sdk_types(spec.interface)
        self._link = DdsLink(self.domain)
        try:
            self._state_in = self._link.reader(LOWSTATE_TOPIC, LowState_, depth=1)
            self._cmd_seen = self._link.reader(LOWCMD_TOPIC, self._LowCmd, depth=16, ignore_own=True)
            self._thread = threading.Thread(target=self._io_loop, name="unitree-io", daemon=True)
            self._thread.start()
            if take_control:
                self.take_control()
        except BaseException:
            self.close()
            raise

    # ---- lifecycle: check, take control -------------------------------------------------------
    def foreign_lowcmd_traffic(self, listen_s: float) -> list[str]:
        """Participants other than this one that sent rt/lowcmd samples within `listen_s`. As
        unitree_rl_lab's deploy does (a LowCmd subscriber that must time out before it starts),
        traffic counts, not DataWriters: an idle writer is no competitor."""
        end = time.monotonic() + listen_s
        seen: set[str] = set()
        while True:
            seen.update(self._cmd_seen.senders())
            if seen or time.monotonic() >= end:
                return sorted(seen)
            time.sleep(0.02)

    def check_robot(self, timeout_s: float = 2.0) -> dict:
        """Before taking control: a valid lowstate arrives within `timeout_s`, the robot reports
        no health fault (motor errors, temperatures, battery, G1 variant), and nobody else sends
        rt/lowcmd. Raises UnitreeBackendError naming what failed; returns what was found."""
        end = time.monotonic() + timeout_s
        while self._latest is None and time.monotonic() < end:
            time.sleep(0.01)
        sample = self._latest
        if sample is None:
            raise UnitreeBackendError(
                f"no valid {LOWSTATE_TOPIC} within {timeout_s:g} s on domain {self.domain} via "
                f"'{self.network_interface}' (dropped: {dict(self._drops) or 'none'}): is the "
                f"robot on, on this interface and domain?")
        if sample.health is not None and sample.health.fault:
            raise UnitreeBackendError(f"robot health: {sample.health.fault}")
        self._refuse_foreign_traffic()
        return {"health": sample.health.to_dict() if sample.health else None,
                "mode_machine": self._mode_machine}

    def take_control(self) -> str:
        """Refuse if another process sends rt/lowcmd; release the built-in motion mode (StandDown
        first; deploy: release_builtin_motion_mode); then start sending rt/lowcmd (damping until
        the Controller writes). Returns the released mode's name."""
        if self._cmd_out is not None:
            return self.released_mode
        self._refuse_foreign_traffic()
        if self.release_motion_mode:
            self.released_mode = release_builtin_motion_mode(self.fam.interface, self.release_timeout_s)
        self._cmd_out = self._link.writer(LOWCMD_TOPIC, self._LowCmd)
        return self.released_mode

    @property
    def in_control(self) -> bool:
        return self._cmd_out is not None

    def _refuse_foreign_traffic(self) -> None:
        foreign = self.foreign_lowcmd_traffic(self.lowcmd_check_s)
        if foreign:
            raise UnitreeBackendError(
                f"another process publishes {LOWCMD_TOPIC} on domain {self.domain} via "
                f"'{self.network_interface}' (participant {', '.join(foreign)}): stop it (another "
                f"controller, a bridge, the SDK examples) before this one takes control")

    # ---- RobotBackend (read_state, write_command: HardwareLink) ------------------------------
    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._state_in.wake()
            self._thread.join(2.0)
            self._thread = None
        self._link.close()

    # ---- status ------------------------------------------------------------------------------
    def diagnostics(self) -> dict:
        latest = self._latest
        return {
            "backend": "unitree", "interface": self.fam.interface, "domain": self.domain,
            "network_interface": self.network_interface,
            **self._link_diagnostics(),
            "in_control": self.in_control,
            "foreign_lowcmd": self._foreign or "",
            "released_motion_mode": self.released_mode,
            "mode_machine": self._mode_machine,
            "health": latest.health.to_dict() if latest is not None and latest.health else None,
            "remote": {a: self._counts[f"remote_{a}"] for a in ("damping", "stand", "policy")},
        }

    # ---- the I/O thread ------------------------------------------------------------------------
    def _io_loop(self) -> None:
        mono = time.monotonic
        next_idle_send = mono()
        next_check = mono() + 0.5
        while not self._stop.is_set():
            self._state_in.wait(self.period)
            now = mono()
            fresh = False
            for data in self._state_in.take(8):
                fresh = self.receive(data, now) or fresh
            if self._cmd_out is None:
                continue                      # listening only (before take_control)
            if fresh:
                self._send(now)
                next_idle_send = now + self.period
            elif now >= next_idle_send:       # nothing valid came: keep the stream at the rate
                self._is_stale(now)           # (counts and logs the start of a silence)
                self._send(now)
                next_idle_send = max(next_idle_send + self.period, now)
            if now >= next_check:
                next_check = now + 0.1
                self._watch_foreign_traffic()
        if self._cmd_out is not None:
            self._damp_before_leaving()

    def _watch_foreign_traffic(self) -> None:
        """Another process sending rt/lowcmd while this one drives: the motors would obey two
        masters. Damp, latched until this backend is closed."""
        senders = self._cmd_seen.senders()
        if senders and self._foreign is None:
            self._foreign = (f"another process sends {LOWCMD_TOPIC} (participant "
                             f"{', '.join(sorted(set(senders)))}): damping until restart")
            self.log.error("%s", self._foreign)

    def _send(self, now: float) -> None:
        out = self._cmd_out
        if out is None:
            return
        slots, p2h = self.fam.motor_slots, self._p2h
        q, dq = self._idle_q.copy(), self._idle_dq.copy()
        kp, kd, tau = np.zeros(slots), np.zeros(slots), np.zeros(slots)
        q[p2h], kp[p2h], kd[p2h] = self._command_now(now, self._foreign)
        out.write(self._encoder.encode(self._mode, q, dq, tau, kp, kd, self._mode_machine))
