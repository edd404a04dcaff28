"""The Controller's modes and their transitions, as data: one table, read top to bottom, first
match wins. Each row can be tested on its own (tests/test_controller.py does).

    PASSIVE  damping only (kp = 0), the state at start-up
    STAND    interpolate from the last target (the measured pose, coming from PASSIVE/DAMPING) to
             the default pose with the spec's stand gains, then hold it
    POLICY   the policy drives, blended in from the stand pose and gains
    DAMPING  damping only, latched after a fault or an operator damping/e-stop request: like a
             hardware e-stop, nothing leaves it until an explicit reset (`Controller.reset()`,
             the node's ~/reset), and a reset only unlatches: the robot stays in DAMPING until
             the operator then asks it to stand

Damping (the e-stop) is not a request in the operator slot: it is a flag of its own that no later
request can replace, so an e-stop followed by a start within the same tick still damps (the start
is dropped). Stand and policy requests share one pending slot (a new one replaces the old one). A
request that a transition uses is consumed. A request that cannot be served is dropped with a
reason, except a policy request during STAND, which waits until the default pose is reached."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable


class Mode(str, enum.Enum):
    PASSIVE = "PASSIVE"
    STAND = "STAND"
    POLICY = "POLICY"
    DAMPING = "DAMPING"


class Request(str, enum.Enum):
    STAND = "stand"
    POLICY = "policy"
    DAMPING = "damping"


@dataclass(frozen=True)
class Facts:
    """What the transitions may read, gathered once per tick."""

    fault: str | None           # fatal safety reason found this tick
    request: Request | None     # the pending operator request
    state_ok: bool              # the state passed every check this tick
    stand_done: bool            # the STAND interpolation has reached the default pose
    policy_loaded: bool         # a verified bundle is installed
    latched: str | None = None  # why DAMPING is latched (fault or e-stop), None after a reset


@dataclass(frozen=True)
class Transition:
    sources: frozenset
    when: Callable[[Facts], bool]
    target: Mode
    why: str


ALL = frozenset(Mode)
P, S, POL, D = Mode.PASSIVE, Mode.STAND, Mode.POLICY, Mode.DAMPING

TRANSITIONS: tuple[Transition, ...] = (
    Transition(ALL - {D}, lambda f: f.fault is not None, D, "safety fault"),
    Transition(ALL - {D}, lambda f: f.request is Request.DAMPING, D, "operator: damping"),
    Transition(frozenset({P, D}), lambda f: f.request is Request.STAND and f.state_ok
               and f.latched is None, S, "operator: stand"),
    Transition(frozenset({S}), lambda f: f.request is Request.POLICY and f.stand_done
               and f.policy_loaded, POL, "operator: policy"),
    Transition(frozenset({POL}), lambda f: f.request is Request.STAND, S, "operator: stand"),
)

# (mode, request) -> condition under which an unserved request stays pending
WAITS: dict[tuple[Mode, Request], Callable[[Facts], bool]] = {
    (S, Request.POLICY): lambda f: f.policy_loaded and not f.stand_done,
}


@dataclass(frozen=True)
class Step:
    mode: Mode
    transition: Transition | None
    request_kept: bool              # the pending request stays for a later tick
    dropped: str | None             # why an unserved request was dropped


def step(mode: Mode, facts: Facts) -> Step:
    """The mode after this tick's facts, and what happens to the pending request."""
    for t in TRANSITIONS:
        if mode in t.sources and t.when(facts):
            return Step(t.target, t, False, None)
    req = facts.request
    if req is None:
        return Step(mode, None, False, None)
    wait = WAITS.get((mode, req))
    if wait is not None and wait(facts):
        return Step(mode, None, True, None)
    return Step(mode, None, False, _why_dropped(mode, req, facts))


def _why_dropped(mode: Mode, req: Request, f: Facts) -> str | None:
    if req is Request.DAMPING and mode is D:
        return None    # already there
    if req is Request.STAND and mode is S:
        return None
    if req is Request.POLICY and mode is POL:
        return None
    if mode is D and f.latched is not None:
        return f"{req.value} refused in DAMPING: damping is latched ({f.latched}); reset first"
    if req is Request.STAND and not f.state_ok:
        return f"stand refused in {mode.value}: the state fails a safety check ({f.fault or 'no state'})"
    if req is Request.POLICY and not f.policy_loaded:
        return f"policy refused in {mode.value}: no verified bundle is installed"
    if req is Request.POLICY:
        return f"policy refused in {mode.value}: request stand first"
    return f"{req.value} refused in {mode.value}"
