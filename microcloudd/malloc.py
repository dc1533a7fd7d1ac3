"""glibc malloc tuning for a long-running, many-threaded daemon.

Per-thread caches off (`exec_tuned`): glibc gives every thread a cache of freed chunks (up to
7 of each size up to 1 KiB) that neither coalesces with its neighbours nor goes back with a
trim. librados, librbd and the executors run ~25 threads, and the pages their cached chunks pin
stay resident: measured, the RBD driver alone doing 1,000 clones + seed imports 8 at a time,
69.8 -> 65.8 MB RSS after a trim, and microcloudd at 500 instances (bench.instances_daemon)
98.5 -> 94.3 MB. Launch and clone timings did not move beyond their noise (bench.instances,
bench.storage): Python's small objects never reach glibc (pymalloc), and librbd's allocations
are not what a launch waits on. glibc reads tunables only when a program starts, hence a re-exec.

librados, libvirt, ovsdbapp and asyncio's executor each bring threads, and glibc gives a thread
that allocates its own arena (up to 8 per core); memory freed in an arena stays resident. Two
arenas are plenty for a daemon that does its work on one event loop: measured on an initialised
member, RSS drops by ~5 MB with no change in the API latency benchmark.

Bulk work (an image import, hundreds of launches) leaves free memory inside glibc's heaps that
it only gives back from their top. `keep_trimmed` looks every `interval` seconds at how much the
heaps hold in use and free (mallinfo2, a walk of the free lists) and after any real change returns
the free pages to the kernel (malloc_trim(0), off the event loop): measured on a member after 500
launches, ~4 MB with the first rule (trim when free space grew past a threshold), and a manual
trim then still gave back 2 MB that this rule takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import time

log = logging.getLogger(__name__)

TUNABLES = "glibc.malloc.tcache_count=0"
_TUNED = "MICROCLOUDD_MALLOC_TUNED"  # set across our own re-exec only
M_ARENA_MAX = -8  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 << 10


def _c_library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


def exec_tuned() -> None:
    """Re-execute this program once with `TUNABLES` (the same PID: systemd and pidfiles see
    nothing); call it first thing, before any thread or file. In the re-executed program,
    drop the variables again so that microcloudd's children (Ceph, OVN, libvirtd) start with
    glibc's defaults. GLIBC_TUNABLES already set by an operator wins: nothing is changed.
    No-op off glibc."""
    if os.environ.pop(_TUNED, None) is not None:
        os.environ.pop("GLIBC_TUNABLES", None)
        return
    if "GLIBC_TUNABLES" in os.environ or not _glibc() or not sys.executable:
        return
    with contextlib.suppress(OSError):  # cannot exec: run with glibc's defaults
        os.execve(sys.executable, sys.orig_argv, {**os.environ, "GLIBC_TUNABLES": TUNABLES, _TUNED: "1"})


def tune(arenas: int = 2) -> bool:
    """Cap glibc's arenas and fix its mmap threshold (before threads start); False where libc
    is not glibc. MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ in the environment, when set, win:
    an operator's choice is kept."""
    libc = _c_library()
    if libc is None:
        return False
    try:
        # A fixed mmap threshold: buffers over 128 KiB (image and backup streaming uses 4 MiB)
        # come from mmap and go back to the kernel when freed. glibc's default threshold grows
        # with the first such free, after which they stay in the heap: measured on a member
        # at 500 instances, 137 -> 119 MB RSS (bench.instances_daemon).
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(M_ARENA_MAX, arenas)
        return True
    except (OSError, AttributeError):
        log.debug("mallopt is not available; keeping glibc's defaults")
        return False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


def _libc() -> ctypes.CDLL | None:
    """The C library with glibc's heap statistics and trimming typed, or None."""
    libc = _c_library()
    if libc is None:
        return None
    try:
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None


def heap_state(libc: ctypes.CDLL) -> tuple[int, int]:
    """(bytes in use, bytes free) in glibc's heaps."""
    info = libc.mallinfo2()
    return int(info.uordblks), int(info.fordblks + info.fsmblks)


def trim(libc: ctypes.CDLL) -> bool:
    """Return the heaps' free pages to the kernel; True if any were."""
    return bool(libc.malloc_trim(0))


async def keep_trimmed(interval: float = 10.0, threshold: int = 256 << 10) -> None:
    """Until cancelled: after every `interval` in which the heaps changed by more than `threshold`
    bytes (in use or free), trim. Free space alone does not tell: chunks trimmed earlier stay on
    the free lists and a burst that reuses and frees them again leaves the total as it was, with
    their pages resident again (measured after 500 launches: 2 MB a 4 MiB free-growth rule kept).
    A quiet heap is left alone; a busy one costs a trim (a few ms, off the loop) per interval."""
    libc = _libc()
    if libc is None:
        log.debug("mallinfo2/malloc_trim not available: heaps are not trimmed")
        return
    last = heap_state(libc)
    while True:
        await asyncio.sleep(interval)
        used, free = heap_state(libc)
        if abs(used - last[0]) + abs(free - last[1]) > threshold:
            t0 = time.monotonic()
            await asyncio.to_thread(trim, libc)
            log.debug("returned free heap pages to the kernel in %.1f ms (%d KiB free in the heaps)",
                      (time.monotonic() - t0) * 1000, free >> 10)
        last = heap_state(libc)
