"""Fault injection on the real daemon: one real member (`microcloud init --auto` under a temp
state dir: database, OVN, OVS, Ceph, libvirtd, all children of microcloudd), and for every kill
point of a launch and of a delete (microcloudd/faults.py) microcloudd is restarted with
MICROCLOUD_KILL_AT=<point>, the request is made through its API, and it SIGKILLs itself there.
Then: every process of the member dies with it (PDEATHSIG), microcloudd starts again without
the variable, and once its reconciler has converged the instance is fully created (and
running) or cleanly gone, and nothing is leaked: the database, RBD (`rbd ls`), OVN NB
(`ovsdb-client`) and libvirt (`virsh`) are read with the real tools (tests/support/inventory).

A launch killed at any point has its row ("creating"), so the reconciler finishes it; a delete
killed at any point has its row marked "deleting", so the reconciler finishes that too.
Guests are launched running but never waited for: only their QEMU must start.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from microcloudd import faults
from tests.support import inventory
from tests.support.member import Member, member, wait_until
from tests.support.proc import descendants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SMALL = {"limits.memory": "128MiB", "limits.cpu": "1"}  # TCG guests we never wait for


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def request_dies(m: Member, method: str, path: str, body: Any = None) -> None:
    """Make a request that kills the daemon: no answer, or an operation that never finishes."""
    try:
        env = m.api(method, path, body, timeout=60)
        assert env.get("type") == "async", env  # an error answer means the request never ran
        env = m.wait_operation(env, timeout=60)
    except (OSError, http.client.HTTPException, json.JSONDecodeError):
        return  # the connection died with the daemon
    raise AssertionError(f"{method} {path} finished although the daemon was to die: {env}")


def crash_at(m: Member, point: str, method: str, path: str, body: Any = None) -> float:
    """Restart microcloudd with the kill point, make the request, see the daemon and every
    process of the member die, start it again; returns the seconds the whole cycle took."""
    t0 = time.monotonic()
    m.restart(env={faults.ENV: point})
    m.wait_ready()
    pid = m.d.proc.pid
    before = descendants(pid)
    request_dies(m, method, path, body)
    assert m.d.proc.wait(60) == -signal.SIGKILL, f"{point}: microcloudd did not SIGKILL itself"
    # The children die with it (PDEATHSIG), QEMU included (the libvirtd wrapper stops it).
    wait_until(f"{point}: the member's processes to die",
               lambda: not [p for p in before if alive(p)] and not m.our_pids(), 60)
    m.start(env={faults.ENV: None})
    m.wait_ready()
    return time.monotonic() - t0


def converged(m: Member) -> inventory.Inventory:
    """Wait for the reconciler's pass (it runs at start): no partial row, no leak."""
    last: list[inventory.Inventory] = []

    def check() -> bool:
        last[:] = [inventory.take(m.state)]
        return not last[0].problems()

    try:
        wait_until("the reconciler to converge", check, 120, every=0.5)
    except TimeoutError:
        raise AssertionError(f"not converged: {last[0].problems()}\n{last[0]}") from None
    return last[0]


def status(m: Member, name: str) -> str:
    env = m.api("GET", f"/1.0/instances/{name}")
    return str(env["metadata"]["status"]) if env["type"] == "sync" else ""


def running(m: Member, name: str) -> bool:
    return status(m, name) == "Running"


def stop(m: Member, name: str) -> None:
    """Power the guest off (keeps the 2-core machine free for the rest of the walk)."""
    env = m.wait_operation(m.api("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "force": True}))
    assert env["metadata"]["status"] == "Success", env


def delete_after_crash(m: Member, name: str) -> None:
    """DELETE, waiting out the RBD watches of a QEMU that died with the member's OSD: the OSD
    keeps them (so refuses the delete, "open by a running instance") until they time out,
    about 45 s after the restart here. Known issue: breaking them (blocklisting the dead
    client) once the domain is gone would make the delete succeed at once."""
    t0 = time.monotonic()
    while True:
        env = m.wait_operation(m.api("DELETE", f"/1.0/instances/{name}"))
        meta = env["metadata"] or {}
        if meta.get("status") == "Success":
            break
        if "open by a running instance" not in str(meta.get("err")) or time.monotonic() - t0 > 180:
            pytest.fail(f"DELETE {name}: {meta}\n{m.d.log.read_text()[-4000:]}")
        time.sleep(3)
    if time.monotonic() - t0 > 1:
        print(f"DELETE {name} waited {time.monotonic() - t0:.0f}s for stale RBD watches to expire")


def test_sigkill_microcloudd_at_every_launch_and_delete_step() -> None:
    with member("mc-it-faults-") as m:
        m.start()
        m.init()
        m.import_test_image()
        names: list[str] = []
        for i, point in enumerate(faults.LAUNCH_POINTS):
            name = f"k{i}"
            took = crash_at(m, point, "POST", "/1.0/instances",
                            {"name": name, "source": {"alias": "testimage"}, "start": True, "config": SMALL})
            inv = converged(m)
            assert inv.created() == {*names, name}, (point, inv)
            wait_until(f"{name} running", partial(running, m, name), 60)
            stop(m, name)
            names.append(name)
            print(f"kill at {point}: launch finished by the reconciler; cycle {took:.1f}s")
        for point in faults.DELETE_POINTS:
            name = names.pop(0)
            took = crash_at(m, point, "DELETE", f"/1.0/instances/{name}")
            inv = converged(m)
            assert inv.created() == set(names), (point, inv)
            assert status(m, name) == "", f"{name} still listed"
            print(f"kill at {point}: delete finished by the reconciler; cycle {took:.1f}s")
        for name in names:
            delete_after_crash(m, name)
        inv = inventory.take(m.state)
        assert not inv.problems() and not inv.rows and not inv.volumes and not inv.domains, inv
