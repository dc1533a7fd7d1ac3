"""glibc heap trimming: after churn, the free pages inside the heap go back to the kernel."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from microcloudd import malloc


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
