"""A minimal writer of the `newc` cpio format the Linux kernel unpacks as an initramfs."""

from __future__ import annotations

import io


class CpioWriter:
    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _header(self, name: str, mode: int, size: int, nlink: int = 1) -> None:
        raw = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(raw), 0]
        self._ino += 1
        self._buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str) -> None:
        self._header(name, 0o040755, 0, 2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._header(name, 0o100000 | mode, len(data))
        self._buf.write(data)
        self._pad()

    def symlink(self, name: str, target: str) -> None:
        raw = target.encode()
        self._header(name, 0o120777, len(raw))
        self._buf.write(raw)
        self._pad()

    def finish(self) -> bytes:
        self._header("TRAILER!!!", 0, 0)
        return self._buf.getvalue()
