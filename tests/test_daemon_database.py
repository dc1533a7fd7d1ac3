"""The daemon and its database: created on first start, found again after a SIGKILL, never
outlived by its ovsdb-server, shown by `microcloud status`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from microcloudd.db.database import Database
from microcloudd.db.records import Config
from tests.fixtures.daemon import RunningDaemon, start_daemon


def status(d: RunningDaemon) -> dict:  # type: ignore[type-arg]
    return json.loads(d.cli("status", "--format", "json", check=True).stdout)


def restart(daemon_dir: Path) -> RunningDaemon:
    """Start again after a SIGKILL: its socket file is stale (start_daemon waits for the file),
    so remove it and wait until the new daemon answers."""
    (daemon_dir / "unix.socket").unlink(missing_ok=True)
    d = start_daemon(daemon_dir)
    deadline = time.monotonic() + 30
    while d.cli("status").returncode != 0:
        assert time.monotonic() < deadline, "the restarted daemon does not answer"
        time.sleep(0.1)
    return d


def db_pid(d: RunningDaemon) -> int:
    [comp] = [c for c in status(d)["components"] if c["name"] == "database"]
    assert comp["state"] == "running" and comp["healthy"]
    return int(comp["pid"])


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie not yet reaped by init still answers kill(0): check its state
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True
        except (FileNotFoundError, IndexError):
            return True
        time.sleep(0.05)
    return False


async def write_marker(d: RunningDaemon, value: str) -> None:
    db = await Database.connect(f"unix:{d.state_dir}/database/db.sock")
    try:
        await db.insert(Config(key="test.marker", value=value))
    finally:
        await db.close()


async def read_marker(d: RunningDaemon) -> str:
    db = await Database.connect(f"unix:{d.state_dir}/database/db.sock")
    try:
        return db.get(Config, "test.marker").value
    finally:
        await db.close()


def test_status_shows_the_database(daemon: RunningDaemon) -> None:
    s = status(daemon)
    db = s["database"]
    assert db["role"] == "leader"
    assert len(db["members"]) == 1 and db["members"][0].startswith("tcp:127.0.0.1:")
    assert db["schema_version"]
    out = daemon.cli("status", check=True).stdout
    assert f"Database:        leader, schema {db['schema_version']}, members: {db['members'][0]}" in out
    assert (daemon.state_dir / "database" / "microcloud.db").stat().st_size > 0


async def test_sigkilled_daemon_restarts_and_finds_its_data(daemon_dir: Path) -> None:
    d = start_daemon(daemon_dir)
    try:
        first = status(d)["database"]
        await write_marker(d, "before-kill")
        pid = db_pid(d)
        d.stop(signal.SIGKILL)
        assert gone(pid), "the database outlived its SIGKILLed daemon"
        d = restart(daemon_dir)
        again = status(d)["database"]
        assert again["cluster_id"] == first["cluster_id"]  # reused, not created anew
        assert again["members"] == first["members"]
        assert await read_marker(d) == "before-kill"
        pid = db_pid(d)
    finally:
        d.stop()
    assert gone(pid), "the database outlived its stopped daemon"
