"""The Microcloud ovsdb-server as the daemon runs it: created once, reused, status, and
nothing left behind when the process running the Supervisor is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from microcloudd.components.supervisor import Supervisor
from microcloudd.db.records import Instance
from microcloudd.db.schema import shipped_version
from microcloudd.db.service import DatabaseService
from tests.fixtures.db import free_port

ROOT = Path(__file__).resolve().parent.parent

# What the daemon does at start-up, in a separate process we can SIGKILL.
DAEMON = """
import asyncio, os, sys, time
from pathlib import Path
from microcloudd.components.supervisor import Supervisor
from microcloudd.db.records import Instance
from microcloudd.db.service import DatabaseService

async def main(state, raft, name):
    sup = Supervisor()
    svc = DatabaseService(Path(state), sup, raft_address=raft)
    created = await svc.start()
    db = await svc.connect()
    found = [i.name for i in db.all(Instance)]
    await db.insert(Instance(name=name), may_exist=True)
    print("created" if created else "reused", sup.pid("database"), ",".join(found), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:4]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _run_daemon(state: Path, raft: str, name: str) -> tuple[subprocess.Popen[str], list[str]]:
    p = subprocess.Popen([sys.executable, "-c", DAEMON, str(state), raft, name], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout is not None
    line = p.stdout.readline().split()
    if not line:
        p.kill()
        raise AssertionError(f"daemon stand-in failed: {p.wait()}")
    return p, line


def test_sigkilled_daemon_leaves_no_server_and_restart_finds_data(tmp_path: Path) -> None:
    raft = f"tcp:127.0.0.1:{free_port()}"
    procs = []
    try:
        d1, out1 = _run_daemon(tmp_path, raft, "vm1")
        procs.append(d1)
        assert out1[0] == "created"
        server_pid = int(out1[1])
        assert _alive(server_pid)
        d1.send_signal(signal.SIGKILL)
        d1.wait()
        deadline = time.monotonic() + 5
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(server_pid), "ovsdb-server outlived the SIGKILLed daemon"

        d2, out2 = _run_daemon(tmp_path, raft, "vm2")
        procs.append(d2)
        assert out2[0] == "reused" and out2[2] == "vm1"  # the data written before the kill
        d2.kill()
        d2.wait()
        assert not _alive(int(out2[1])) or _wait_dead(int(out2[1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _wait_dead(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


async def test_service_start_status_reuse(tmp_path: Path) -> None:
    sup = Supervisor()
    raft = f"tcp:127.0.0.1:{free_port()}"
    svc = DatabaseService(tmp_path, sup, raft_address=raft)
    try:
        assert await svc.start() is True
        assert (tmp_path / "database" / "microcloud.db").exists()
        st = await svc.status()
        assert (st.role, st.members, st.address) == ("leader", [raft], raft)
        assert st.schema_version == shipped_version()
        assert st.cluster_id
        (comp,) = sup.status()
        assert (comp.name, comp.state, comp.healthy) == ("database", "running", True)
        db = await svc.connect()
        await db.insert(Instance(name="kept"))
        await db.close()
        await sup.stop_all()
        assert (await svc.status()).role == "unknown"

        assert await svc.start() is False  # reused, same cluster
        assert (await svc.status()).cluster_id == st.cluster_id
        db = await svc.connect()
        assert db.get(Instance, "kept").name == "kept"
        await db.close()
    finally:
        await sup.stop_all()
