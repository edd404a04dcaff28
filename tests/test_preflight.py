"""`sac2real preflight`: a clear PASS / FAIL line per check, against a robot played by the MuJoCo
DDS bridge on the loopback interface (real unitree_sdk2py and cyclonedds), and a verdict."""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if os.environ.get("CI"):
    import rclpy  # noqa: F401
    import unitree_sdk2py  # noqa: F401
else:
    pytest.importorskip("unitree_sdk2py", reason="unitree_sdk2py not installed (pip install -e '.[unitree]')")
    pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros2]')")

from deploy.bridges.process import dds_test_domain, unitree_bridge  # noqa: E402
from deploy.cli import main  # noqa: E402
from deploy.preflight import Preflight  # noqa: E402

DOMAIN = dds_test_domain()      # the same domain as the Unitree backend tests: one SDK per process


def _status(pf: Preflight) -> dict[str, str]:
    return {c.name: c.status for c in pf.checks}


def test_preflight_passes_with_the_robot_up_and_a_verified_bundle(bundle_dir, tmp_path, capsys):
    """An idle rt/lowcmd writer (a tool, a paused bag player) is no competitor: it passes."""
    from deploy.backends import unitree_msgs as M
    from deploy.backends.unitree import DdsLink, init_channel_factory

    init_channel_factory(DOMAIN, "lo")
    idle = DdsLink(DOMAIN)
    idle_writer = idle.writer("rt/lowcmd", M.sdk_types("unitree_go")[1])  # noqa: F841 (kept alive)
    try:
        with unitree_bridge("go2", DOMAIN, tmp_path / "go2.json", 100.0):
            code = main(["preflight", "--robot", "go2", "--backend", "unitree", "--network-interface",
                         "lo", "--domain", str(DOMAIN), "--policy", str(bundle_dir), "--wait", "0.5"])
    finally:
        idle.close()
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("python environment", "spec", "backend", "network interface", "DDS domain",
                 "unitree_sdk2py", "robot publishes state", "robot health",
                 "no other lowcmd publisher", "ROS 2 middleware", "bundle",
                 "spec and bundle agree", "bundle verified"):
        assert f"PASS  {name} " in out, f"no PASS line for {name}:\n{out}"
    assert "idle writer(s)" in out and "battery 100 %" in out
    assert "preflight: ready (" in out and "FAIL" not in out


def test_preflight_names_each_failure(bundle_dir, tmp_path):
    from deploy.backends import unitree_msgs as M
    from deploy.backends.unitree import DdsLink, init_channel_factory

    init_channel_factory(DOMAIN, "lo")
    # another controller already publishing rt/lowcmd, no robot, a tampered bundle
    other = DdsLink(DOMAIN)
    _, cmd_t = M.sdk_types("unitree_go")
    writer = other.writer("rt/lowcmd", cmd_t)
    fam = M.family("unitree_go")
    z = np.zeros(fam.motor_slots)
    cmd = M.LowCmdEncoder(fam).encode(z, z, z, z, z, z)
    stop = threading.Event()
    sender = threading.Thread(target=lambda: [writer.write(cmd) or time.sleep(0.01)
                                              for _ in iter(stop.is_set, True)], daemon=True)
    sender.start()                            # sending while the preflight runs
    meta = json.loads((bundle_dir / "policy.json").read_text())
    meta["joints"][0], meta["joints"][1] = meta["joints"][1], meta["joints"][0]
    (bundle_dir / "policy.json").write_text(json.dumps(meta))
    try:
        pf = Preflight("go2", "unitree", "lo", DOMAIN, str(bundle_dir), wait_s=0.5)
        assert not pf.run()
    finally:
        stop.set()
        sender.join()
        other.close()
    st = _status(pf)
    assert st["no other lowcmd publisher"] == "FAIL"
    assert st["robot publishes state"] == "FAIL"
    assert st["spec and bundle agree"] == "FAIL" and st["bundle verified"] == "SKIP"
    lines = {c.name: c.line for c in pf.checks}
    assert "is being sent by" in lines["no other lowcmd publisher"]
    assert st["robot health"] == "SKIP"
    assert "FL_hip_joint" in lines["spec and bundle agree"] or "joint" in lines["spec and bundle agree"]
    assert pf.summary().startswith("preflight: NOT READY: 3 of")

    pf = Preflight("go2", "unitree", "nosuchif0", DOMAIN, "none")
    pf.run()
    st = _status(pf)
    assert st["network interface"] == "FAIL" and st["robot publishes state"] == "SKIP"
    assert "'nosuchif0' does not exist" in {c.name: c.line for c in pf.checks}["network interface"]

    pf = Preflight("go2", "ros2", policy="none")
    pf.run()
    assert _status(pf)["backend"] == "FAIL"


def test_preflight_current_without_a_promoted_bundle_fails_clearly(tmp_path, capsys):
    code = main(["preflight", "--robot", "go2", "--backend", "mujoco", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  bundle" in out and "has no current bundle" in out
    assert "SKIP  network interface" in out and "PASS  ROS 2 middleware" in out
