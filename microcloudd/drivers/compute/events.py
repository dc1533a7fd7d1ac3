"""libvirt lifecycle events as typed events, delivered into the subscriber's asyncio loop.

Besides libvirt's own events a subscriber may get `RESYNC` (`is_resync(ev)`: no name, no
UUID): the driver's connection to libvirtd was lost and is open again. Events of the time in
between are lost for good (libvirt does not replay them, and nothing of what it knew about
the domains survives the connection), so a consumer that keeps state from events re-reads
what it cares about (power states, definitions) when it sees one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import libvirt

from microcloudd.api.errors import Timeout
from microcloudd.drivers.compute.base import EventSubscription
from microcloudd.drivers.compute.types import RESYNC as RESYNC  # re-exported: the driver publishes it
from microcloudd.drivers.compute.types import EventKind, LifecycleEvent
from microcloudd.drivers.compute.types import is_resync as is_resync

_KINDS: dict[int, EventKind] = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: EventKind.DEFINED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: EventKind.UNDEFINED,
    libvirt.VIR_DOMAIN_EVENT_STARTED: EventKind.STARTED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: EventKind.SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: EventKind.RESUMED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: EventKind.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: EventKind.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: EventKind.PMSUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: EventKind.CRASHED,
}


def lifecycle_event(dom: libvirt.virDomain, event: int, detail: int) -> LifecycleEvent:
    """Called on the libvirt thread (name/UUID are cached in the handle: no RPC)."""
    return LifecycleEvent(name=dom.name(), uuid=dom.UUIDString(), kind=_KINDS.get(event, EventKind.UNKNOWN),
                          detail=detail)


class Subscription(EventSubscription):
    def __init__(self, hub: EventHub, loop: asyncio.AbstractEventLoop) -> None:
        self._hub = hub
        self._loop = loop
        self._queue: asyncio.Queue[LifecycleEvent] = asyncio.Queue()

    def _deliver(self, ev: LifecycleEvent) -> None:  # any thread
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, ev)
        except RuntimeError:  # the subscriber's loop is closed: drop the subscription
            self._hub.remove(self)

    async def get(self, wait: float | None = None) -> LifecycleEvent:
        try:
            return await asyncio.wait_for(self._queue.get(), wait)
        except TimeoutError:
            raise Timeout(f"no libvirt lifecycle event within {wait} s") from None

    async def __anext__(self) -> LifecycleEvent:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[LifecycleEvent]:
        return self

    def close(self) -> None:
        self._hub.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class EventHub:
    """Fans events from the libvirt thread out to subscribers (each on its own loop)."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription(self, asyncio.get_running_loop())
        with self._lock:
            self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, ev: LifecycleEvent) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._deliver(ev)

    def on_lifecycle(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int,
                     _opaque: object) -> None:
        self.publish(lifecycle_event(dom, event, detail))
