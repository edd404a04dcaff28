"""The Unitree wireless remote, carried in every lowstate (`wireless_remote`, 40 bytes), as a
hand-held stop and mode switch once the built-in motion mode is released.

Byte layout (unitree_sdk2_python, example/wireless_controller/wireless_controller.py): bytes 2
and 3 hold the buttons, one bit each (byte 2: R1, L1, Start, Select, R2, L2, F1, F3 from bit 0;
byte 3: A, B, X, Y, Up, Right, Down, Left); little-endian floats at 4 lx, 8 rx, 12 ry, 20 ly.

The map follows unitree_rl_lab's deploy FSM (deploy/robots/<robot>/config: Passive on L2+B,
FixStand on L2+Up, Velocity on R1+X): here L2+B is DAMPING, L2+Up STAND, R1+X POLICY. A
combination acts once, when its last button goes down (holding it does not repeat). Damping is
served in every mode and wins: the backend damps the motors on the same lowstate
(UnitreeBackend, before the Controller's next tick), and the Controller is asked to latch it.
STAND from the remote also unlatches a latched DAMPING first, as the operator holding the remote
is the one standing at the robot (the node's ~/reset and ~/start do the same in two steps)."""
from __future__ import annotations

from typing import Callable

BUTTONS = ("R1", "L1", "Start", "Select", "R2", "L2", "F1", "F3",
           "A", "B", "X", "Y", "Up", "Right", "Down", "Left")
REMOTE_BYTES = 40
ACTIONS = ("damping", "stand", "policy")

# robot -> action -> the buttons held together (unitree_rl_lab's combinations, see above)
UNITREE_RL_LAB_MAP = {"damping": ("L2", "B"), "stand": ("L2", "Up"), "policy": ("R1", "X")}
REMOTE_MAPS: dict[str, dict[str, tuple[str, ...]]] = {"go2": UNITREE_RL_LAB_MAP,
                                                      "g1": UNITREE_RL_LAB_MAP}


def buttons_mask(names: tuple[str, ...] | list[str]) -> int:
    """The 16-bit button word (byte 2 low, byte 3 high) with these buttons down."""
    mask = 0
    for n in names:
        if n not in BUTTONS:
            raise ValueError(f"unknown remote button '{n}' (known: {', '.join(BUTTONS)})")
        mask |= 1 << BUTTONS.index(n)
    return mask


def remote_bytes(pressed: tuple[str, ...] | list[str] = ()) -> bytes:
    """40 remote bytes with these buttons down and the sticks centred (for bridges and tests)."""
    word = buttons_mask(pressed)
    return bytes(2) + word.to_bytes(2, "little") + bytes(REMOTE_BYTES - 4)


class RemoteMap:
    """Turns successive button words into actions, each on the press of its combination."""

    def __init__(self, robot: str, mapping: dict[str, tuple[str, ...]] | None = None):
        mapping = REMOTE_MAPS.get(robot) if mapping is None else mapping
        if mapping is None:
            raise ValueError(f"no wireless remote map for robot '{robot}' "
                             f"(known: {', '.join(REMOTE_MAPS)})")
        if "damping" not in mapping:
            raise ValueError(f"the remote map of '{robot}' has no 'damping' combination: a "
                             f"hand-held stop is required")
        for action in mapping:
            if action not in ACTIONS:
                raise ValueError(f"remote map of '{robot}': unknown action '{action}' "
                                 f"(allowed: {', '.join(ACTIONS)})")
        # damping first: when two combinations complete on one reading, the stop is served
        self.combos = sorted(((a, buttons_mask(b), "+".join(b)) for a, b in mapping.items()),
                             key=lambda c: c[0] != "damping")
        self._held = 0

    def update(self, word: int) -> tuple[str, str] | None:
        """(action, 'L2+B') for a combination completed by this reading, else None."""
        prev, self._held = self._held, word
        for action, mask, label in self.combos:
            if word & mask == mask and prev & mask != mask:
                return action, label
        return None


def controller_handler(controller) -> Callable[[str, str], None]:
    """What a remote action asks of the Controller, through its public request API."""
    def handle(action: str, label: str) -> None:
        if action == "damping":
            controller.request_damping()
        elif action == "stand":
            if controller.latched:
                controller.request_reset()
            controller.request_stand()
        elif action == "policy":
            controller.request_policy()
    return handle
