"""Long work as LXD operations: started by a handler, run as an asyncio task, waited on,
cancelled, and reported on the event stream (Pending 105 → Running 103 → Success 200 /
Failure 400 / Cancelled 401)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from microcloudd.api.errors import Conflict, MicrocloudError, NotFound
from microcloudd.api.server import Operation
from microcloudd.events import EventBus, now

log = logging.getLogger(__name__)

STATUS_CODES = {"Pending": 105, "Running": 103, "Success": 200, "Failure": 400, "Cancelled": 401}
FINAL = ("Success", "Failure", "Cancelled")
# Finished operations stay visible this long, so `operation show` and late waiters find them.
KEEP_FINISHED = 300.0


class OperationContext:
    """What the work of an operation sees: progress reporting into the operation's metadata."""

    def __init__(self, manager: OperationManager, op: Operation) -> None:
        self._manager, self._op = manager, op

    @property
    def id(self) -> str:
        return self._op.id

    def progress(self, **metadata: Any) -> None:
        self._op.metadata = {**(self._op.metadata or {}), **metadata}
        self._manager._changed(self._op)


Work = Callable[[OperationContext], Awaitable[dict[str, Any] | None]]


class _Entry:
    __slots__ = ("done", "finished_at", "op", "task")

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.finished_at = 0.0


class OperationManager:
    def __init__(self, events: EventBus, location: str = "none") -> None:
        self.events, self.location = events, location
        self._ops: dict[str, _Entry] = {}

    def start(self, description: str, work: Work, *, resources: dict[str, list[str]] | None = None,
              may_cancel: bool = True, class_: str = "task") -> Operation:
        """Create the operation and schedule `work`; returns at once (the 202 body)."""
        self._expire()
        stamp = now()
        op = Operation(id=str(uuid.uuid4()), class_=class_, description=description, created_at=stamp,
                       updated_at=stamp, status="Pending", status_code=105, resources=resources or {},
                       may_cancel=may_cancel, location=self.location)
        entry = _Entry(op)
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
            entry.finished_at = time.monotonic()
            entry.done.set()

    def _set(self, op: Operation, status: str) -> None:
        op.status, op.status_code = status, STATUS_CODES[status]
        self._changed(op)

    def _changed(self, op: Operation, touch: bool = True) -> None:
        if touch:
            op.updated_at = now()
        self.events.publish("operation", _to_dict(op))

    def _entry(self, op_id: str) -> _Entry:
        entry = self._ops.get(op_id)
        if entry is None:
            raise NotFound(f"Operation {op_id!r} not found")
        return entry

    def get(self, op_id: str) -> Operation:
        return self._entry(op_id).op

    def list(self) -> list[Operation]:
        self._expire()
        return [e.op for e in self._ops.values()]

    async def wait(self, op_id: str, timeout: float | None = None) -> Operation:
        """Wait until the operation is final or `timeout` passes; return it either way (as LXD)."""
        entry = self._entry(op_id)
        try:
            await asyncio.wait_for(asyncio.shield(entry.done.wait()), timeout)
        except TimeoutError:
            pass
        return entry.op

    async def cancel(self, op_id: str) -> Operation:
        entry = self._entry(op_id)
        if entry.op.status in FINAL:
            raise Conflict(f"Operation {op_id!r} has already finished ({entry.op.status})")
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

    def _expire(self) -> None:
        cutoff = time.monotonic() - KEEP_FINISHED
        for op_id in [k for k, e in self._ops.items() if e.done.is_set() and e.finished_at < cutoff]:
            del self._ops[op_id]


def _to_dict(op: Operation) -> dict[str, Any]:
    import msgspec

    result: dict[str, Any] = msgspec.to_builtins(op)
    return result
