"""Typed access to the Microcloud database from asyncio.

    db = await Database.connect(["unix:/var/lib/microcloud/database/db.sock"])
    db.get(Instance, "vm1")                      # reads: local replica, no thread hop
    await db.insert(Instance(name="vm1", ...))   # writes: one transaction over the session
    async with db.transaction() as txn:          # several changes, all or nothing
        txn.insert(Image(...)); txn.insert(ImageAlias(name="deb", image=fp))
    async for change in db.subscribe(Instance): ...

Writes are idempotent: each carries a write id, so a retry after an ambiguous commit (the
leader died after committing but before answering) neither duplicates nor fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from microcloudd.api.errors import AlreadyExists, Internal, InUse, MicrocloudError, NotFound, Unavailable
from microcloudd.db.cache import ReplicaCache, Subscription
from microcloudd.db.commands import Command, Delete, Insert, TxnContext, Update, describe, new_write_id
from microcloudd.db.jsonrpc import ConnectionLost, RpcError
from microcloudd.db.records import Record
from microcloudd.db.replica import Replica
from microcloudd.db.session import Session, ssl_context

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)

# How often a write is re-run after the server refused it for a reason the replica may
# not have caught up with yet (a key taken by our own earlier, ambiguous attempt).
_CONSTRAINT_RETRIES = 3


class Transaction:
    """Changes collected in an `async with db.transaction()` block, committed together at its
    end (nothing is committed if the block raises)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.commands: list[Command] = []
        self._write_id = new_write_id()

    def insert(self, record: R, may_exist: bool = False) -> None:
        self.commands.append(Insert(self._write_id, record, may_exist))

    def update(self, cls: type[R], key: Any, /, *, expect: dict[str, Any] | None = None,
               **changes: Any) -> None:
        self.commands.append(Update(self._write_id, cls, key, changes, expect))

    def delete(self, cls: type[R], key: Any, /, *, if_exists: bool = False) -> None:
        self.commands.append(Delete(self._write_id, cls, key, if_exists))

    async def commit(self) -> list[Any]:
        return await self._db._commit(self)

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if et is None and self.commands:
            await self.commit()


def _server_error(msg: str) -> MicrocloudError:
    if "constraint violation" in msg:
        return AlreadyExists(f"the database refused a duplicate: {msg}")
    if "referential integrity violation" in msg:
        return InUse(f"the database refused to remove a row still referenced: {msg}")
    return Internal(f"database error: {msg}")


def _outcome(result: list[Any], ctx: TxnContext) -> str | None:
    """None if the transaction committed; "again" if the replica was out of date (a `wait`
    failed, or a row to change was gone); the server's error otherwise."""
    errors = [r for r in result if isinstance(r, dict) and r.get("error")]
    if not errors and len(result) >= len(ctx.ops):
        if all(result[i].get("count") == 1 for i in ctx.checks):
            return None
        return "again"
    for r in errors:
        if r["error"] not in ("timed out", "aborted"):
            return f"{r['error']}: {r.get('details', '')}".rstrip(": ")
    return "again"


class Database:
    def __init__(self, session: Session, cache: ReplicaCache, remotes: list[str], timeout: float) -> None:
        self.session, self.cache = session, cache
        self.replica = session.replica
        self.remotes, self.timeout = remotes, timeout

    @classmethod
    async def connect(
        cls,
        remotes: str | Sequence[str],
        *,
        write_timeout: float = 10.0,
        ssl: tuple[Path, Path, Path] | None = None,
        leader_only: bool = True,
        probe_interval_ms: int = 5000,
    ) -> Database:
        """Connect to the database served at `remotes` ("unix:/path", "tcp:ip:port", "ssl:...",
        any member of the cluster) and wait for the first full copy of it.
        `ssl` = (private key, certificate, CA certificate)."""
        remote_list = [remotes] if isinstance(remotes, str) else list(remotes)
        remote_list = [r.strip() for part in remote_list for r in part.split(",") if r.strip()]
        if not remote_list:
            raise Unavailable("no address of the cluster database given")
        cache = ReplicaCache()
        ctx = ssl_context(*(str(p) for p in ssl)) if ssl else None
        session = Session(remote_list, Replica(), cache.apply, leader_only=leader_only,
                          ssl_context=ctx, probe_interval=probe_interval_ms / 1000)
        session.start()
        db = cls(session, cache, remote_list, write_timeout)
        try:
            await session.wait_ready(write_timeout)
        except TimeoutError as e:
            await db.close()
            raise Unavailable(f"cannot reach the cluster database at {', '.join(remote_list)} "
                              f"within {write_timeout:.0f}s ({session.last_error})") from e
        return db

    async def close(self) -> None:
        await self.session.close()
        self.cache.close()

    # ---- reads: the local replica, on the loop ----
    def get(self, cls: type[R], key: Any) -> R:
        rec = self.cache.rows[cls.__table__].get(key)
        if rec is None:
            raise NotFound(f"{describe(cls, key)} not found")
        return rec  # type: ignore[return-value]

    def get_or_none(self, cls: type[R], key: Any) -> R | None:
        return self.cache.rows[cls.__table__].get(key)  # type: ignore[return-value]

    def all(self, cls: type[R]) -> list[R]:
        return list(self.cache.rows[cls.__table__].values())  # type: ignore[arg-type]

    def find(self, cls: type[R], where: Callable[[R], bool] | None = None, **equals: Any) -> list[R]:
        """Records whose fields equal `equals` and for which `where(record)` holds."""
        out: list[R] = []
        rows: dict[Any, R] = self.cache.rows[cls.__table__]  # type: ignore[assignment]
        for rec in rows.values():
            if all(getattr(rec, f) == v for f, v in equals.items()) and (where is None or where(rec)):
                out.append(rec)
        return out

    def subscribe(self, cls: type[R]) -> Subscription[R]:
        """Changes of `cls`'s table from now on, as an async iterator of `Change`s."""
        return self.cache.subscribe(cls.__table__)

    # ---- writes: OVSDB transactions built from the replica, on the loop ----
    def transaction(self) -> Transaction:
        return Transaction(self)

    async def insert(self, record: R, may_exist: bool = False) -> R:
        """Insert `record`; AlreadyExists if its key (or another unique field) is taken, unless
        `may_exist`. Returns the stored record."""
        txn = self.transaction()
        txn.insert(record, may_exist)
        await txn.commit()
        return self.get(type(record), record.row_key())

    async def update(self, cls: type[R], key: Any, /, *, expect: dict[str, Any] | None = None,
                     **changes: Any) -> R:
        """Change fields of one row; with `expect`, only if those fields still hold those
        values (Conflict otherwise). Returns the stored record."""
        txn = self.transaction()
        txn.update(cls, key, expect=expect, **changes)
        result = await txn.commit()
        new = result[0]
        return self.get(cls, new.row_key() if new is not None else key)

    async def delete(self, cls: type[R], key: Any, /, *, if_exists: bool = False) -> None:
        txn = self.transaction()
        txn.delete(cls, key, if_exists=if_exists)
        await txn.commit()

    async def _commit(self, t: Transaction) -> list[Any]:
        deadline = time.monotonic() + self.timeout
        refused = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await self.session.wait_ready(remaining)
                ctx = TxnContext(self.replica)
                for c in t.commands:
                    c.run(ctx)
                if not ctx.ops:  # everything landed already
                    return [c.result for c in t.commands]
                version = self.replica.version
                async with asyncio.timeout(remaining):
                    result = await self.session.transact(ctx.ops)
            except TimeoutError as e:
                raise Unavailable("the cluster database did not confirm the write "
                                  f"within {self.timeout:.0f}s ({self.session.last_error})") from e
            except (ConnectionLost, RpcError) as e:
                # The write may have landed: the next attempt, on the resynced replica, finds
                # its write id (deletes then find nothing, which is fine).
                log.info("retrying a database write after: %s", e)
                for c in t.commands:
                    if isinstance(c, Delete):
                        c.retrying = True
                await asyncio.sleep(0.05)
                continue
            error = _outcome(result, ctx)
            if error is None:
                await self._seen(ctx, result, version)
                return [c.result for c in t.commands]
            if error != "again":
                err = _server_error(error)
                refused += 1
                if not isinstance(err, (AlreadyExists, InUse)) or refused > _CONSTRAINT_RETRIES:
                    raise err
                log.info("retrying a database write after: %s", error)
            # The replica was behind the server: wait for it to move, then build again.
            if self.replica.version == version:
                await self.session.wait_change(min(0.1, max(0.0, deadline - time.monotonic())))

    async def _seen(self, ctx: TxnContext, result: list[Any], version: int) -> None:
        """ovsdb-server sends a transaction's row updates before its reply; make sure of it, so
        a write awaited on the loop is visible in the cache when it returns."""
        inserted = [(op["table"], result[i]["uuid"][1]) for i, op in enumerate(ctx.ops)
                    if op["op"] == "insert"]
        for _ in range(100):
            if self.replica.version > version and all(
                    u in self.replica.by_uuid[table] for table, u in inserted):
                return
            await self.session.wait_change(0.01)
