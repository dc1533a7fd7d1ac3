"""Move bytes into RBD images: a raw file or a backup's extents through windowed async
writes (skipping zeros: a new image reads as zeros already), a qcow2 file through
`qemu-img convert`. Blocking; run from the driver's thread pool."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import rbd

from microcloudd.api.errors import InvalidArgument, Unavailable
from microcloudd.drivers.storage.rbd_errors import to_error
from microcloudd.drivers.storage.rbd_session import Session, SyncProgress

CHUNK = 4 << 20  # one RBD object
WINDOW = 8  # writes in flight
_ZERO = bytes(CHUNK)


class AioWriter:
    """Up to WINDOW writes in flight to one open image; `close()` waits, flushes and raises
    the first failure (as our error, worded with `what`)."""

    def __init__(self, image: rbd.Image, what: str) -> None:
        self._image, self._what = image, what
        self._slots = threading.Semaphore(WINDOW)
        self._errors: list[int] = []

    def _done(self, completion: Any) -> None:
        rv = completion.get_return_value()
        if rv < 0:
            self._errors.append(rv)
        self._slots.release()

    def _raise_first(self) -> None:
        if self._errors:
            rv = self._errors[0]
            raise to_error(OSError(-rv, os.strerror(-rv)), self._what)

    def write(self, data: bytes, offset: int) -> None:
        if data == _ZERO[:len(data)]:
            return
        self._slots.acquire()
        self._raise_first()
        self._image.aio_write(data, offset, self._done)

    def close(self) -> None:
        for _ in range(WINDOW):
            self._slots.acquire()
        for _ in range(WINDOW):
            self._slots.release()
        self._raise_first()
        self._image.flush()


def write_extents(s: Session, image: rbd.Image, extents: Iterable[tuple[int, bytes]], total: int,
                  progress: SyncProgress, what: str) -> None:
    writer = AioWriter(image, what)
    try:
        for offset, data in extents:
            s.check_cancelled()
            for i in range(0, len(data), CHUNK):
                writer.write(data[i:i + CHUNK], offset + i)
            progress(min(total, offset + len(data)), total)
    finally:
        writer.close()


def stream_raw(s: Session, image: rbd.Image, path: Path, progress: SyncProgress, what: str) -> str:
    """Copy a raw file into the image; returns the file's sha256."""
    sha = hashlib.sha256()
    size = path.stat().st_size

    def chunks() -> Iterable[tuple[int, bytes]]:
        with open(path, "rb") as f:
            offset = 0
            while data := f.read(CHUNK):
                sha.update(data)
                yield offset, data
                offset += len(data)

    write_extents(s, image, chunks(), size, progress, what)
    return sha.hexdigest()


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            sha.update(data)
    return sha.hexdigest()


def _rbd_target(s: Session, pool: str, name: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(":", "\\:")
    return f"rbd:{esc(pool)}/{esc(name)}:id={esc(s.user)}:conf={esc(str(s.conf_path))}" \
           f":keyring={esc(str(s.keyring_path))}"


_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def convert_qcow2(s: Session, path: Path, pool: str, name: str, virtual_size: int,
                  progress: SyncProgress, what: str) -> str:
    """qemu-img converts into the (existing, empty) image; the file is hashed meanwhile.
    Returns the file's sha256."""
    argv = ["qemu-img", "convert", "-p", "-n", "--target-is-zero", "-W", "-f", "qcow2", "-O", "raw",
            str(path), _rbd_target(s, pool, name)]
    with ThreadPoolExecutor(1) as pool_ex:
        digest = pool_ex.submit(file_sha256, path)
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env={**os.environ, "LC_ALL": "C"})
        except FileNotFoundError as e:
            raise Unavailable("qemu-img is not installed (needed for qcow2 images)") from e
        assert proc.stdout is not None and proc.stderr is not None
        try:
            while chunk := proc.stdout.read1(256) if hasattr(proc.stdout, "read1") else proc.stdout.read(256):
                if s.cancel.is_set():
                    proc.kill()
                    break
                for m in _PERCENT.finditer(chunk):
                    progress(int(float(m.group(1)) * virtual_size / 100), virtual_size)
            err = proc.stderr.read().decode(errors="replace")
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        s.check_cancelled()
        if rc != 0:
            if "Disk quota exceeded" in err:
                raise to_error(OSError(122, err), what)
            raise InvalidArgument(f"{what}: converting the qcow2 image failed: {err.strip()[-500:]}")
        return digest.result()
