"""Websocket operations (LXD's class "websocket") through the real daemon's REST layer on its
Unix socket: secrets in metadata.fds, `GET /1.0/operations/{id}/websocket?secret=`, a channel
used once, bad secrets refused before the handshake, the operation ends with its session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from microcloudd.api.declare import Op
from microcloudd.api.server import Operation
from microcloudd.daemon import Daemon
from microcloudd.operations import OperationContext, OperationManager
from microcloudd.rest.app import Context


class EchoBody(msgspec.Struct):
    connect_within: float = 10.0


OPS = (Op("POST", "/1.0/test/echo", "test_echo", "Echo bytes on a websocket", body=EchoBody, kind="async"),)


class EchoHandlers:
    def __init__(self, ops: OperationManager) -> None:
        self.ops = ops

    async def test_echo(self, ctx: Context, body: EchoBody) -> Operation:
        async def work(op: OperationContext) -> dict[str, Any]:
            ch = await op.channel("0", body.connect_within)
            n = 0
            while (data := await ch.receive()) is not None:
                await ch.send(data.upper())
                n += len(data)
            return {"echoed": n}

        return self.ops.start("Echoing", work, channels=("0", "control"))


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    d = Daemon(tmp_path / "state", "testsrv", extra_ops=OPS)
    d._extra_handlers = (EchoHandlers(d.operations),)
    await d.start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(d.socket_path)),
                                         base_url="http://localhost") as s:
            yield s
    finally:
        await d.stop()


async def post(http: aiohttp.ClientSession, within: float = 10.0) -> dict[str, Any]:
    async with http.post("/1.0/test/echo", json={"connect_within": within}) as r:
        assert r.status == 202
        body: dict[str, Any] = (await r.json())["metadata"]
        return body


async def test_channel_echo_and_the_operation_ends_with_the_session(http: aiohttp.ClientSession) -> None:
    op = await post(http)
    assert op["class"] == "websocket" and set(op["metadata"]["fds"]) == {"0", "control"}
    url = f"/1.0/operations/{op['id']}/websocket?secret={op['metadata']['fds']['0']}"
    async with http.ws_connect(url) as ws:
        await ws.send_bytes(b"hello")
        assert await ws.receive_bytes(timeout=10) == b"HELLO"
        await ws.send_str("text too")
        assert await ws.receive_bytes(timeout=10) == b"TEXT TOO"
        async with http.get(url) as again:  # a secret opens its channel once
            assert again.status == 403
    async with http.get(f"/1.0/operations/{op['id']}/wait?timeout=10") as r:
        done = (await r.json())["metadata"]
    assert done["status"] == "Success" and done["metadata"]["echoed"] == 13


async def test_bad_secret_and_no_client(http: aiohttp.ClientSession) -> None:
    op = await post(http, within=0.5)
    async with http.get(f"/1.0/operations/{op['id']}/websocket?secret=nope") as r:
        assert r.status == 403 and "secret" in (await r.json())["error"]
    async with http.get("/1.0/operations/00000000-0000-0000-0000-000000000000/websocket?secret=x") as r:
        assert r.status == 404
    async with http.get(f"/1.0/operations/{op['id']}/wait?timeout=10") as r:
        done = (await r.json())["metadata"]
    assert done["status"] == "Failure" and "No client connected" in done["err"]
    secret = op["metadata"]["fds"]["control"]
    async with http.get(f"/1.0/operations/{op['id']}/websocket?secret={secret}") as r:
        assert r.status == 403  # the operation is over: its secrets with it
