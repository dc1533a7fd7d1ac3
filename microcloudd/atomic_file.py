"""Replacing a file whole: a reader (or a daemon restarted after a crash) sees the old
contents or the new ones, never a half-written file.

The new contents go to a temporary file of a unique name beside the target (same filesystem,
so the rename is atomic; unique, so two writers never share one), with its mode set before
the rename; the temporary file is removed if anything fails. `durable` also fsyncs it first:
for records a restart must find (the power may go right after the rename).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o600, durable: bool = False) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            os.fchmod(f.fileno(), mode)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
