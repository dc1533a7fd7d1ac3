"""Staging of uploaded files (image uploads and volume backups) under the state dir.

The request body is written in batches off the event loop while its sha256 is computed, so
the fingerprint is known (and a duplicate refused with a 409) before any import starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from microcloudd.api.errors import InvalidArgument, QuotaExceeded

_BATCH = 4 << 20  # bytes gathered on the loop before one write in a thread


@dataclass
class Staged:
    path: Path
    sha256: str
    size: int

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def staging_dir(state_dir: Path) -> Path:
    d = state_dir / "staging"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def new_path(state_dir: Path, suffix: str) -> Path:
    return staging_dir(state_dir) / f"{uuid.uuid4().hex}.{suffix}"


async def stage(state_dir: Path, chunks: AsyncIterator[bytes], suffix: str = "upload") -> Staged:
    """Write `chunks` to a new staging file; removes it again if anything fails."""
    path = new_path(state_dir, suffix)
    sha = hashlib.sha256()
    size = 0
    f = await asyncio.to_thread(open, path, "wb")

    def write(data: bytes) -> None:
        f.write(data)
        sha.update(data)

    try:
        batch: list[bytes] = []
        pending = 0
        async for chunk in chunks:
            batch.append(chunk)
            pending += len(chunk)
            if pending >= _BATCH:
                await asyncio.to_thread(write, b"".join(batch))
                size += pending
                batch, pending = [], 0
        if batch:
            await asyncio.to_thread(write, b"".join(batch))
            size += pending
        await asyncio.to_thread(f.close)
    except OSError as e:
        f.close()
        path.unlink(missing_ok=True)
        raise QuotaExceeded(f"Cannot stage the upload under {path.parent}: {e.strerror}") from e
    except BaseException:
        f.close()
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise InvalidArgument("The upload is empty: send the file as the request body")
    return Staged(path, sha.hexdigest(), size)
