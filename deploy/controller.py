"""The Controller: the one control loop that runs on the robot and, unchanged, in sim2sim.

    ctrl = Controller(spec, backend, bundle, replay=writer)   # replay optional
    ctrl.start()                     # own loop thread, absolute deadlines at spec.policy_dt
    ctrl.request_stand()             # PASSIVE -> STAND (interpolate to the default pose)
    ctrl.request_policy()            # STAND -> POLICY once standing (waits for the pose)
    ctrl.set_command(0.5, 0.0, 0.0)  # clamped to the spec's command ranges, then rate limited
    ctrl.swap_policy(path_or_bundle) # verified now, installed at the next tick boundary
    ctrl.request_damping()           # or ctrl.estop(): any mode -> DAMPING (latched)
    ctrl.request_reset()             # unlatch DAMPING (the robot stays there until a stand)
    ctrl.stop()
    ctrl.diagnostics()               # a plain dict, see below

Public API (for the ROS 2 node and sim2sim; everything else is internal):

    Controller(spec, backend, bundle=None, replay=None, config=None, clock=time.monotonic)
        spec     RobotSpec;  backend: deploy.backend.RobotBackend;  bundle: PolicyBundle or None;
        replay   deploy.replay.ReplayWriter (already started; its layout must come from this
                 spec and observation layout), or None;  config: DeployConfig (default
                 configs/deploy/<robot>.yaml, else derived from the spec);  clock: the time base
                 of the backend's StateSample.stamp (sim2sim passes the simulation clock).
        Raises PolicyRefused if `bundle` does not fit the spec, or lacks the signature that
        config.trust requires on this backend (hardware backends by default; deploy/signing.py).
    start(spin_s=0.0, rt_priority=None) / stop(timeout=1.0)
                                     run / end the loop thread (daemon); rt_priority: SCHED_FIFO
                                     (Linux, CAP_SYS_NICE); what it got is in diagnostics()
    tick(now=None) -> Mode           one tick, for a caller that drives the loop itself (a ROS 2
                                     timer, sim2sim); never raises
    request_stand(), request_policy(), request_damping(), estop(), request_reset()
                                     operator requests; a request that cannot be served is
                                     dropped and the reason kept in diagnostics()["last_request"].
                                     Damping (from the operator or a fault) is latched: it wins
                                     over every stand/policy request, in the same tick or later,
                                     until request_reset() (deploy/state_machine.py)
    set_command(vx, vy, wz) -> (vx, vy, wz) as clamped to spec.commands; raises CommandRefused
                                     (the command unchanged) for a non-finite value. The policy
                                     sees the command moved towards it at most the deploy
                                     config's per-axis acceleration (`commands:`) per tick,
                                     starting from zero each time POLICY is entered
    swap_policy(bundle_or_path) -> SwapResult(accepted, reason): a bundle that fails verification
                                     is never installed; the mode does not change
    mode, policy_id, bundle          read-only state
    diagnostics() -> dict            plain data (JSON-ready): mode, tick, time, command
                                     (as set), command_applied (rate limited, what the policy
                                     sees), command_note (the last clamp or refusal), latched,
                                     policy_id, pending_swap, pending_request, last_request,
                                     state_age_ms, loop {running, scheduling, period_target_ms,
                                     stages_us {state, obs, inference, safety, command, replay,
                                     tick: p50/p99/p99.9/max/mean/n}, period_ms, jitter_ms,
                                     overruns, missed_deadlines, ticks_over_budget}, replay
                                     {enqueued, dropped, malformed, written, queue_depth,
                                     io_errors, alive, skipped} or None, safety {counts,
                                     last_events, last_fatal},
                                     transitions (the last 10 mode changes with their reason)
    on_tick                          optional callable(controller) run after every tick (tests,
                                     sim2sim, benches; keep it short: it runs in the loop)

Timing: deadlines are absolute (t0 + k * policy_dt); a tick that ends after the next deadline is
an overrun and the missed deadlines are skipped (counted), never made up in a burst. Stage
latencies are measured on every tick; period and jitter (wake-up lateness) when the loop thread
runs. Modes and transitions: deploy/state_machine.py; safety checks: deploy/safety.py;
thresholds and gains: deploy/deploy_config.py (configs/deploy/<robot>.yaml).

State freshness: besides the age limit, a sample is stale when the backend hands the same sample
again on more than safety.max_repeated_ticks later ticks (no new valid state arrived; hardware
backends drop invalid, frozen and repeated messages). With the default 0, the tick after the one
that first read the last valid state is in DAMPING: DAMPING follows by the 2nd policy tick after
the last valid state (at most 2 policy periods, 40 ms at 50 Hz), whatever the age limit.

Per tick: swap at the boundary -> read state -> state checks -> mode transitions -> observation ->
policy -> safety filter -> write command -> hand the completed transition to the replay writer.
The loop never blocks on disk or network: the replay writer's append is a deque push."""
from __future__ import annotations

import collections
import logging
import math
import numbers
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from deploy.action_map import ActionMap
from deploy.backend import RobotBackend, StateSample
from deploy.deploy_config import DeployConfig
from deploy.loop_stats import LoopTimer
from deploy.observations import ObservationPipeline
from deploy.safety import SafetySupervisor
from deploy.signing import TrustCheck
from deploy.spec import RobotSpec
from deploy.state_machine import Facts, Mode, Request, step

log = logging.getLogger("deploy.controller")

# faults of a finite, fresh state: the observation is still valid (it ends the episode)
PHYSICAL_FAULTS = frozenset({"tilt", "joint_limit", "joint_velocity"})
STAGES = ("state", "obs", "inference", "safety", "command", "replay", "tick")
COMMAND_AXES = ("vx", "vy", "wz")
MAX_EXPLORATION = 3.0    # x the policy's own std: beyond it the robot is not running the policy


class PolicyRefused(ValueError):
    """A bundle given to the Controller's constructor does not fit its spec or pipeline."""


class CommandRefused(ValueError):
    """set_command got a value that is not a finite number; the command is unchanged."""


@dataclass(frozen=True)
class SwapResult:
    accepted: bool
    reason: str


def _smoothstep(s: float) -> float:
    s = min(1.0, max(0.0, s))
    return s * s * (3.0 - 2.0 * s)


class Controller:
    def __init__(self, spec: RobotSpec, backend: RobotBackend, bundle=None, replay=None,
                 config: DeployConfig | None = None,
                 clock: Callable[[], float] = time.monotonic, height_scan: bool = False):
        self.spec = spec
        self.backend = backend
        self.config = config or DeployConfig.load(spec)
        self.clock = clock
        self.period = spec.policy_dt
        self.pipeline = ObservationPipeline(spec, height_scan=height_scan)
        self.action_map = ActionMap(spec)
        self.safety = SafetySupervisor(spec, self.config.safety)
        self.trust = TrustCheck.for_backend(self.config.trust, backend)   # signed bundles only?
        self.replay = replay
        if replay is not None and replay.layout.obs_hash != self.pipeline.layout.hash:
            raise ValueError("the replay writer's layout was made for another observation layout")
        j = spec.num_joints
        # gains per mode (attributes, so that sim2sim's fault injection can alter them)
        self.policy_kp, self.policy_kd = spec.kp.copy(), spec.kd.copy()
        self.stand_kp, self.stand_kd = spec.stand_kp.copy(), spec.stand_kd.copy()
        self.damping_kp = np.zeros(j)
        self.damping_kd = np.asarray(self.config.controller.damping_kd, dtype=np.float64).copy()
        self.default_pos = spec.default_pos.copy()
        cmd = spec.commands
        self._cmd_low, self._cmd_high = cmd.low, cmd.high
        self._cmd_box = tuple(zip(cmd.low.tolist(), cmd.high.tolist()))
        self._cmd_step = tuple((self.config.commands.max_accel(spec) * self.period).tolist())

        self.mode = Mode.PASSIVE
        self._lock = threading.Lock()
        self._request: Request | None = None
        self._seq = 0                        # order of damping and reset requests
        self._damp_seq = 0                   # > 0: an e-stop / damping request is pending
        self._reset_seq = 0                  # > 0: a reset request is pending
        self.latched: str | None = None      # why DAMPING is latched; None: not latched
        self.last_request: dict = {}
        self._command = np.zeros((1, 3))     # as set (clamped to the ranges)
        self._applied = np.zeros((1, 3))     # what the policy sees (rate limited)
        self.command_note = ""
        self.bundle = None
        self._previous_bundle = None
        self.rolled_back: list[str] = []     # ids of bundles a post-swap fault rolled back, in order
        self._pending_bundle = None
        self._swap_time = -math.inf
        if bundle is not None:
            problem = self._bundle_problem(bundle, None)
            if problem:
                raise PolicyRefused(f"bundle {getattr(bundle, 'id', '?')}: {problem}")
            self.bundle = bundle

        self._tick = 0
        self._policy_tick0 = 0
        self._now = 0.0
        self._last_target: np.ndarray | None = None
        self._last_kp = self.damping_kp
        self._last_kd = self.damping_kd
        self._last_action = np.zeros((1, j), dtype=np.float32)
        self._prev_obs: np.ndarray | None = None
        self._prev_action: np.ndarray | None = None
        self._prev_target: np.ndarray | None = None     # the filtered target of _prev_action
        self._prev_policy = ""                          # the id of the bundle that chose it
        self._prev_scale = 0.0                          # and the exploration scale it sampled with
        # Exploration on the robot (fine-tuning): actions sampled around the mean within the
        # bundle's own std times this scale, before the safety filter. 0 (the default) runs the
        # deterministic policy exactly as deployment does.
        self.exploration_scale = 0.0
        self._noise = np.random.default_rng()
        self._last_obs: np.ndarray | None = None
        self._last_sample: StateSample | None = None
        self._repeats = 0                    # consecutive ticks that read the same sample again
        self._state_age = math.nan
        self._stand_from = self.default_pos.copy()
        self._stand_t0 = 0.0
        self._stand_T = self.config.controller.stand_duration_s
        self._blend_t0 = 0.0
        self.transitions: collections.deque = collections.deque(maxlen=64)
        self.replay_skipped = 0
        self.timer = LoopTimer(STAGES)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.on_tick: Callable[["Controller"], None] | None = None   # test/sim hook, after a tick
        self.scheduling = "not started"

    # ---- operator ---------------------------------------------------------------------------
    def _set_request(self, req: Request) -> int:
        """Returns the tick counter read under the lock the loop reads requests under, so the
        caller can promise "served by tick N+1" without racing a tick that is starting."""
        with self._lock:
            self._request = req
            return self._tick

    def request_stand(self) -> int:
        return self._set_request(Request.STAND)

    def request_policy(self) -> int:
        return self._set_request(Request.POLICY)

    def request_damping(self) -> int:
        """Damping at the next tick, latched until request_reset(). Not a slot request: a stand
        or policy request arriving after it, even within the same tick, cannot replace it."""
        with self._lock:
            self._seq += 1
            self._damp_seq = self._seq
            return self._tick

    estop = request_damping

    def request_reset(self) -> int:
        """Unlatch DAMPING at the next tick (as releasing a hardware e-stop does): the robot stays
        in DAMPING; a stand request may then be served. A damping request made after this one
        cancels it."""
        with self._lock:
            self._seq += 1
            self._reset_seq = self._seq
            return self._tick

    def set_command(self, vx: float, vy: float, wz: float) -> tuple[float, float, float]:
        """Clamp to the spec's command ranges (the clamp is noted in diagnostics) and return what
        was set; a value that is not a finite number raises CommandRefused and changes nothing."""
        want = []
        for axis, v in zip(COMMAND_AXES, (vx, vy, wz)):
            real = isinstance(v, numbers.Real) and not isinstance(v, bool)
            f = float(v) if real else math.nan
            if not math.isfinite(f):
                self.command_note = f"refused: {axis} = {v!r} is not a finite number; command unchanged"
                raise CommandRefused(f"velocity command {self.command_note}")
            want.append(f)
        got = [min(max(f, lo), hi) for f, (lo, hi) in zip(want, self._cmd_box)]
        if got != want:
            self.command_note = "clamped to the spec's ranges: " + ", ".join(
                f"{a} {w:g} -> {g:g} [{lo:g}, {hi:g}]" for a, w, g, (lo, hi)
                in zip(COMMAND_AXES, want, got, self._cmd_box) if w != g)
        self._command = np.array([got])
        return tuple(got)

    @property
    def command(self) -> np.ndarray:
        """The command as set (clamped); `applied_command` is what the policy sees."""
        return self._command[0].copy()

    @property
    def applied_command(self) -> np.ndarray:
        return self._applied[0].copy()

    def _ramp_command(self) -> None:
        """Move the applied command towards the set one by at most one tick's acceleration per
        axis (Python floats: three axes cost less than numpy calls). A new array when it moves,
        never written in place: the replay writer encodes the one it was handed later."""
        now = self._applied[0].tolist()
        new = [min(max(t, v - step), v + step)
               for t, v, step in zip(self._command[0].tolist(), now, self._cmd_step)]
        if new != now:
            self._applied = np.array([new])

    def set_exploration(self, scale: float, seed: int | None = None) -> float:
        """The runtime exploration scale (a multiple of the bundle's std; 0 = deterministic).
        Refused unless finite and in [0, MAX_EXPLORATION]; a bundle exported without the
        exploration outputs stays deterministic whatever the scale."""
        real = isinstance(scale, (int, float)) and not isinstance(scale, bool)
        if not real or not math.isfinite(scale) or not 0.0 <= scale <= MAX_EXPLORATION:
            raise ValueError(f"exploration scale {scale!r}: allowed values are finite numbers in "
                             f"[0, {MAX_EXPLORATION:g}]")
        if seed is not None:
            self._noise = np.random.default_rng(seed)
        self.exploration_scale = float(scale)
        return self.exploration_scale

    @property
    def policy_id(self) -> str | None:
        return None if self.bundle is None else self.bundle.id

    # ---- policy swap --------------------------------------------------------------------------
    def swap_policy(self, bundle_or_path) -> SwapResult:
        """Verify a bundle (a PolicyBundle, or a folder to load and verify) and install it at the
        next tick boundary. Refused: nothing changes, the reason is returned and recorded."""
        bundle = bundle_or_path
        if isinstance(bundle_or_path, (str, Path)):
            from deploy.bundle import BundleError, PolicyBundle
            try:
                bundle = PolicyBundle.load(bundle_or_path, self.spec, layout=self.pipeline.layout,
                                           providers="cpu", trust=self.trust)
            except (BundleError, OSError) as exc:
                self.safety.record("swap_refused", str(exc), False)
                return SwapResult(False, str(exc))
        problem = self._bundle_problem(bundle, self._last_obs)
        if problem:
            return SwapResult(False, problem)
        self._pending_bundle = bundle
        if self._thread is None and self._tick == 0:
            self._install_pending(self.clock())
            return SwapResult(True, f"installed {bundle.id}")
        return SwapResult(True, f"{bundle.id} verified; installed at the next tick boundary")

    def _bundle_problem(self, bundle, obs: np.ndarray | None) -> str | None:
        """Why `bundle` may not drive this robot (recorded): its signature where this robot
        requires one (deploy/signing.py), then the supervisor's checks."""
        problem = self.trust.problem(bundle)
        if problem is None:
            return self.safety.check_swap(bundle, self.pipeline.layout.hash, obs)
        self.safety.record("swap_refused", f"bundle {getattr(bundle, 'id', '?')}: signature: {problem}",
                           False)
        return f"signature: {problem}"

    def _install_pending(self, now: float) -> None:
        bundle, self._pending_bundle = self._pending_bundle, None
        if bundle is None:
            return
        self._previous_bundle, self.bundle = self.bundle, bundle
        self._swap_time = now
        self._prev_obs = None           # the next transition starts with the new policy
        self.safety.record("swapped", f"{getattr(self._previous_bundle, 'id', None)} -> {bundle.id}",
                           False)

    # ---- the loop thread ------------------------------------------------------------------------
    def start(self, spin_s: float = 0.0, rt_priority: int | None = None) -> "Controller":
        """Run tick() on absolute deadlines t0 + k * policy_dt in a daemon thread. `spin_s`: wake
        that much early and busy-wait (trades CPU for jitter; 0 = plain sleep). `rt_priority`:
        run the loop thread under SCHED_FIFO at this priority (Linux; needs CAP_SYS_NICE; if
        refused the loop runs at normal priority and diagnostics say why)."""
        if self._thread is not None:
            raise RuntimeError("the controller loop is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(spin_s, rt_priority),
                                        name="controller", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, spin_s: float, rt_priority: int | None = None) -> None:
        self.scheduling = set_realtime(rt_priority)
        mono, period, timer = time.monotonic, self.period, self.timer
        use_wall = self.clock is time.monotonic
        t0 = mono()
        k = 0
        last_wake = None
        while not self._stop.is_set():
            deadline = t0 + k * period
            delay = deadline - mono() - spin_s
            if delay > 0:
                time.sleep(delay)
            while spin_s and mono() < deadline:
                pass
            wake = mono()
            timer.jitter.add(max(0.0, wake - deadline))
            if last_wake is not None:
                timer.period.add(wake - last_wake)
            last_wake = wake
            try:
                self.tick(wake if use_wall else None)
            except Exception:   # tick() catches what it expects; this is a bug: stay safe
                log.exception("controller tick failed; commanding damping")
                self._emergency_damping()
            k += 1
            end = mono()
            if end > t0 + k * period:
                timer.overruns += 1
                behind = int((end - t0) / period) + 1
                timer.missed += behind - k
                k = behind

    def _emergency_damping(self) -> None:
        with self._lock:
            self.mode = Mode.DAMPING
            self.latched = "controller_error"
        self.safety.record("controller_error", "tick raised; damping", True)
        try:
            target = self._last_target if self._last_target is not None else self.default_pos
            self.backend.write_command(np.clip(target, self.spec.soft_lower, self.spec.soft_upper),
                                       self.damping_kp, self.damping_kd)
        except Exception:
            log.exception("backend write failed during emergency damping")

    # ---- one tick ------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> Mode:
        clk = time.perf_counter
        t_start = clk()
        now = self.clock() if now is None else now
        self._tick += 1
        self._now = now
        sup = self.safety
        sup.begin_tick(self._tick, now)
        if self._pending_bundle is not None:
            self._install_pending(now)

        # 1. state
        try:
            sample = self.backend.read_state()
        except Exception as exc:
            sup.record("backend_error", f"read_state raised {exc!r}", True)
            sample = None
        prev_mode = self.mode
        self._repeats = self._repeats + 1 if sample is not None and sample is self._last_sample else 0
        fault = sup.check_state(sample, now, allow_missing=prev_mode is Mode.PASSIVE,
                                policy_active=prev_mode is Mode.POLICY, repeats=self._repeats)
        t_state = clk()
        state_ok = sample is not None and fault is None
        if sample is not None:
            self._last_sample = sample
            self._state_age = now - sample.stamp

        # 2. transitions (e-stop and reset first, then the operator slot, state faults)
        with self._lock:
            req, damp, reset = self._request, self._damp_seq, self._reset_seq
            self._damp_seq = self._reset_seq = 0
        if reset and not damp:
            self._reset(now)          # first: a stand request in the same tick may then be served
        if damp:
            if req is not None:
                self._settle_request(req, False, False, f"{req.value} dropped: damping was "
                                     f"requested in the same tick")
            req = Request.DAMPING
        st = step(prev_mode, self._facts(fault, req, state_ok, now))
        self._settle_request(req, st.request_kept, st.transition is not None and req is not None
                             and st.transition.why.startswith("operator"), st.dropped)
        if st.mode is not prev_mode:
            self._enter(st.mode, now, st.transition.why, fault, sample)
        elif damp and self.mode is Mode.DAMPING and self.latched is None:
            self.latched = "operator: damping"       # an e-stop in unlatched DAMPING latches again
        if reset and damp:            # after the damping: only a reset that came later unlatches
            if reset > damp:
                self._reset(now)
            else:
                self.last_request = {"request": "reset", "tick": self._tick,
                                     "result": "dropped: a later damping request wins"}
        if self.mode is Mode.POLICY:
            self._ramp_command()

        # 3. observation (also on the tick that leaves POLICY: it closes the last transition)
        obs = None
        usable = sample is not None and (fault is None or fault in PHYSICAL_FAULTS)
        if usable and (self.mode is Mode.POLICY or prev_mode is Mode.POLICY):
            obs = self.pipeline.compute(sample.state, self._applied, self._last_action,
                                        clock=self._gait_clock(0))[0]
            ofault = sup.check_observation(obs)
            if ofault is not None:
                obs = None
                self._fault_now(ofault, now, sample)
            else:
                self._last_obs = obs
        t_obs = clk()

        # 4. policy
        action = None
        if self.mode is Mode.POLICY and obs is not None:
            try:
                scale = self.exploration_scale
                action = self.bundle.explore(obs, scale, self._noise.standard_normal(self.spec.num_joints)) \
                    if scale > 0.0 and self.bundle.can_explore else self.bundle.act(obs)
            except Exception as exc:
                sup.record("policy_error", f"inference raised {exc!r}", False)
                action = np.full(self.spec.num_joints, np.nan, dtype=np.float32)
        t_inf = clk()

        # 5. targets for the mode, then the safety filter
        target, kp, kd = self._mode_command(now, action, sample)
        last = self._last_target if self._last_target is not None else np.clip(
            target_or_default(sample, self.default_pos), self.spec.soft_lower, self.spec.soft_upper)
        if sample is not None and state_ok:
            q, qd = sample.state.joint_pos[0], sample.state.joint_vel[0]
        else:
            q = qd = _NAN_J.get(self.spec.num_joints)
        safe, afault = sup.filter_targets(target, last, q, qd, kp, kd)
        t_safe = clk()

        # 6. command
        try:
            self.backend.write_command(safe, kp, kd)
        except Exception as exc:
            sup.record("backend_error", f"write_command raised {exc!r}", True)
            afault = afault or "backend_error"
        self._last_target, self._last_kp, self._last_kd = safe, kp, kd
        if afault is not None and self.mode is not Mode.DAMPING:
            self._fault_now(afault, now, sample)       # the held target went out; DAMPING next
        t_cmd = clk()

        # 7. replay: the transition (prev_obs, prev_action) -> obs is complete
        self._log_transition(prev_mode, obs, sample, afault or fault)
        if self.mode is Mode.POLICY and action is not None and afault is None:
            self._prev_obs, self._prev_action, self._prev_target = obs, action, safe
            self._prev_policy = self.bundle.id      # a rollback at the next tick must not rename it
            self._prev_scale = self.exploration_scale if self.bundle.can_explore else 0.0
            self._last_action = action.reshape(1, -1).astype(np.float32, copy=False)
        else:
            self._prev_obs = self._prev_action = None
        t_end = clk()

        s = self.timer.stages
        s["state"].add(t_state - t_start)
        s["obs"].add(t_obs - t_state)
        s["inference"].add(t_inf - t_obs)
        s["safety"].add(t_safe - t_inf)
        s["command"].add(t_cmd - t_safe)
        s["replay"].add(t_end - t_cmd)
        s["tick"].add(t_end - t_start)
        if t_end - t_start > self.period:
            self.timer.budget_exceeded += 1
        if self.on_tick is not None:
            self.on_tick(self)
        return self.mode

    # ---- internals ---------------------------------------------------------------------------
    def _facts(self, fault, req, state_ok, now) -> Facts:
        return Facts(fault=fault, request=req, state_ok=state_ok,
                     stand_done=self.mode is Mode.STAND and now - self._stand_t0 >= self._stand_T,
                     policy_loaded=self.bundle is not None, latched=self.latched)

    def _reset(self, now: float) -> None:
        if self.mode is Mode.DAMPING and self.latched is not None:
            self.safety.record("reset", f"operator reset; damping had been latched by "
                               f"{self.latched}", False)
            result = f"served: unlatched ({self.latched}); still DAMPING until a stand request"
            log.warning("controller: damping unlatched by the operator (was: %s)", self.latched)
            self.latched = None
        else:
            result = f"nothing latched in {self.mode.value}"
        self.last_request = {"request": "reset", "tick": self._tick, "result": result}

    def _settle_request(self, req, kept: bool, served: bool, dropped: str | None) -> None:
        if req is None or kept:
            return
        with self._lock:
            if self._request is req:      # not replaced meanwhile by another thread
                self._request = None
        result = "served" if served else (f"dropped: {dropped}" if dropped else "already there")
        self.last_request = {"request": req.value, "tick": self._tick, "result": result}
        if dropped:
            log.warning("controller: %s", dropped)

    def _fault_now(self, reason: str, now: float, sample) -> None:
        st = step(self.mode, Facts(reason, None, False, False, self.bundle is not None, self.latched))
        if st.mode is not self.mode:
            self._enter(st.mode, now, st.transition.why, reason, sample)

    def _enter(self, mode: Mode, now: float, why: str, fault: str | None, sample) -> None:
        old = self.mode
        detail = why if fault is None else f"{why}: {fault}"
        with self._lock:      # diagnostics() reads mode, transitions and latch as one snapshot
            self.mode = mode
            self.transitions.append({"tick": self._tick, "time": round(now, 6), "from": old.value,
                                     "to": mode.value, "why": detail})
            if mode is Mode.DAMPING:
                self.latched = detail
        log.info("controller: %s -> %s (%s)", old.value, mode.value, detail)
        if mode is Mode.STAND:
            start = self._last_target if self._last_target is not None else \
                target_or_default(sample, self.default_pos)
            self._stand_from = np.clip(start, self.spec.soft_lower, self.spec.soft_upper)
            max_rate = self.safety.max_step / self.period           # rad/s per joint
            needed = float(np.max(1.5 * np.abs(self.default_pos - self._stand_from) / (0.9 * max_rate)))
            self._stand_T = max(self.config.controller.stand_duration_s, needed)
            self._stand_t0 = now
        elif mode is Mode.POLICY:
            self._blend_t0 = now
            self._policy_tick0 = self._tick      # the gait clock starts with the policy, as an episode's
            self._last_action = np.zeros((1, self.spec.num_joints), dtype=np.float32)
            self._prev_obs = self._prev_action = None
            self._applied = np.zeros((1, 3))      # the robot stands: the command ramps up from 0
        elif mode is Mode.DAMPING and fault is not None and self._previous_bundle is not None \
                and now - self._swap_time <= self.config.safety.rollback_window_s:
            bad, self.bundle = self.bundle, self._previous_bundle
            self.rolled_back.append(bad.id)
            self.safety.record("swap_rolled_back", f"fault '{fault}' {now - self._swap_time:.2f} s "
                               f"after installing {bad.id}; back to {self.bundle.id}", False)
            self._previous_bundle = None
            self._swap_time = -math.inf

    def _gait_clock(self, ticks_ahead: int) -> np.ndarray:
        """(1,) the gait clock `ticks_ahead` ticks after this one: 0 on the tick POLICY starts. An
        observation reads this tick's; the targets of the action it gives are for the next."""
        return np.array([(self._tick - self._policy_tick0 + ticks_ahead) * self.spec.policy_dt])

    def _mode_command(self, now: float, action, sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mode = self.mode
        if mode is Mode.POLICY and action is not None:
            target = self.action_map.joint_targets(action[None], self._gait_clock(1))[0]
            blend = self.config.controller.blend_in_s
            b = 1.0 if blend <= 0 else _smoothstep((now - self._blend_t0) / blend)
            if b < 1.0:
                return (self.default_pos + b * (target - self.default_pos),
                        self.stand_kp + b * (self.policy_kp - self.stand_kp),
                        self.stand_kd + b * (self.policy_kd - self.stand_kd))
            return target, self.policy_kp, self.policy_kd
        if mode is Mode.POLICY:      # no usable observation this tick: hold, DAMPING follows
            hold = self._last_target if self._last_target is not None else self.default_pos
            return hold, self._last_kp, self._last_kd
        if mode is Mode.STAND:
            s = _smoothstep((now - self._stand_t0) / self._stand_T)
            return self._stand_from + s * (self.default_pos - self._stand_from), \
                self.stand_kp, self.stand_kd
        return target_or_default(sample, self._last_target if self._last_target is not None
                                 else self.default_pos), self.damping_kp, self.damping_kd

    def _log_transition(self, prev_mode: Mode, obs, sample, fault: str | None) -> None:
        """Hand the completed transition to the replay writer: raw arrays only (a deque push);
        the applied action and the task's reward are computed on the writer's thread
        (deploy/robot_rewards.py)."""
        if self.replay is None or prev_mode is not Mode.POLICY or self._prev_obs is None:
            return
        if obs is None or sample is None:
            self.replay_skipped += 1      # no valid next observation (NaN or stale state)
            return
        reason = 0 if self.mode is Mode.POLICY else end_reason(fault)
        st = sample.state
        self.replay.append(
            time_ns=int(self._now * 1e9), obs=self._prev_obs, action=self._prev_action,
            next_obs=obs, terminated=reason == FALL, truncated=reason > FALL,
            command=self._applied[0], joint_pos=st.joint_pos[0], joint_vel=st.joint_vel[0],
            joint_torque=sample.joint_torque, imu_quat=st.base_quat[0], imu_gyro=st.base_ang_vel[0],
            imu_accel=sample.imu_accel,
            base_pos=sample.base_pos if sample.base_pos is not None else _NAN3,
            policy_id=self._prev_policy, joint_target=self._prev_target,
            exploration_scale=self._prev_scale, end_reason=reason,
            base_lin_vel=st.base_lin_vel[0] if st.base_lin_vel is not None else _NAN3,
            **({} if sample.foot_force is None else {"foot_force": sample.foot_force}),
            **({} if sample.foot_contact is None else {"foot_contact": sample.foot_contact}))

    # ---- diagnostics -----------------------------------------------------------------------------
    def diagnostics(self) -> dict:
        rs = None
        if self.replay is not None:
            w = self.replay.stats()
            rs = {"enqueued": w.enqueued, "dropped": w.dropped, "malformed": w.malformed,
                  "written": w.written, "queue_depth": w.queue_depth, "io_errors": w.io_errors,
                  "alive": w.alive, "skipped": self.replay_skipped}
        with self._lock:
            pending = "damping" if self._damp_seq else self._request.value if self._request else None
            mode, latched, transitions = self.mode, self.latched, list(self.transitions)[-10:]
        return {
            "mode": mode.value, "tick": self._tick, "time": self._now,
            "command": self.command.tolist(), "command_applied": self.applied_command.tolist(),
            "command_note": self.command_note, "latched": latched, "policy_id": self.policy_id,
            "exploration_scale": self.exploration_scale,
            "pending_swap": getattr(self._pending_bundle, "id", None),
            "pending_request": pending, "last_request": dict(self.last_request),
            "state_age_ms": None if math.isnan(self._state_age) else round(self._state_age * 1e3, 3),
            "loop": {"running": self.running, "period_target_ms": self.period * 1e3,
                     "scheduling": self.scheduling,
                     **self.timer.snapshot()},
            "replay": rs, "safety": self.safety.snapshot(),
            "transitions": transitions,
        }


def set_realtime(priority: int | None) -> str:
    """Put the calling thread under SCHED_FIFO at `priority`; returns what it got, in words."""
    if priority is None:
        return "normal"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
        return f"SCHED_FIFO {int(priority)}"
    except (AttributeError, OSError, ValueError) as exc:
        log.warning("real-time priority %s refused (%s); running at normal priority", priority, exc)
        return f"normal (SCHED_FIFO {priority} refused: {exc})"


class _NanJoints(dict):
    def get(self, n: int) -> np.ndarray:   # type: ignore[override]
        if n not in self:
            self[n] = np.full(n, np.nan)
        return self[n]


_NAN_J = _NanJoints()
_NAN3 = np.full(3, np.nan)


# end_reason of a transition (deploy/replay/record.py END_REASONS): only a fall is a termination
FALL, OPERATOR, SAFETY, GAP = 1, 2, 3, 5
_STATE_GAPS = frozenset({"no_state", "stale_state", "nan_state", "bad_quaternion", "backend_error"})


def end_reason(fault: str | None) -> int:
    """Why POLICY ended: the robot fell (tilt beyond the training's fall), the state stream broke
    (a gap), another safety fault, or an operator without a fault."""
    if fault is None:
        return OPERATOR
    if fault == "tilt":
        return FALL
    return GAP if fault in _STATE_GAPS else SAFETY


def target_or_default(sample: StateSample | None, fallback: np.ndarray) -> np.ndarray:
    """The measured joint positions when they are finite, else `fallback`."""
    if sample is not None:
        q = sample.state.joint_pos[0]
        if np.isfinite(q).all():
            return q.astype(np.float64, copy=True)
    return np.asarray(fallback, dtype=np.float64).copy()
