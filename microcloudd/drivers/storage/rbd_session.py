"""A connected Ceph client plus the helpers every RBD operation module shares.

Everything here blocks: the RBD driver calls these functions from its own thread pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rados
import rbd

from microcloudd.api.errors import Cancelled, Internal, NotFound
from microcloudd.atomic_file import write_atomic
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.rbd_errors import translated

log = logging.getLogger(__name__)
# How long a dead client stays blocklisted: far longer than any OSD keeps its watches.
FENCE_SECONDS = 3600

# Progress as the worker threads see it: (bytes done, bytes total); must be thread-safe.
SyncProgress = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    pass


@dataclass
class Session:
    cluster: rados.Rados
    conf_path: Path
    keyring_path: Path
    user: str
    owner: str
    cancel: threading.Event = field(default_factory=threading.Event)

    def mon(self, cmd: dict[str, Any], what: str, inbuf: bytes = b"") -> Any:
        """A mon command's JSON answer (or None when it prints nothing)."""
        with translated(what):
            ret, out, err = self.cluster.mon_command(json.dumps({**cmd, "format": "json"}), inbuf, timeout=30)
        if ret != 0:
            raise _mon_error(ret, err, what)
        return json.loads(out) if out.strip() else None

    @contextlib.contextmanager
    def ioctx(self, pool: str) -> Iterator[rados.Ioctx]:
        with translated(f"Storage pool {pool!r}"):
            io = self.cluster.open_ioctx(pool)
        try:
            yield io
        finally:
            io.close()

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("The operation was cancelled")


def _mon_error(ret: int, err: str, what: str) -> Exception:
    from microcloudd.drivers.storage.rbd_errors import to_error

    exc = OSError(-ret, err or "mon command failed")
    error = to_error(exc, what)
    if isinstance(error, Internal):
        error.message = f"{what}: Ceph refused the request ({err.strip() or ret})"
    return error


@contextlib.contextmanager
def open_image(io: rados.Ioctx, name: str, what: str, *, read_only: bool = False,
               snapshot: str | None = None) -> Iterator[rbd.Image]:
    with translated(what):
        image = rbd.Image(io, name, snapshot=snapshot, read_only=read_only)
    try:
        yield image
    finally:
        image.close()


def exists(io: rados.Ioctx, name: str) -> bool:
    try:
        rbd.Image(io, name, read_only=True).close()
    except rbd.ImageNotFound:
        return False
    return True


def tags(image: rbd.Image) -> dict[str, str]:
    """Our metadata keys of an open image, with the "microcloud." prefix removed."""
    return {k[len(naming.TAG):]: v for k, v in image.metadata_list() if k.startswith(naming.TAG)}


def set_tags(image: rbd.Image, values: dict[str, str]) -> None:
    for key, value in values.items():
        image.metadata_set(naming.TAG + key, value)


def remove_quietly(io: rados.Ioctx, name: str) -> None:
    """Undo a half-made image (best effort: a leftover is still tagged, the reconciler finds it)."""
    with contextlib.suppress(rbd.Error):
        with rbd.Image(io, name) as image:
            for snap in image.list_snaps():
                if image.is_protected_snap(snap["name"]):
                    image.unprotect_snap(snap["name"])
                image.remove_snap(snap["name"])
    with contextlib.suppress(rbd.Error):
        rbd.RBD().remove(io, name)


def not_found(what: str) -> NotFound:
    return NotFound(f"{what} not found")


def fence_previous(cluster: rados.Rados, note: Path) -> None:
    """Blocklist the client whose address `note` holds (our previous incarnation, which did not
    shut down cleanly), then note `cluster`'s own address there. Only that exact client
    instance (address and nonce) is fenced; a refusal (a user without the mon capability) is
    logged, and the OSDs then drop the dead client's watches after their timeout as before."""
    previous = note.read_text().strip() if note.is_file() else ""
    mine = cluster.get_addrs()
    if previous and previous != mine:
        try:
            cluster.blocklist_add(previous, FENCE_SECONDS)
            log.info("blocklisted our previous Ceph client %s (it did not shut down cleanly)", previous)
        except rados.Error as e:
            log.warning("cannot blocklist our previous Ceph client %s: %s", previous, e)
    write_atomic(note, mine + "\n", mode=0o644)
