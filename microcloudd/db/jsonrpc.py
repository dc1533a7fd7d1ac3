"""A JSON-RPC 1.0 connection to an OVSDB server, in asyncio (RFC 7047 section 4).

    conn = await JsonRpc.open("unix:/run/db.sock", on_notify, ssl_context=None)
    result = await conn.request("transact", ["Microcloud", ...])
    await conn.closed            # set when the stream ends or close() is called

Messages are JSON objects back to back with nothing between them, so the reader finds each
object's end itself (`Splitter`). The server's "echo" requests are answered here; on TCP and
SSL an idle connection is probed with our own "echo" and dropped when that goes unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import ssl
from collections.abc import Callable
from typing import Any

import msgspec

log = logging.getLogger(__name__)

_TOKEN = re.compile(rb'[{}"]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # after an opening quote
_decode = msgspec.json.decode
_encode = msgspec.json.encode


class ConnectionLost(Exception):
    """The connection ended before the reply came: a write may or may not have landed."""


class RpcError(Exception):
    """The server answered a request with a JSON-RPC error."""


class Splitter:
    """Cuts a byte stream of back-to-back JSON objects into one bytes per object."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0  # scanned up to here
        self.depth = 0

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        out: list[bytes] = []
        pos, depth = self.pos, self.depth
        while True:
            m = _TOKEN.search(buf, pos)
            if m is None:
                pos = len(buf)
                break
            c = buf[m.start()]
            if c == 0x22:  # a string: skip it whole (braces inside do not count)
                s = _STRING_REST.match(buf, m.end())
                if s is None:
                    pos = m.start()  # incomplete: rescan from its quote with more data
                    break
                pos = s.end()
                continue
            pos = m.end()
            if c == 0x7B:
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    out.append(bytes(buf[:pos]))
                    del buf[:pos]
                    pos = 0
        self.pos, self.depth = pos, depth
        return out


def parse_remote(remote: str) -> tuple[str, str, int]:
    """("unix", path, 0), ("tcp"|"ssl", host, port) from an OVSDB remote string."""
    kind, _, rest = remote.partition(":")
    if kind == "unix" and rest:
        return kind, rest, 0
    if kind in ("tcp", "ssl"):
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return kind, host.strip("[]"), int(port)
    raise ValueError(f"not a database address: {remote!r} (unix:PATH, tcp:IP:PORT or ssl:IP:PORT)")


class JsonRpc:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_notify: Callable[[str, list[Any]], None], probe_interval: float | None) -> None:
        self._reader, self._writer = reader, writer
        self._on_notify = on_notify
        self._probe = probe_interval
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, remote: str, on_notify: Callable[[str, list[Any]], None], *,
                   ssl_context: ssl.SSLContext | None = None, timeout: float = 5.0,
                   probe_interval: float | None = 5.0) -> JsonRpc:
        kind, host, port = parse_remote(remote)
        limit = 1 << 20
        if kind == "unix":
            coro = asyncio.open_unix_connection(host, limit=limit)
            probe_interval = None  # like ovsdb-server, no probes on a local socket
        elif kind == "ssl":
            if ssl_context is None:
                raise ValueError(f"{remote}: an ssl: address needs the key, certificate and CA")
            coro = asyncio.open_connection(host, port, ssl=ssl_context, limit=limit)
        else:
            coro = asyncio.open_connection(host, port, limit=limit)
        async with asyncio.timeout(timeout):
            reader, writer = await coro
        return cls(reader, writer, on_notify, probe_interval)

    async def request(self, method: str, params: list[Any]) -> Any:
        if self.closed.done():
            raise ConnectionLost("the database connection is closed")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._send({"method": method, "params": params, "id": rid})
            return await fut
        finally:
            self._pending.pop(rid, None)

    def _send(self, msg: dict[str, Any]) -> None:
        self._writer.write(_encode(msg))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._finish("closed")
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._writer.wait_closed()

    def _finish(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(f"the database connection was lost ({why})"))
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    async def _read(self) -> None:
        split = Splitter()
        why = "closed by the server"
        unanswered = False
        try:
            while True:
                try:
                    async with asyncio.timeout(self._probe):
                        data = await self._reader.read(1 << 16)
                except TimeoutError:
                    if unanswered:
                        why = f"no answer to a probe for {self._probe:.0f} s"
                        break
                    unanswered = True
                    self._send({"method": "echo", "params": [], "id": "probe"})
                    continue
                if not data:
                    break
                unanswered = False
                for raw in split.feed(data):
                    self._dispatch(_decode(raw))
        except (OSError, ssl.SSLError, msgspec.DecodeError) as e:
            why = str(e) or type(e).__name__
        finally:
            self._finish(why)
            self._writer.close()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method is None:  # a reply
            rid = msg.get("id")
            fut = self._pending.get(rid) if isinstance(rid, int) else None
            if fut is not None and not fut.done():
                err = msg.get("error")
                if err is not None:
                    fut.set_exception(RpcError(str(err)))
                else:
                    fut.set_result(msg.get("result"))
            return
        if method == "echo" and msg.get("id") is not None:
            self._send({"result": msg.get("params", []), "error": None, "id": msg["id"]})
            return
        if msg.get("id") is None:
            self._on_notify(method, msg.get("params") or [])
        else:  # a request we do not serve
            self._send({"result": None, "error": f"unknown method {method}", "id": msg["id"]})
