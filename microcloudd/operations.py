"""Long work as LXD operations: started by a handler, run as an asyncio task, waited on,
cancelled, and reported on the event stream (Pending 105 → Running 103 → Success 200 /
Failure 400 / Cancelled 401).

A websocket operation (LXD's class "websocket", e.g. a console) names its channels: each gets
a random secret, published as metadata `fds` {channel: secret}. A client connects a channel
with `GET /1.0/operations/{id}/websocket?secret=...`; the REST layer hands the socket over as a
`Channel` (`connect`), and the work picks it up with `OperationContext.channel`."""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from microcloudd.api.errors import Conflict, Forbidden, MicrocloudError, NotFound
from microcloudd.api.server import Operation
from microcloudd.events import EventBus, now

log = logging.getLogger(__name__)

STATUS_CODES = {"Pending": 105, "Running": 103, "Success": 200, "Failure": 400, "Cancelled": 401}
# Finished operations stay visible this long, so `operation show` and late waiters find them
# (LXD keeps them 5 s), and at most this many: a burst of launches keeps a bounded record.
KEEP_FINISHED = 300.0
KEEP_FINISHED_MAX = 1000


class Channel(Protocol):
    """One connected websocket of an operation, bytes both ways (the REST layer adapts)."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes | None:
        """The next message; None once the client has gone."""


class OperationContext:
    """What the work of an operation sees: progress reporting into the operation's metadata,
    and the websocket channels clients connect."""

    def __init__(self, manager: OperationManager, op: Operation) -> None:
        self._manager, self._op = manager, op

    async def channel(self, name: str, timeout: float | None = None) -> Channel:
        """The client's socket on channel `name`, once it connects (Conflict after `timeout`)."""
        waiter = self._manager._entry(self._op.id).channels[name]
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise Conflict(f"No client connected to channel {name!r} of operation {self._op.id} "
                           f"within {timeout:.0f}s") from None

    @property
    def id(self) -> str:
        return self._op.id

    def progress(self, **metadata: Any) -> None:
        self._op.metadata = {**(self._op.metadata or {}), **metadata}
        self._manager._changed(self._op)


Work = Callable[[OperationContext], Awaitable[dict[str, Any] | None]]


class _Entry:
    __slots__ = ("channels", "done", "op", "secrets", "task")

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.secrets: dict[str, str] = {}  # secret -> channel, each usable once
        self.channels: dict[str, asyncio.Future[Channel]] = {}


class OperationManager:
    """Running operations keep their task, channels and done event (`_Entry`); a finished one
    keeps only its `Operation` (~0.8 KB against ~2.1 KB: 500 launches held ~1 MB for five
    minutes), dropped by one sweep timer in finishing order."""

    def __init__(self, events: EventBus, location: str = "none", *,
                 keep_finished: float = KEEP_FINISHED, keep_max: int = KEEP_FINISHED_MAX) -> None:
        self.events, self.location = events, location
        self.keep_finished, self.keep_max = keep_finished, keep_max
        self._ops: dict[str, _Entry] = {}  # running (and pending)
        self._finished: dict[str, Operation] = {}  # in finishing order
        self._deadlines: collections.deque[float] = collections.deque()  # of _finished, same order
        self._sweep: asyncio.TimerHandle | None = None

    def start(self, description: str, work: Work, *, resources: dict[str, list[str]] | None = None,
              may_cancel: bool = True, class_: str = "task", channels: Iterable[str] = ()) -> Operation:
        """Create the operation and schedule `work`; returns at once (the 202 body).
        `channels`: a websocket operation's channel names (e.g. "0", "control")."""
        stamp = now()
        op = Operation(id=str(uuid.uuid4()), class_=class_, description=description, created_at=stamp,
                       updated_at=stamp, status="Pending", status_code=105, resources=resources or {},
                       may_cancel=may_cancel, location=self.location)
        entry = _Entry(op)
        loop = asyncio.get_running_loop()
        for name in channels:
            entry.secrets[secrets.token_hex(32)] = name
            entry.channels[name] = loop.create_future()
        if entry.secrets:
            op.class_ = "websocket"
            op.metadata = {"fds": {name: secret for secret, name in entry.secrets.items()}}
        self._ops[op.id] = entry
        self._changed(op, touch=False)
        entry.task = asyncio.get_running_loop().create_task(self._run(entry, work), name=f"op-{op.id}")
        return op

    async def _run(self, entry: _Entry, work: Work) -> None:
        op = entry.op
        self._set(op, "Running")
        try:
            result = await work(OperationContext(self, op))
            if result:
                op.metadata = {**(op.metadata or {}), **result}
            self._set(op, "Success")
        except asyncio.CancelledError:
            op.err = "Operation cancelled"
            self._set(op, "Cancelled")
        except MicrocloudError as e:
            op.err = e.message
            self._set(op, "Failure")
        except Exception:
            log.exception("operation %s (%s) failed", op.id, op.description)
            op.err = f"Internal error in operation {op.id}: see the microcloudd log"
            self._set(op, "Failure")
        finally:
            entry.secrets.clear()
            for waiter in entry.channels.values():
                waiter.cancel()  # never connected: nobody waits any more
            entry.done.set()
            self._finish(op)

    def _finish(self, op: Operation) -> None:
        """Keep only the finished `op`, until its time is up or newer ones push it out."""
        del self._ops[op.id]
        self._finished[op.id] = op
        self._deadlines.append(time.monotonic() + self.keep_finished)
        while len(self._finished) > self.keep_max:
            self._drop_oldest()
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.keep_finished, self._expire)

    def _drop_oldest(self) -> None:
        del self._finished[next(iter(self._finished))]
        self._deadlines.popleft()

    def _expire(self) -> None:
        """Drop what has expired, then sleep until the next deadline: an idle daemon does not
        keep a burst's operations until the next request."""
        self._sweep = None
        t = time.monotonic()
        while self._deadlines and self._deadlines[0] <= t:
            self._drop_oldest()
        if self._deadlines:
            self._sweep = asyncio.get_running_loop().call_later(self._deadlines[0] - t, self._expire)

    def _set(self, op: Operation, status: str) -> None:
        op.status, op.status_code = status, STATUS_CODES[status]
        self._changed(op)

    def _changed(self, op: Operation, touch: bool = True) -> None:
        if touch:
            op.updated_at = now()
        self.events.publish("operation", _to_dict(op))

    def _entry(self, op_id: str) -> _Entry:
        """A running operation's entry (NotFound for a finished or unknown one)."""
        entry = self._ops.get(op_id)
        if entry is None:
            raise NotFound(f"Operation {op_id!r} not found")
        return entry

    def _find(self, op_id: str) -> Operation | None:
        entry = self._ops.get(op_id)
        return entry.op if entry is not None else self._finished.get(op_id)

    def check_secret(self, op_id: str, secret: str) -> str:
        """The channel `secret` opens on a running operation (before a websocket handshake)."""
        entry = self._ops.get(op_id)
        if entry is None and op_id not in self._finished:
            raise NotFound(f"Operation {op_id!r} not found")
        name = entry.secrets.get(secret) if entry is not None else None
        if name is None:
            raise Forbidden(f"Operation {op_id!r}: no channel with this secret (or it was used, or the "
                            "operation has finished)")
        return name

    async def connect(self, op_id: str, secret: str, channel: Channel) -> None:
        """Hand `channel` to the operation's work; returns when the operation has finished (the
        caller keeps its socket open until then)."""
        name = self.check_secret(op_id, secret)
        entry = self._entry(op_id)
        del entry.secrets[secret]
        entry.channels[name].set_result(channel)
        await entry.done.wait()

    def get(self, op_id: str) -> Operation:
        op = self._find(op_id)
        if op is None:
            raise NotFound(f"Operation {op_id!r} not found")
        return op

    def list(self) -> list[Operation]:
        return [*self._finished.values(), *(e.op for e in self._ops.values())]

    async def wait(self, op_id: str, timeout: float | None = None) -> Operation:
        """Wait until the operation is final or `timeout` passes; return it either way (as LXD)."""
        done = self._finished.get(op_id)
        if done is not None:
            return done
        entry = self._entry(op_id)
        try:
            await asyncio.wait_for(asyncio.shield(entry.done.wait()), timeout)
        except TimeoutError:
            pass
        return entry.op

    async def cancel(self, op_id: str) -> Operation:
        done = self._finished.get(op_id)
        if done is not None:
            raise Conflict(f"Operation {op_id!r} has already finished ({done.status})")
        entry = self._entry(op_id)
        if not entry.op.may_cancel:
            raise Conflict(f"Operation {op_id!r} cannot be cancelled")
        assert entry.task is not None
        entry.task.cancel()
        await entry.done.wait()
        return entry.op

    async def shutdown(self, timeout: float = 3.0) -> None:
        """Cancel everything still running (daemon stop) and wait for it to unwind."""
        running = [e for e in self._ops.values() if e.task and not e.task.done()]
        for e in running:
            assert e.task is not None
            e.task.cancel()
        if running:
            await asyncio.wait([e.task for e in running if e.task], timeout=timeout)


def _to_dict(op: Operation) -> dict[str, Any]:
    import msgspec

    result: dict[str, Any] = msgspec.to_builtins(op)
    return result
