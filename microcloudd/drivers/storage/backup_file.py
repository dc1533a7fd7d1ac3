"""The volume backup file: a JSON header, the volume's allocated extents, a checksum.

    b"MCVOLBK1" | u32 header length | header JSON {"version", "size", "type", "name", "metadata"}
    | records: u64 offset, u64 length, data ... | end record (offset 2**64-1, length 0)
    | sha256 of every byte before it

Only allocated extents are stored, so a 10 GiB volume holding 50 MiB makes a ~50 MiB file,
and the restored volume reads back byte for byte the same. Pure file handling, no Ceph.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from microcloudd.api.errors import InvalidArgument

MAGIC = b"MCVOLBK1"
VERSION = 1
_RECORD = struct.Struct("<QQ")
_END = (1 << 64) - 1
MAX_RECORD = 64 << 20


@dataclass
class BackupHeader:
    size: int
    type: str
    name: str
    metadata: dict[str, str] = field(default_factory=dict)
    version: int = VERSION


class BackupWriter:
    def __init__(self, f: IO[bytes], header: BackupHeader) -> None:
        self._f, self._sha = f, hashlib.sha256()
        text = json.dumps(header.__dict__, sort_keys=True).encode()
        self._put(MAGIC + struct.pack("<I", len(text)) + text)

    def _put(self, data: bytes) -> None:
        self._f.write(data)
        self._sha.update(data)

    def extent(self, offset: int, data: bytes) -> None:
        for i in range(0, len(data), MAX_RECORD):
            chunk = data[i:i + MAX_RECORD]
            self._put(_RECORD.pack(offset + i, len(chunk)))
            self._put(chunk)

    def finish(self) -> None:
        self._put(_RECORD.pack(_END, 0))
        self._f.write(self._sha.digest())


def _corrupt(why: str) -> InvalidArgument:
    return InvalidArgument(f"Not a valid microcloud volume backup: {why}")


class BackupReader:
    """Read the header at construction; `extents()` yields (offset, data) and checks the
    checksum at the end (InvalidArgument if the file was cut short or altered)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f, self._sha = f, hashlib.sha256()
        if self._get(len(MAGIC)) != MAGIC:
            raise _corrupt("wrong magic (this is not a file written by volume export)")
        (n,) = struct.unpack("<I", self._get(4))
        if n > 1 << 20:
            raise _corrupt("header too large")
        try:
            raw: dict[str, Any] = json.loads(self._get(n))
            self.header = BackupHeader(**raw)
        except (ValueError, TypeError) as e:
            raise _corrupt("unreadable header") from e
        if self.header.version != VERSION:
            raise _corrupt(f"version {self.header.version} is not supported")
        if not isinstance(self.header.size, int) or self.header.size <= 0:
            raise _corrupt("bad volume size")

    def _get(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise _corrupt("the file is truncated")
        self._sha.update(data)
        return data

    def extents(self) -> Iterator[tuple[int, bytes]]:
        while True:
            offset, length = _RECORD.unpack(self._get(_RECORD.size))
            if offset == _END:
                break
            if length > MAX_RECORD or offset + length > self.header.size:
                raise _corrupt("an extent lies outside the volume")
            yield offset, self._get(length)
        digest = self._f.read(32)
        if digest != self._sha.digest():
            raise _corrupt("checksum mismatch (the file is damaged)")
