"""The serial console: its log, and a bridge between a websocket and the live console."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from microcloudd.api.errors import Conflict
from microcloudd.drivers.compute.base import ConsoleStream
from microcloudd.services.cloud import Cloud
from microcloudd.services.instances import get_record


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
