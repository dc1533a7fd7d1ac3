"""Export a volume to a backup file and import it back (format: backup_file.py).
Blocking; run from the driver's thread pool."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import rbd

from microcloudd.api.errors import AlreadyExists, InvalidArgument, NotFound
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.backup_file import BackupHeader, BackupReader, BackupWriter
from microcloudd.drivers.storage.base import VolumeInfo, VolumeType
from microcloudd.drivers.storage.rbd_errors import translated
from microcloudd.drivers.storage.rbd_pools import check_room
from microcloudd.drivers.storage.rbd_session import Session, SyncProgress, exists, open_image, set_tags, tags
from microcloudd.drivers.storage.rbd_stream import CHUNK, write_extents
from microcloudd.drivers.storage.rbd_volumes import describe, remove_quietly, volume_info

# Tags that describe where a volume lives now, not what it is: not carried in a backup.
_LOCAL_TAGS = {"owner", "attached", "kind", "name"}


_BLOCK = 64 << 10
_ZERO_BLOCK = bytes(_BLOCK)


def nonzero_runs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of the runs of `data` that are not all zero, in 64 KiB blocks: a
    backup keeps only what reads back as non-zero (RBD allocates whole 4 MiB objects)."""
    start = None
    for off in range(0, len(data), _BLOCK):
        zero = data[off:off + _BLOCK] == _ZERO_BLOCK[:min(_BLOCK, len(data) - off)]
        if zero and start is not None:
            yield start, data[start:off]
            start = None
        elif not zero and start is None:
            start = off
    if start is not None:
        yield start, data[start:]


def _allocated(image: rbd.Image, size: int) -> list[tuple[int, int]]:
    extents: list[tuple[int, int]] = []

    def add(offset: int, length: int, exists: bool) -> None:
        if exists:
            extents.append((offset, length))

    image.diff_iterate(0, size, None, add, include_parent=True, whole_object=False)
    return sorted(extents)


def export_volume(s: Session, pool: str, name: str, vtype: VolumeType, target: Path,
                  progress: SyncProgress) -> int:
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    target = Path(target)
    if not target.parent.is_dir():
        raise NotFound(f"Directory {target.parent} not found")
    tmp = target.with_name(f".{target.name}.partial")
    try:
        with s.ioctx(pool) as io, open_image(io, backend, what, read_only=True) as image, translated(what):
            size = image.size()
            meta = {k: v for k, v in tags(image).items() if k not in _LOCAL_TAGS}
            with open(tmp, "wb") as f:
                writer = BackupWriter(f, BackupHeader(size=size, type=vtype.value, name=name, metadata=meta))
                for offset, length in _allocated(image, size):
                    for pos in range(offset, offset + length, CHUNK):
                        s.check_cancelled()
                        data = image.read(pos, min(CHUNK, offset + length - pos))
                        for start, run in nonzero_runs(data):
                            writer.extent(pos + start, run)
                        progress(pos + len(data), size)
                writer.finish()
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)  # a reader never sees a half-written backup
    finally:
        tmp.unlink(missing_ok=True)
    progress(size, size)
    return target.stat().st_size


def import_volume(s: Session, pool: str, name: str, vtype: VolumeType, source: Path,
                  progress: SyncProgress) -> VolumeInfo:
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    try:
        f = open(source, "rb")
    except FileNotFoundError as e:
        raise NotFound(f"Backup file {source} not found") from e
    with f, s.ioctx(pool) as io:
        reader = BackupReader(f)
        if reader.header.type != vtype.value:
            raise InvalidArgument(f"Backup file {source} holds a {reader.header.type} volume, "
                                  f"not a {vtype.value} volume")
        if exists(io, backend):
            raise AlreadyExists(f"{what} already exists")
        check_room(s, pool, Path(source).stat().st_size, f"Importing backup {Path(source).name}")
        size = reader.header.size
        with translated(what):
            rbd.RBD().create(io, backend, size, old_format=False)
        try:
            with open_image(io, backend, what) as image, translated(what):
                set_tags(image, {"owner": s.owner, "kind": naming.PARTIAL, "name": name})
                extents: Iterator[tuple[int, bytes]] = reader.extents()  # checks the checksum at the end
                write_extents(s, image, extents, size, progress, what)
                carried = {k: str(v) for k, v in reader.header.metadata.items() if k not in _LOCAL_TAGS}
                set_tags(image, {**carried, "kind": vtype.value})
        except BaseException:
            remove_quietly(io, backend)
            raise
    return volume_info(s, pool, name, vtype)
