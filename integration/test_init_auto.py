"""The real `microcloud init --auto` on this machine: every component real (database, OVN,
OVS, Ceph with a sparse file-backed bluestore OSD, libvirtd, a TCG/KVM guest), under a temp
state dir and the member's own network namespace. Then: launch an instance, stop microcloudd
(the guest shut down through ACPI, not powered off) and find no child left, start it again and
find the same cloud with the instance running again (booted anew), kill a component and see
it restarted in `microcloud status`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from microcloudd.stack.purge import purge
from tests.fixtures.daemon import REPO, RunningDaemon, start_daemon
from tests.support.proc import descendants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

COMPONENTS = {"database", "ovnnb_db", "ovnsb_db", "ovn-northd", "ovsdb-server", "ovs-vswitchd",
              "ovn-controller", "ceph-osd.0", "libvirtd"}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(what: str, check: Callable[[], Any], within: float = 120.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def status(d: RunningDaemon) -> dict[str, Any]:
    return dict(json.loads(d.cli("status", "--format", "json", check=True).stdout))


def stack_running(d: RunningDaemon) -> bool:
    return "stack: running" in d.cli("init", "--show").stdout


def instance_status(d: RunningDaemon, name: str) -> str:
    r = d.cli("list", "--format", "json")
    if r.returncode != 0:
        return ""
    return next((i["status"] for i in json.loads(r.stdout) if i["name"] == name), "")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="mc-it-init-"))
    state = base / "s"
    # init --auto's host NAT uplink turns on IPv4 forwarding host-wide; give the machine back
    # as the test found it.
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    forwarding = forward.read_text()
    try:
        yield state
    finally:
        forward.write_text(forwarding)
        for pid in [int(p) for p in subprocess.run(["pgrep", "-f", f"{state}/"], capture_output=True,
                                                   text=True).stdout.split()]:
            os.kill(pid, signal.SIGKILL)  # only if the test failed half-way: ours by their path
        purge(state)
        shutil.rmtree(base, ignore_errors=True)


def test_init_auto_launch_stop_restart_and_component_restart(state_dir: Path) -> None:
    d = start_daemon(state_dir)
    try:
        # -- init --auto ----------------------------------------------------------------
        t0 = time.monotonic()
        r = d.cli("init", "--auto", timeout=600)
        assert r.returncode == 0, r.stderr + d.log.read_text()[-3000:]
        print(f"init --auto: {time.monotonic() - t0:.1f}s")
        assert "[11/11] Record member" in r.stdout
        s = status(d)
        assert s["initialized"]
        comps = {c["name"]: c for c in s["components"]}
        assert COMPONENTS <= set(comps), comps.keys()
        assert any(n.startswith("ceph-mon.") for n in comps) and any(n.startswith("ceph-mgr.") for n in comps)
        assert all(c["state"] == "running" and c["healthy"] for c in comps.values()), comps
        assert s["storage"]["pools"][0]["name"] == "remote"
        assert s["network"]["networks"] == 1
        again = d.cli("init", "--auto")
        assert again.returncode == 1 and "already initialised" in again.stderr

        # -- an instance ----------------------------------------------------------------
        img = subprocess.run([sys.executable, str(REPO / "scripts/build-test-image.py"),
                              str(state_dir.parent / "img")], capture_output=True, text=True, check=True,
                             timeout=600).stdout.strip().splitlines()[-1]
        d.cli("image", "import", img, "--alias", "testimage", check=True)
        d.cli("launch", "testimage", "demo", check=True, timeout=300)
        wait_until("demo running", lambda: instance_status(d, "demo") == "Running")

        console_log = state_dir / "logs" / "demo.console.log"
        wait_until("demo's guest ready", lambda: "MCTEST: ACPID-UP" in console_log.read_text(errors="replace")
                   and "MCTEST: READY" in console_log.read_text(errors="replace"), 300)

        # -- stop: the guest shut down gracefully, nothing left --------------------------------
        below = descendants(d.proc.pid)
        assert len(below) >= len(COMPONENTS) + 3  # + mon, mgr, QEMU
        t0 = time.monotonic()
        assert d.stop(signal.SIGTERM, timeout=120) == 0
        print(f"stop with a running guest: {time.monotonic() - t0:.1f}s")
        left = [p for p in below if alive(p)]
        assert not left, f"left running: {left}"
        before = console_log.read_text(errors="replace")
        assert "MCTEST: POWER-BUTTON" in before, before[-2000:]  # ACPI shutdown, not a power-off
        assert "did not shut down" not in d.log.read_text()

        # -- start again: the same cloud -------------------------------------------------
        d = start_daemon(state_dir)
        wait_until("the stack", lambda: stack_running(d), 300)
        s2 = status(d)
        assert s2["database"]["cluster_id"] == s["database"]["cluster_id"]
        assert "testimage" in d.cli("image", "list", check=True).stdout
        # microcloudd shut the guest down recording its last state RUNNING: it starts again
        wait_until("demo running again", lambda: instance_status(d, "demo") == "Running", 300)
        wait_until("demo booted again", lambda: console_log.read_text(errors="replace").count("MCTEST: READY")
                   > before.count("MCTEST: READY"), 300)
        demo = next(i for i in json.loads(d.cli("list", "--format", "json", check=True).stdout)
                    if i["name"] == "demo")
        assert demo["config"]["volatile.last_state.power"] == "RUNNING"

        # -- kill a component: restarted, and status says so ------------------------------
        for name in ("ovn-northd", "ceph-osd.0"):
            comp = next(c for c in status(d)["components"] if c["name"] == name)
            os.kill(comp["pid"], signal.SIGKILL)

            def restarted(name: str = name, old: int = comp["pid"]) -> bool:
                c = next(c for c in status(d)["components"] if c["name"] == name)
                return bool(c["restarts"] == 1 and c["state"] == "running" and c["pid"] != old
                            and c["healthy"])

            wait_until(f"{name} restarted", restarted, 120)
        assert "| 1 " in d.cli("status", check=True).stdout
    finally:
        d.stop(signal.SIGTERM, timeout=120)
