"""The asyncio side of the local replica: typed records by key, and change subscriptions.

Only the event loop touches this; the session (db/session.py) applies batches in order as
they arrive, and a write returns only once its own rows are here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from microcloudd.db.records import ALL_RECORDS, Record
from microcloudd.db.replica import Batch, RowChange

R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class Change(Generic[R]):
    """One row change: `op` insert (old None), update, or delete (new None)."""

    op: Literal["insert", "update", "delete"]
    old: R | None
    new: R | None

    @property
    def record(self) -> R:
        """The row as it is now, or as it was before its deletion."""
        rec = self.new if self.new is not None else self.old
        assert rec is not None
        return rec


def _change(rc: RowChange) -> Change[Any]:
    op: Literal["insert", "update", "delete"] = (
        "insert" if rc.old is None else "delete" if rc.new is None else "update")
    return Change(op, rc.old, rc.new)


class Subscription(Generic[R]):
    """Async iterator of the changes of one table, from subscription time on."""

    def __init__(self, cache: ReplicaCache, table: str) -> None:
        self._cache, self.table = cache, table
        self._queue: asyncio.Queue[Change[R] | None] = asyncio.Queue()

    def _put(self, change: Change[R]) -> None:
        self._queue.put_nowait(change)

    def close(self) -> None:
        self._cache._subs.get(self.table, set()).discard(self)
        self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Change[R]]:
        return self

    async def __anext__(self) -> Change[R]:
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def get(self, within: float | None = None) -> Change[R]:
        """The next change; raises TimeoutError after `within` seconds."""
        return await asyncio.wait_for(self.__anext__(), within)

    async def __aenter__(self) -> Subscription[R]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ReplicaCache:
    def __init__(self) -> None:
        self.rows: dict[str, dict[Any, Record]] = {r.__table__: {} for r in ALL_RECORDS}
        self._subs: dict[str, set[Subscription[Any]]] = {}

    def subscribe(self, table: str) -> Subscription[Any]:
        sub: Subscription[Any] = Subscription(self, table)
        self._subs.setdefault(table, set()).add(sub)
        return sub

    def close(self) -> None:
        for subs in list(self._subs.values()):
            for s in list(subs):
                s.close()

    def apply(self, batch: Batch) -> None:
        changes = batch.changes
        if batch.reset is not None:
            changes = self._diff(batch.reset)
        for rc in changes:
            rows = self.rows[rc.table]
            if rc.old is not None and (rc.new is None or rc.old.row_key() != rc.new.row_key()):
                rows.pop(rc.old.row_key(), None)
            if rc.new is not None:
                rows[rc.new.row_key()] = rc.new
            subs = self._subs.get(rc.table)
            if subs:
                ch = _change(rc)
                for s in subs:
                    s._put(ch)

    def _diff(self, snapshot: dict[str, list[Record]]) -> list[RowChange]:
        """Changes that turn the current rows into `snapshot` (after a reconnect)."""
        out: list[RowChange] = []
        for table, records in snapshot.items():
            current = self.rows[table]
            fresh = {r.row_key(): r for r in records}
            if not current:
                self.rows[table] = fresh
                if self._subs.get(table):
                    out += [RowChange(table, None, r) for r in records]
                continue
            for key, old in list(current.items()):
                new = fresh.get(key)
                if new is None:
                    out.append(RowChange(table, old, None))
                elif new != old:
                    out.append(RowChange(table, old, new))
            out += [RowChange(table, None, r) for k, r in fresh.items() if k not in current]
        return out
