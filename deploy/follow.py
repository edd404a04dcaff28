"""A running Controller follows its robot's promotions: when the registry's `current` pointer moves
(a fine-tuned candidate passed the gate and was promoted), the new bundle is loaded and verified on
this thread, never the control thread, and handed to `Controller.swap_policy`, which installs it at
the next tick boundary. A bundle the Controller rolled back (a fault within the rollback window
after the swap) is not installed again, however long the pointer keeps naming it: the rollback is
reported (events, and one JSON line per event in `log_path`), and it takes a new promotion to move
the robot on.

    follower = PolicyFollower(ctrl, PolicyRegistry(), log_path="runs/robot/promotions.jsonl").start()
    ...
    follower.stop()
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from deploy.event_log import append_event
from deploy.registry import PolicyRegistry, RegistryError

log = logging.getLogger("deploy.follow")


class PolicyFollower:
    def __init__(self, controller, registry: PolicyRegistry, poll_s: float = 0.5,
                 log_path: str | Path | None = None):
        self.ctrl, self.registry, self.poll_s = controller, registry, poll_s
        self.log_path = Path(log_path) if log_path else None
        self.events: list[dict] = []
        self.refused: set[str] = set()        # ids refused or rolled back: never retried
        self._seen_rollbacks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_once(self) -> dict | None:
        """Look for rollbacks and at the pointer once; the event of what was done (a rollback
        first), or None when nothing changed."""
        rolled = self._note_rollbacks()
        if rolled is not None:
            return rolled
        robot = self.ctrl.spec.name
        try:
            pointer = self.registry.pointer(robot)
        except RegistryError as exc:
            return self._event("pointer_unreadable", None, str(exc))
        if pointer is None or pointer["id"] == self.ctrl.policy_id or pointer["id"] in self.refused:
            return None
        ident = pointer["id"]
        try:
            path = self.registry.resolve(ident, robot)
        except RegistryError as exc:
            self.refused.add(ident)
            return self._event("refused", ident, str(exc))
        result = self.ctrl.swap_policy(path)      # loads and verifies here, installs at a tick
        if not result.accepted:
            self.refused.add(ident)
            return self._event("refused", ident, result.reason)
        return self._event("swapping", ident, result.reason)

    def _note_rollbacks(self) -> dict | None:
        """Rollbacks the Controller made since the last look; the last one's event."""
        rolled, event = list(self.ctrl.rolled_back), None
        for bad in rolled[self._seen_rollbacks:]:
            self.refused.add(bad)
            event = self._event("rolled_back", bad, f"a fault within "
                                f"{self.ctrl.config.safety.rollback_window_s:g} s of installing it; "
                                f"back to {self.ctrl.policy_id}")
        self._seen_rollbacks = len(rolled)
        return event

    def _event(self, what: str, ident: str | None, detail: str) -> dict:
        event = {"time": time.time(), "event": what, "bundle": ident,
                 "running": self.ctrl.policy_id, "detail": detail}
        self.events.append(event)
        (log.warning if what in ("refused", "rolled_back") else log.info)(
            "%s %s: %s", what, ident, detail)
        if self.log_path is not None:
            append_event(self.log_path, event)
        return event

    def start(self) -> "PolicyFollower":
        self._thread = threading.Thread(target=self._run, name="policy-follower", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_once()
            except Exception:     # a bug here must not take the robot's policy with it
                log.exception("policy follower check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
