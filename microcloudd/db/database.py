"""Typed access to the Microcloud database from asyncio.

    db = await Database.connect(["unix:/var/lib/microcloud/database/db.sock"])
    db.get(Instance, "vm1")                      # reads: local replica, no thread hop
    await db.insert(Instance(name="vm1", ...))   # writes: to the leader, off the loop
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

import ovs.stream
from ovs.db import idl as ovs_idl
from ovsdbapp import exceptions as ovsdbapp_exc
from ovsdbapp.backend.ovs_idl import connection, transaction

from microcloudd.api.errors import AlreadyExists, Internal, InUse, MicrocloudError, NotFound, Unavailable
from microcloudd.db.cache import ReplicaCache, Subscription
from microcloudd.db.commands import Command, Delete, Insert, TxnContext, Update, describe, new_write_id
from microcloudd.db.records import Record
from microcloudd.db.replica import Batch, ReplicaIdl
from microcloudd.db.schema import SCHEMA_PATH

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)

# python-ovs doubles its reconnect backoff up to 8 s; after a leader change that stalls
# clients for seconds. It refuses values under 1 s.
MAX_BACKOFF_MS = 1000
# How often a write is re-run after the server refused it for a reason the replica may
# not have caught up with yet (a key taken by our own earlier, ambiguous attempt).
_CONSTRAINT_RETRIES = 3


class _Txn(transaction.Transaction):
    def __init__(self, api: Any, conn: connection.Connection, timeout: float, ctx: TxnContext) -> None:
        super().__init__(api, conn, timeout=timeout, check_error=True, log_errors=False)
        self.ctx = ctx

    def pre_commit(self, txn: Any) -> None:  # each attempt starts from the replica afresh
        self.ctx.reset()


class Transaction:
    """Changes collected in an `async with db.transaction()` block, committed together at its
    end (nothing is committed if the block raises)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.ctx = TxnContext(db.idl)
        self.commands: list[Command] = []
        self._write_id = new_write_id()

    def insert(self, record: R, may_exist: bool = False) -> None:
        self.commands.append(Insert(self.ctx, self._write_id, record, may_exist))

    def update(self, cls: type[R], key: Any, /, *, expect: dict[str, Any] | None = None,
               **changes: Any) -> None:
        self.commands.append(Update(self.ctx, self._write_id, cls, key, changes, expect))

    def delete(self, cls: type[R], key: Any, /, *, if_exists: bool = False) -> None:
        self.commands.append(Delete(self.ctx, self._write_id, cls, key, if_exists))

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
    if "timed out" in msg or "Timeout" in msg:
        return Unavailable("the cluster database did not confirm the write in time (no leader?)")
    return Internal(f"database error: {msg}")


class Database:
    def __init__(self, idl: ReplicaIdl, conn: connection.Connection, cache: ReplicaCache,
                 remotes: list[str], timeout: float) -> None:
        self.idl, self.conn, self.cache = idl, conn, cache
        self.remotes, self.timeout = remotes, timeout

    @classmethod
    async def connect(
        cls,
        remotes: str | Sequence[str],
        *,
        write_timeout: float = 10.0,
        schema_path: Path = SCHEMA_PATH,
        ssl: tuple[Path, Path, Path] | None = None,
        leader_only: bool = True,
        probe_interval_ms: int = 5000,
    ) -> Database:
        """Connect to the database served at `remotes` ("unix:/path", "tcp:ip:port", "ssl:...",
        any member of the cluster) and wait for the first full copy of it.
        `ssl` = (private key, certificate, CA certificate), process-wide as python-ovs has it."""
        remote_list = [remotes] if isinstance(remotes, str) else list(remotes)
        remote_list = [r.strip() for part in remote_list for r in part.split(",") if r.strip()]
        if not remote_list:
            raise Unavailable("no address of the cluster database given")
        loop = asyncio.get_running_loop()
        cache = ReplicaCache()

        def deliver(batch: Batch) -> None:
            try:
                loop.call_soon_threadsafe(cache.apply, batch)
            except RuntimeError:  # the loop is closed: we are shutting down
                pass

        def open_connection() -> tuple[ReplicaIdl, connection.Connection]:
            if ssl:
                key, cert, ca = ssl
                ovs.stream.Stream.ssl_set_private_key_file(str(key))
                ovs.stream.Stream.ssl_set_certificate_file(str(cert))
                ovs.stream.Stream.ssl_set_ca_cert_file(str(ca))
            helper = ovs_idl.SchemaHelper(location=str(schema_path))
            helper.register_all()
            idl = ReplicaIdl(",".join(remote_list), helper, deliver, leader_only=leader_only,
                             probe_interval=probe_interval_ms)
            reconnect = idl._session.reconnect
            reconnect.set_backoff(1000, MAX_BACKOFF_MS)
            reconnect.set_backoff_free_tries(len(remote_list))
            conn = connection.Connection(idl, write_timeout)
            try:
                conn.start()
            except ovsdbapp_exc.TimeoutException as e:
                conn.stop(1)
                idl.close()
                raise Unavailable(f"cannot reach the cluster database at {', '.join(remote_list)} "
                                  f"within {write_timeout:.0f}s") from e
            return idl, conn

        idl, conn = await asyncio.to_thread(open_connection)
        db = cls(idl, conn, cache, remote_list, write_timeout)
        try:
            await asyncio.wait_for(cache.synced.wait(), write_timeout)
        except TimeoutError as e:
            await db.close()
            raise Unavailable("the cluster database connected but sent no data") from e
        return db

    async def close(self) -> None:
        await asyncio.to_thread(self.conn.stop, 5)
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

    # ---- writes: transactions to the leader, off the loop ----
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

    async def _commit(self, txn: Transaction) -> list[Any]:
        result, flushed = await asyncio.to_thread(self._commit_blocking, txn)
        # Our own change reaches the cache before the reply does (same thread, FIFO); this only
        # guards that ordering.
        for _ in range(1000):
            if self.cache.applied >= flushed:
                break
            await asyncio.sleep(0.001)
        return result

    def _commit_blocking(self, t: Transaction) -> tuple[list[Any], int]:
        deadline = time.monotonic() + self.timeout
        refused = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable("the cluster database did not confirm the write "
                                  f"within {self.timeout:.0f}s")
            txn = _Txn(self, self.conn, remaining, t.ctx)
            for c in t.commands:
                txn.add(c)
            try:
                result = txn.commit()
                return [c.result for c in t.commands] if result is not None else [], self.idl.flushes
            except MicrocloudError:
                raise
            except (ovsdbapp_exc.TimeoutException, RuntimeError) as e:
                err = _server_error(str(e))
                if isinstance(err, (AlreadyExists, InUse)):
                    refused += 1
                    if refused > _CONSTRAINT_RETRIES:
                        raise err from e
                elif not isinstance(err, Unavailable):
                    raise err from e
                log.info("retrying a database write after: %s", e)
            # The earlier attempt may have landed: deletes then find nothing, which is fine.
            for c in t.commands:
                if isinstance(c, Delete):
                    c.retrying = True
            time.sleep(0.1)
