"""A lasting session with the Microcloud database: reconnects, leader-only, monitored replica.

    session = Session(["unix:/run/db.sock"], Replica(), cache.apply)
    session.start()
    await session.wait_ready(10)           # connected to a usable server, replica in sync
    result = await session.transact(ops)   # ConnectionLost: the write may have landed
    await session.close()

One connection at a time, to the first usable remote in turn: a server of a clustered
database must be connected to its cluster and, with `leader_only`, be its leader (as
python-ovs decides it, from the server's `_Server` database, which stays monitored:
losing leadership reconnects elsewhere). The replica is kept with `monitor_cond_since`, so a
reconnect fetches only what changed meanwhile when the server still has that history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

from microcloudd.db.jsonrpc import ConnectionLost, JsonRpc, RpcError
from microcloudd.db.replica import Batch, Replica
from microcloudd.db.schema import NAME

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.5  # after every remote failed once (python-ovs: 1 s doubling to 8 s)
_ZERO_ID = "00000000-0000-0000-0000-000000000000"
_SERVER_COLUMNS = ["name", "model", "connected", "leader", "schema", "index"]


def _single(v: Any) -> Any:
    if isinstance(v, list) and v and v[0] == "set":
        return v[1][0] if v[1] else None
    return v


class Unusable(Exception):
    """This server cannot serve us now (not the leader, not in its cluster, stale)."""


def ssl_context(key: str, cert: str, ca: str) -> ssl.SSLContext:
    """Mutual TLS as OVSDB does it: the peer's certificate must chain to `ca`; no host names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


class Session:
    def __init__(self, remotes: list[str], replica: Replica, deliver: Callable[[Batch], None], *,
                 leader_only: bool = True, ssl_context: ssl.SSLContext | None = None,
                 probe_interval: float = 5.0) -> None:
        self.remotes, self.replica, self._deliver = remotes, replica, deliver
        self.leader_only, self._ssl, self._probe = leader_only, ssl_context, probe_interval
        self._conn: JsonRpc | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()  # set (and replaced) at each replica update
        self._last_id = _ZERO_ID
        self._min_index = 0
        self._server_db: dict[str, Any] = {}  # our database's row of _Server.Database
        # Updates that arrive before the monitor's reply is applied (the reader dispatches them
        # before _serve resumes): applied after it, in order. None once monitoring.
        self._early: list[list[Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.last_error = "not connected yet"
        self.last_reason = ""  # why the last connection was dropped on purpose

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="database session")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()

    # -- for writers --
    async def wait_ready(self, timeout: float) -> None:
        """Returns when connected with the replica in sync; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def wait_change(self, timeout: float) -> None:
        """Returns at the next replica update, or after `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    async def transact(self, ops: list[dict[str, Any]]) -> list[Any]:
        conn = self._conn
        if conn is None or not self._ready.is_set():
            raise ConnectionLost("not connected to the database")
        result = await conn.request("transact", [NAME, *ops])
        return list(result) if isinstance(result, list) else []

    # -- the connection loop --
    async def _run(self) -> None:
        # Uses asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation that arrives
        # as the awaited call finishes (seen here: close() then waited forever on this loop);
        # `_closing` ends it regardless.
        while not self._closing:
            for remote in list(self.remotes):
                if self._closing:
                    return
                try:
                    await self._serve(remote)
                except (OSError, ssl.SSLError, TimeoutError, ConnectionLost, RpcError, Unusable,
                        ValueError) as e:
                    self.last_error = f"{remote}: {e or type(e).__name__}"
                    log.info("database session: %s", self.last_error)
                finally:
                    self._ready.clear()
                    if self._conn is not None:
                        await self._conn.close()
                        self._conn = None
            await asyncio.sleep(RETRY_INTERVAL)

    async def _serve(self, remote: str) -> None:
        """Connect to `remote`, check it, monitor, and return when the connection ends."""
        self.last_reason = ""
        conn = await JsonRpc.open(remote, self._notify, ssl_context=self._ssl,
                                  probe_interval=self._probe)
        self._conn = conn
        server = await conn.request("monitor_cond", ["_Server", "server", {
            "Database": [{"columns": _SERVER_COLUMNS, "where": [["name", "==", NAME]]}]}])
        self._server_rows(server, initial=True)
        self._check_server()
        self._early = []
        try:
            found, last_id, updates = await conn.request(
                "monitor_cond_since", [NAME, "db", self.replica.monitor_request(), self._last_id])
            self._last_id = last_id
            self._apply(updates, full=not found)
            for early in self._early:
                self._last_id = early[1]
                self._apply(early[2], full=False)
        finally:
            self._early = None
        self._ready.set()
        log.debug("database session on %s (%s)", remote, "incremental" if found else "full sync")
        await conn.closed
        raise ConnectionLost(self.last_reason or "connection closed")

    def _apply(self, updates: dict[str, Any], full: bool) -> None:
        batch = self.replica.apply(updates or {}, full)
        self._deliver(batch)
        self._changed.set()
        self._changed = asyncio.Event()

    def _notify(self, method: str, params: list[Any]) -> None:
        if method == "update3" and len(params) == 3 and params[0] == "db":
            if self._early is not None:
                self._early.append(params)
                return
            self._last_id = params[1]
            self._apply(params[2], full=False)
        elif method == "update2" and len(params) == 2 and params[0] == "server":
            self._server_rows(params[1], initial=False)
            try:
                self._check_server()
            except Unusable as e:
                self._drop(str(e))
        elif method == "monitor_canceled":
            # The schema was converted online: monitor again from the start.
            self._last_id = _ZERO_ID
            self._drop("the database schema changed")

    def _drop(self, why: str) -> None:
        self.last_reason = why
        log.info("database session: %s; reconnecting", why)
        if self._conn is not None:
            asyncio.get_running_loop().create_task(self._conn.close())

    def _server_rows(self, updates: dict[str, Any], initial: bool) -> None:
        if initial:
            self._server_db = {}
        for row_update in (updates or {}).get("Database", {}).values():
            if "delete" in row_update:
                self._server_db = {}
                continue
            row = row_update.get("initial") or row_update.get("insert") or row_update.get("modify") or {}
            # "schema" and "index" are sets of at most one element: keep the element or None.
            self._server_db.update({k: _single(v) for k, v in row.items()})

    def _check_server(self) -> None:
        db = self._server_db
        if not db:
            raise Unusable(f"the server has no {NAME} database")
        if db.get("model") != "clustered":
            return
        if not db.get("schema"):
            raise Unusable("the server has not joined its cluster yet")
        if not db.get("connected", False):
            raise Unusable("the server is disconnected from its cluster")
        if self.leader_only and not db.get("leader", False):
            raise Unusable("the server is not the cluster leader")
        index = db.get("index")
        if isinstance(index, int):
            if index < self._min_index:
                raise Unusable("the server has stale data")
            self._min_index = index
