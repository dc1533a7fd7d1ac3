"""An aiohttp websocket as an operation's `Channel` (bytes both ways; text arrives as UTF-8)."""

from __future__ import annotations

from aiohttp import WSMsgType, web


class WebSocketChannel:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(data)

    async def receive(self) -> bytes | None:
        msg = await self.ws.receive()
        if msg.type == WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type == WSMsgType.TEXT:
            return str(msg.data).encode()
        return None  # closed, closing or an error: the client is gone
