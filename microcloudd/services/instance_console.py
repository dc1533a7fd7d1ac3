"""The serial console: its log, and a bridge between a websocket and the live console.

LXD's way in (`POST /1.0/instances/{name}/console`, `attach`): a websocket operation whose
channel "0" carries the console's bytes both ways and whose "control" channel, when a client
connects it, ends the session as it closes (window sizes sent there mean nothing to a serial
port). The session ends when either socket or the console closes; the operation then succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from microcloudd.api import instances as api
from microcloudd.api.errors import Conflict, InvalidArgument
from microcloudd.api.server import Operation
from microcloudd.drivers.compute.base import ConsoleStream
from microcloudd.operations import OperationContext
from microcloudd.services import instance_view as view
from microcloudd.services.cloud import Cloud
from microcloudd.services.instances import get_record

CONNECT_WITHIN = 30.0  # seconds a client has to connect channel "0" after the POST


async def read_log(cloud: Cloud, name: str, max_bytes: int = 1 << 20) -> bytes:
    rec = get_record(cloud, name)
    if rec.location and rec.location != cloud.server_name:
        raise Conflict(f"Instance {name!r} runs on member {rec.location!r}; its console log is there")
    compute = cloud.need_compute()
    if not await compute.exists(name):
        return b""
    return await compute.read_console_log(name, max(1, max_bytes))


async def open_console(cloud: Cloud, name: str) -> ConsoleStream:
    get_record(cloud, name)
    return await cloud.need_compute().open_console(name)


async def attach(cloud: Cloud, name: str, body: api.ConsolePost) -> Operation:
    """Start a console session operation (see the module doc); the console is opened first,
    so a stopped or unknown instance fails the request itself."""
    if body.type != "console":
        raise InvalidArgument(f"Console type {body.type!r} is not supported: only \"console\" (serial)")
    if body.width < 0 or body.height < 0:
        raise InvalidArgument("Console width and height must not be negative")
    rec = get_record(cloud, name)
    if rec.location and rec.location != cloud.server_name:
        raise Conflict(f"Instance {name!r} runs on member {rec.location!r}; attach to its console there")
    console = await open_console(cloud, name)

    async def session(op: OperationContext) -> None:
        try:
            data = await op.channel("0", CONNECT_WITHIN)
        except BaseException:
            await console.close()
            raise

        async def receive() -> bytes | None:
            return await data.receive()

        async def control() -> None:  # drained; its close ends the session
            ctl = await op.channel("control")
            while await ctl.receive() is not None:
                pass

        watcher = asyncio.create_task(control())
        bridged = asyncio.create_task(bridge(console, data.send, receive))
        try:
            await asyncio.wait([watcher, bridged], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (watcher, bridged):
                t.cancel()
            for t in (watcher, bridged):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await console.close()  # idempotent: bridge may have closed it

    try:
        return cloud.operations.start("Showing console", session, resources={"instances": [view.url(name)]},
                                      channels=("0", "control"))
    except BaseException:
        await console.close()
        raise


async def bridge(console: ConsoleStream, send: Callable[[bytes], Awaitable[None]],
                 receive: Callable[[], Awaitable[bytes | None]]) -> None:
    """Pump console output to `send` and `receive`d input to the console until either side
    ends (receive returns None, or the console closes); closes the console."""

    async def out() -> None:
        while True:
            data = await console.read()
            if not data:
                return
            await send(data)

    async def into() -> None:
        while True:
            data = await receive()
            if data is None:
                return
            await console.write(data)

    tasks = [asyncio.create_task(out()), asyncio.create_task(into())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await console.close()
