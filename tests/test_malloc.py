"""glibc heap trimming: after churn, the free pages inside the heap go back to the kernel."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from microcloudd import malloc
from tests.fixtures.daemon import start_daemon
from tests.support import proc


def anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon")


async def test_churn_is_trimmed_and_quiet_heaps_are_left_alone() -> None:
    assert malloc._libc() is not None, "glibc >= 2.33 (Debian 12 has 2.36) has mallinfo2 and malloc_trim"
    trims = 0
    real_trim = malloc.trim

    def counting_trim(lib: object) -> bool:
        nonlocal trims
        trims += 1
        return real_trim(lib)  # type: ignore[arg-type]

    malloc.trim = counting_trim  # type: ignore[assignment]
    task = asyncio.create_task(malloc.keep_trimmed(interval=0.05, threshold=1 << 20))
    try:
        await asyncio.sleep(0.3)
        quiet = trims
        # 64 MB in 32 kB chunks, every other one freed: holes in the heap, not at its top
        chunks = [bytearray(32 << 10) for _ in range(2_000)]
        del chunks[::2]
        before = anon_kib()
        await asyncio.sleep(0.3)
        assert trims > quiet
        assert before - anon_kib() > 10_000  # kB back to the kernel
        settled = trims
        await asyncio.sleep(0.3)
        assert trims == settled  # no new churn: no new trim
        # The trimmed holes used again and freed again: the heaps' free total is back where it
        # was, but the pages are resident again, and must go back again.
        again = [bytearray(32 << 10) for _ in range(1_000)]
        await asyncio.sleep(0.2)
        dirty = anon_kib()
        del again
        await asyncio.sleep(0.3)
        assert trims > settled
        assert dirty - anon_kib() > 10_000
        del chunks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        malloc.trim = real_trim


def _environ(pid: int) -> dict[str, str]:
    """A process's environment as it was exec'ed."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw if b"=" in e)


def _descendants_environs(pid: int) -> list[dict[str, str]]:
    """The environments of the processes below `pid` (those that did not exit while we looked)."""
    out = []
    for child in proc.descendants(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            out.append(_environ(child))
    return out


def test_the_daemon_runs_without_thread_caches_and_its_children_with_glibcs_defaults(
        daemon_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    d = start_daemon(daemon_dir, env=env)
    try:
        assert _environ(d.proc.pid).get("GLIBC_TUNABLES") == malloc.TUNABLES  # re-executed: same PID
        deadline = time.monotonic() + 20
        while not (kids := _descendants_environs(d.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kids, "the database runs as a child of microcloudd"
        for kid in kids:
            assert "GLIBC_TUNABLES" not in kid and "MICROCLOUDD_MALLOC_TUNED" not in kid
    finally:
        d.stop()


def test_an_operators_glibc_tunables_are_kept(daemon_dir: Path) -> None:
    mine = "glibc.malloc.arena_max=1"
    d = start_daemon(daemon_dir, env={**os.environ, "GLIBC_TUNABLES": mine})
    try:
        assert _environ(d.proc.pid).get("GLIBC_TUNABLES") == mine
        assert "MICROCLOUDD_MALLOC_TUNED" not in _environ(d.proc.pid)
    finally:
        d.stop()
