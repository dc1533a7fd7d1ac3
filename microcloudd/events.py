"""The event bus behind `/1.0/events`: operation, lifecycle and logging events.

Publishing never blocks: each subscriber has a bounded queue, and a subscriber that falls
that far behind is dropped (its websocket closed) rather than slowing the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from microcloudd.api.server import Event

EVENT_TYPES = ("operation", "lifecycle", "logging")
_QUEUE_SIZE = 1024
log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Subscription:
    def __init__(self, bus: EventBus, types: frozenset[str]) -> None:
        self.bus, self.types = bus, types
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(_QUEUE_SIZE)
        self.dropped = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        self.bus._subs.discard(self)
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass


class EventBus:
    def __init__(self, location: str = "none") -> None:
        self.location = location
        self._subs: set[Subscription] = set()

    def subscribe(self, types: Iterable[str] = EVENT_TYPES) -> Subscription:
        sub = Subscription(self, frozenset(types))
        self._subs.add(sub)
        return sub

    def publish(self, type_: str, metadata: dict[str, Any]) -> None:
        if not self._subs:
            return
        event = Event(type=type_, timestamp=now(), metadata=metadata, location=self.location)
        for sub in list(self._subs):
            if type_ not in sub.types:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped = True
                self._subs.discard(sub)

    def lifecycle(self, action: str, source: str, **context: Any) -> None:
        """An LXD lifecycle event, e.g. ("instance-created", "/1.0/instances/web1")."""
        self.publish("lifecycle", {"action": action, "source": source, "context": context})

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()


class EventLogHandler(logging.Handler):
    """Forwards log records as `logging` events (only when somebody listens)."""

    def __init__(self, bus: EventBus, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.INFO)
        self.bus, self.loop = bus, loop

    def emit(self, record: logging.LogRecord) -> None:
        if not self.bus._subs:
            return
        meta = {"message": record.getMessage(), "level": record.levelname.lower(),
                "context": {"logger": record.name}}
        try:
            if asyncio.get_running_loop() is self.loop:
                self.bus.publish("logging", meta)
                return
        except RuntimeError:
            pass
        self.loop.call_soon_threadsafe(self.bus.publish, "logging", meta)
