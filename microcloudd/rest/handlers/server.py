"""`/1.0`, `/1.0/status`, `/1.0/openapi.json`, operations and the event stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import WSMsgType, web

from microcloudd.api.declare import Recursion
from microcloudd.api.errors import InvalidArgument, MicrocloudError
from microcloudd.api.server import (
    EventsQuery,
    Operation,
    OperationsByStatus,
    SecretQuery,
    ServerInfo,
    Status,
    WaitQuery,
)
from microcloudd.events import EVENT_TYPES, EventBus
from microcloudd.operations import OperationManager
from microcloudd.rest.app import Context
from microcloudd.rest.ws_channel import WebSocketChannel


class ServerHandlers:
    def __init__(self, info: ServerInfo, status: Callable[[], Awaitable[Status]], openapi: bytes,
                 operations: OperationManager, events: EventBus) -> None:
        self._info, self._status, self._openapi = info, status, openapi
        self._untrusted = msgspec.structs.replace(info, auth="untrusted", environment=None)
        self._ops, self._bus = operations, events
        self._sockets: set[web.WebSocketResponse] = set()

    async def server_info(self, ctx: Context) -> ServerInfo:
        trusted = ctx.creds is not None and ctx.creds.trusted
        return self._info if trusted else self._untrusted

    async def server_status(self, ctx: Context) -> Status:
        return await self._status()

    async def openapi(self, ctx: Context) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def operations_list(self, ctx: Context, query: Recursion) -> OperationsByStatus:
        groups: dict[str, list[object]] = {}
        for op in self._ops.list():
            item: object = op if query.recursion else f"/1.0/operations/{op.id}"
            groups.setdefault(op.status.lower(), []).append(item)
        return OperationsByStatus(**groups)

    async def operation_get(self, ctx: Context, id: str) -> Operation:
        return self._ops.get(id)

    async def operation_cancel(self, ctx: Context, id: str) -> None:
        await self._ops.cancel(id)

    async def operation_wait(self, ctx: Context, id: str, query: WaitQuery) -> Operation:
        return await self._ops.wait(id, None if query.timeout < 0 else query.timeout)

    async def operation_websocket(self, ctx: Context, id: str, query: SecretQuery) -> web.WebSocketResponse:
        self._ops.check_secret(id, query.secret)  # a bad secret fails before the handshake
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(ctx.request)
        self._sockets.add(ws)
        try:
            await self._ops.connect(id, query.secret, WebSocketChannel(ws))
        except MicrocloudError:
            pass  # the operation ended since the check: the close tells the client
        finally:
            self._sockets.discard(ws)
            await ws.close()
        return ws

    async def events(self, ctx: Context, query: EventsQuery) -> web.WebSocketResponse:
        types = [t for t in query.type.split(",") if t] or list(EVENT_TYPES)
        unknown = sorted(set(types) - set(EVENT_TYPES))
        if unknown:
            raise InvalidArgument(f"Unknown event type(s) {unknown}; known: {', '.join(EVENT_TYPES)}")
        ws = web.WebSocketResponse(heartbeat=30)
        sub = self._bus.subscribe(types)  # before the handshake: no event is missed after it
        await ws.prepare(ctx.request)
        self._sockets.add(ws)
        enc = msgspec.json.Encoder()

        async def pump() -> None:
            async for event in sub:
                await ws.send_str(enc.encode(event).decode())
            await ws.close()

        sender = asyncio.create_task(pump())
        try:
            async for msg in ws:  # clients send nothing; this ends when they go away
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            sub.close()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._sockets.discard(ws)
        return ws

    async def close_event_streams(self) -> None:
        self._bus.close()
        for ws in list(self._sockets):
            await ws.close()
