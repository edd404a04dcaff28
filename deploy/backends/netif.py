"""Network interfaces as Linux reports them (/sys/class/net): does one exist, is it up. The Unitree
backend, its bridge and `sac2real preflight` refuse a missing or down interface with this message
instead of letting DDS fall back silently to another interface."""
from __future__ import annotations

from pathlib import Path

SYS_NET = Path("/sys/class/net")
IFF_UP = 0x1


def available_interfaces() -> list[str]:
    return sorted(p.name for p in SYS_NET.iterdir()) if SYS_NET.is_dir() else []


def interface_problem(name: str) -> str | None:
    """None when `name` exists and is administratively up, else a sentence saying what is wrong."""
    if not name:
        return f"no network interface given (available: {', '.join(available_interfaces()) or 'none'})"
    path = SYS_NET / name
    if "/" in name or not path.exists():
        return (f"network interface '{name}' does not exist (available: "
                f"{', '.join(available_interfaces()) or 'none'})")
    try:
        flags = int((path / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return f"network interface '{name}': cannot read its flags"
    if not flags & IFF_UP:
        return f"network interface '{name}' exists but is down (ip link set {name} up)"
    return None


def describe(name: str) -> str:
    """'lo: up, operstate unknown, mtu 65536' for the pass line of the preflight."""
    path = SYS_NET / name
    read = lambda f: (path / f).read_text().strip() if (path / f).exists() else "?"
    return f"{name}: up, operstate {read('operstate')}, mtu {read('mtu')}"
