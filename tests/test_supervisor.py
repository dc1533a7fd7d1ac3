"""The process supervisor with real child processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from microcloudd.api.errors import InvalidArgument, Unavailable
from microcloudd.components.spec import ProcessSpec
from microcloudd.components.supervisor import Supervisor

CHILD = """
import signal, sys, time
name, log, ignore_term = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def on_term(*_):
    with open(log, "a") as f:
        f.write(name + "\\n")
    if not ignore_term:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(log + "." + name + ".ready", "w").close()
print("hello from", name, flush=True)
while True:
    time.sleep(0.1)
"""


def spec(name: str, log: Path, *, after: tuple[str, ...] = (), ignore_term: bool = False,
         stop_timeout: float = 5.0) -> ProcessSpec:
    marker = f"{log}.{name}.ready"

    async def ready() -> bool:  # the child has set up its SIGTERM handler
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return False
        return True

    argv = [sys.executable, "-c", CHILD, name, str(log), "1" if ignore_term else "0"]
    return ProcessSpec(name=name, argv=argv, ready=ready, after=after, stop_timeout=stop_timeout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


async def test_restart_on_kill_with_backoff(tmp_path: Path) -> None:
    sup = Supervisor(backoff_initial=0.3, backoff_max=5)
    await sup.start(spec("a", tmp_path / "log"))
    try:
        first = sup.pid("a")
        assert first
        delays = []
        for _ in range(2):
            pid = sup.pid("a")
            assert pid
            t = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
            await sup.wait_running("a", 10)
            delays.append(time.monotonic() - t)
        (st,) = sup.status()
        assert (st.name, st.state, st.restarts, st.healthy) == ("a", "running", 2, True)
        assert st.pid == sup.pid("a") and st.pid != first
        # Exponential: the second restart waited about twice the first backoff.
        assert delays[0] >= 0.3 and delays[1] >= 0.6
        print(f"restart delays: {delays[0]:.2f}s, {delays[1]:.2f}s")
    finally:
        await sup.stop_all()
    assert sup.status()[0].state == "stopped" and sup.pid("a") is None


async def test_stop_in_reverse_dependency_order(tmp_path: Path) -> None:
    log = tmp_path / "stopped"
    sup = Supervisor()
    await sup.start(spec("db", log))
    await sup.start(spec("northd", log, after=("db",)))
    await sup.start(spec("api", log, after=("northd",)))
    pids = [sup.pid(n) for n in ("db", "northd", "api")]
    await sup.stop("northd")  # its dependant goes first
    assert log.read_text().split() == ["api", "northd"]
    assert sup.pid("db") is not None
    await sup.stop_all()
    assert log.read_text().split() == ["api", "northd", "db"]
    assert not any(alive(p) for p in pids if p)


async def test_stubborn_child_is_killed(tmp_path: Path) -> None:
    sup = Supervisor()
    await sup.start(spec("stubborn", tmp_path / "log", ignore_term=True, stop_timeout=0.5))
    pid = sup.pid("stubborn")
    assert pid
    t = time.monotonic()
    await sup.stop_all()
    assert 0.4 < time.monotonic() - t < 5
    assert not alive(pid)


async def test_output_goes_to_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="microcloudd.component")
    sup = Supervisor()
    await sup.start(spec("chatty", tmp_path / "log"))
    try:
        for _ in range(100):
            if any(r.name == "microcloudd.component.chatty" and "hello from chatty" in r.getMessage()
                   for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("child output never reached logging")
    finally:
        await sup.stop_all()


async def test_failed_start_is_clear_and_leaves_nothing(tmp_path: Path) -> None:
    sup = Supervisor()
    with pytest.raises(Unavailable, match="exited with status 3"):
        await sup.start(ProcessSpec(name="bad", argv=[sys.executable, "-c", "print('boom'); exit(3)"],
                                    ready=_never_ready))
    with pytest.raises(Unavailable, match="cannot start"):
        await sup.start(ProcessSpec(name="missing", argv=["/nonexistent/program"]))

    async def slow_ready() -> bool:
        return False

    with pytest.raises(Unavailable, match="not ready"):
        await sup.start(ProcessSpec(name="slow", argv=["sleep", "30"], ready=slow_ready, ready_timeout=0.3))
    assert sup.pid("slow") is None
    assert {s.name: s.state for s in sup.status()} == {"bad": "failed", "missing": "failed", "slow": "failed"}
    with pytest.raises(InvalidArgument, match="started first"):
        await sup.start(ProcessSpec(name="orphan", argv=["true"], after=("nothing",)))


async def _never_ready() -> bool:
    return False
