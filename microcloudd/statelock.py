"""One daemon per state directory: an flock'ed lock file holding the owner's pid."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from microcloudd.api.errors import Conflict


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "microcloudd.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode().strip() or "unknown"
            os.close(fd)
            raise Conflict(
                f"another microcloudd (pid {owner}) is already running on {self.path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless, reused)
            self._fd = None
