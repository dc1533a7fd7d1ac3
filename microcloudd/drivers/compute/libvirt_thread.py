"""The one thread that talks to libvirt, bridged into asyncio.

libvirt-python is not safe to drive from several threads together with an event loop
implementation (libvirtaio + worker threads loses events and trips RuntimeErrors), so every
libvirt call of this process runs on a single dedicated thread. That thread runs libvirt's
default event implementation (`virEventRunDefaultImpl`); calls are queued and the thread is
woken through a pipe registered as a libvirt event handle, so event callbacks and calls
share the thread. Results come back as futures, events via `call_soon_threadsafe`.

One exception: a LibvirtDriver that lost its connection reopens it from a short-lived
"libvirt-reconnect" thread, because virConnectOpen on a libvirtd that accepts but does not
answer (starting up, or stuck) blocks without a timeout. That thread only opens connections
(libvirt's default event implementation, which the new socket registers with, is thread-safe;
libvirtaio is not used here); the callbacks are registered on this thread.
A second exception: calls that may block for minutes inside libvirtd (a guest start waits for
QEMU, which waits for its RBD disks' Ceph monitors) run through `call_long` on a small pool of
"libvirt-long" threads, each over a short-lived connection of its own (no callbacks on it; its
keepalive timer runs in this thread's event loop), so they do not hold up every other call of
the process. (Sharing a connection between this thread and another delayed this thread's calls
by up to a keepalive interval: measured.) The driver bounds how long such a job may take to
open its connection (LibvirtDriver._run_long), not how long it then waits for libvirtd.
`call_later` runs a job from a timer of the event loop: after the libvirt call or callback in
progress (the close callback may run inside a failing call), never inside it.

The event implementation is process-global and can be registered only once, so the thread
is a process-wide singleton (`LibvirtThread.get()`) shared by every driver instance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import libvirt

T = TypeVar("T")
log = logging.getLogger(__name__)
_LONG_WORKERS = 4  # guest starts in flight at once (more wait their turn, not the other calls)

# libvirt's default error handler prints every error to stderr; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class LibvirtThread:
    _instance: ClassVar[LibvirtThread | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get(cls) -> LibvirtThread:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            queue.SimpleQueue())
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        libvirt.virEventRegisterDefaultImpl()
        libvirt.virEventAddHandle(self._wake_r, libvirt.VIR_EVENT_HANDLE_READABLE, self._on_wake, None)
        self._long = concurrent.futures.ThreadPoolExecutor(_LONG_WORKERS, thread_name_prefix="libvirt-long")
        self._thread = threading.Thread(target=self._run, name="libvirt", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    def _on_wake(self, _watch: int, fd: int, _events: int, _opaque: object) -> None:
        try:
            os.read(fd, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                fn, fut = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # delivered to the awaiting coroutine
                fut.set_exception(e)

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self.in_thread():  # already on the libvirt thread (from a callback): run inline
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)
            return fut
        self._jobs.put((fn, fut))
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already: the thread will drain the queue
        return fut

    def call_later(self, delay: float, fn: Callable[[], None]) -> int:
        """Run `fn()` once on the libvirt thread after `delay` s, from the event loop itself (so
        never inside a libvirt call or callback in progress); returns a timer id for `cancel`.
        Callable from any thread (the default event implementation locks and wakes itself)."""

        def fire(timer: int, _opaque: object) -> None:
            libvirt.virEventRemoveTimeout(timer)  # one-shot
            try:
                fn()
            except Exception:  # a timer has nobody to raise to
                log.exception("libvirt thread: timed job failed")

        return int(libvirt.virEventAddTimeout(max(0, round(delay * 1000)), fire, None))

    def cancel(self, timer: int) -> None:
        """Cancel a `call_later` that has not fired yet (a fired one is gone already)."""
        try:
            libvirt.virEventRemoveTimeout(timer)
        except libvirt.libvirtError:
            pass

    def call_long(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn()` on a "libvirt-long" thread (see the module docstring)."""
        return self._long.submit(fn)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the libvirt thread without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(lambda: fn(*args)))
