"""The serial console as a byte stream (virStream + virDomainOpenConsole), and the serial log.

The stream is non-blocking and lives on the libvirt thread: libvirt calls `_on_event` there
when output is readable, chunks are handed to the reader's asyncio loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import libvirt

from microcloudd.api.errors import Unavailable
from microcloudd.drivers.compute.base import ConsoleStream
from microcloudd.drivers.compute.libvirt_errors import translate
from microcloudd.drivers.compute.libvirt_thread import LibvirtThread

_EVENTS = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
           | libvirt.VIR_STREAM_EVENT_HANGUP)
_EAGAIN = -2  # what virStream.recv/send return for "would block" on a non-blocking stream


class LibvirtConsole(ConsoleStream):
    def __init__(self, lt: LibvirtThread, name: str) -> None:
        self._lt = lt
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._stream: libvirt.virStream | None = None
        self._eof = False

    @classmethod
    async def open(cls, lt: LibvirtThread, conn: libvirt.virConnect, dom: libvirt.virDomain,
                   name: str) -> LibvirtConsole:
        console = cls(lt, name)
        await lt.call(console._open_sync, conn, dom)
        return console

    def _open_sync(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            # FORCE: take the console over from a stale session (a dropped websocket, say).
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            stream.eventAddCallback(_EVENTS, self._on_event, None)
        except libvirt.libvirtError as e:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
            raise translate(e, f"open the console of instance {self._name!r}") from None
        self._stream = stream

    def _push(self, data: bytes) -> None:
        self._loop.call_soon_threadsafe(self._chunks.put_nowait, data)

    def _finish_sync(self) -> None:
        if self._eof:
            return
        self._eof = True
        stream, self._stream = self._stream, None
        if stream is not None:
            for step in (stream.eventRemoveCallback, stream.abort):
                try:
                    step()
                except libvirt.libvirtError:
                    pass
        self._push(b"")

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(65536)
                except libvirt.libvirtError:
                    self._finish_sync()
                    return
                if data == _EAGAIN:
                    break
                if not data:  # end of stream: the guest stopped
                    self._finish_sync()
                    return
                assert isinstance(data, bytes)
                self._push(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._finish_sync()

    async def read(self) -> bytes:
        if self._eof and self._chunks.empty():
            return b""
        return await self._chunks.get()

    def _send_sync(self, data: bytes) -> int:
        if self._stream is None:
            raise Unavailable(f"the console of instance {self._name!r} is closed")
        try:
            n = self._stream.send(data)
        except libvirt.libvirtError as e:
            raise translate(e, f"write to the console of instance {self._name!r}") from None
        return 0 if n == _EAGAIN else int(n)

    async def write(self, data: bytes) -> None:
        while data:
            n = await self._lt.call(self._send_sync, data)
            data = data[n:]
            if data:
                await asyncio.sleep(0.01)  # the pty is full: let the guest read

    async def close(self) -> None:
        await self._lt.call(self._finish_sync)


def tail(path: Path, max_bytes: int) -> bytes:
    """The last `max_bytes` of a log file (b"" if it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read()
    except FileNotFoundError:
        return b""
