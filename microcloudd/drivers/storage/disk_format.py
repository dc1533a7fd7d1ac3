"""Recognise a disk image file from its content (never its name): qcow2 or raw.

A raw file is accepted only if it looks like a disk: an MBR boot signature (which a GPT disk
also has, in its protective MBR) or an ISO 9660 volume descriptor. Everything else is refused
with a message that says what the file seems to be.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from microcloudd.api.errors import InvalidArgument, NotFound, Unavailable
from microcloudd.drivers.storage.base import DiskFormat

_QCOW2_MAGIC = b"QFI\xfb"
# Formats we know but do not take, so the error can name them.
_OTHER = [
    (0, b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (0, b"\xfd7zXZ\x00", "an xz-compressed file (decompress it first)"),
    (0, b"\x28\xb5\x2f\xfd", "a zstd-compressed file (decompress it first)"),
    (0, b"BZh", "a bzip2-compressed file (decompress it first)"),
    (0, b"KDMV", "a VMDK disk (convert it to qcow2 or raw first)"),
    (0, b"vhdxfile", "a VHDX disk (convert it to qcow2 or raw first)"),
    (0, b"conectix", "a VHD disk (convert it to qcow2 or raw first)"),
    (257, b"ustar", "a tar archive (extract the disk image first)"),
]


@dataclass(frozen=True)
class DiskFile:
    path: Path
    format: DiskFormat
    file_size: int  # bytes in the file
    virtual_size: int  # size of the disk it holds


def _read_at(f: object, offset: int, n: int) -> bytes:
    f.seek(offset)  # type: ignore[attr-defined]
    return f.read(n)  # type: ignore[attr-defined]


def inspect(path: Path) -> DiskFile:
    """What disk image `path` holds, or InvalidArgument/NotFound saying why it is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InvalidArgument(f"{path} is not a regular file")
        with open(path, "rb") as f:
            head = _read_at(f, 0, 1024)
            iso = _read_at(f, 0x8001, 5) if size > 0x8006 else b""
    except FileNotFoundError as e:
        raise NotFound(f"File {path} not found") from e
    except PermissionError as e:
        raise InvalidArgument(f"File {path} cannot be read: permission denied") from e
    if size == 0:
        raise InvalidArgument(f"{path} is empty, not a disk image")
    if head.startswith(_QCOW2_MAGIC):
        return DiskFile(path, DiskFormat.QCOW2, size, _qcow2_virtual_size(path))
    for offset, magic, what in _OTHER:
        if head[offset:offset + len(magic)] == magic:
            raise InvalidArgument(f"{path} is {what}; images must be qcow2 or raw disk images")
    has_mbr = len(head) >= 512 and head[510:512] == b"\x55\xaa"
    if not (has_mbr or iso == b"CD001"):
        raise InvalidArgument(
            f"{path} is neither a qcow2 image nor a raw disk image (no partition table or ISO 9660 header)")
    if size % 512:
        raise InvalidArgument(
            f"{path} is not a raw disk image: its size ({size} bytes) is not a multiple of 512")
    return DiskFile(path, DiskFormat.RAW, size, size)


def _qcow2_virtual_size(path: Path) -> int:
    try:
        done = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", str(path)],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError as e:
        raise Unavailable("qemu-img is not installed (needed for qcow2 images)") from e
    if done.returncode != 0:
        raise InvalidArgument(f"{path} is a damaged qcow2 image: {done.stderr.strip()}")
    info = json.loads(done.stdout)
    # A backing file would make qemu-img read another file of the host: refuse it.
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise InvalidArgument(f"{path} is a qcow2 image with a backing file; flatten it first "
                              "(qemu-img convert -O qcow2 IN OUT)")
    if info.get("encrypted"):
        raise InvalidArgument(f"{path} is an encrypted qcow2 image; decrypt it first")
    return int(info["virtual-size"])
