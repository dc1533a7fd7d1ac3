"""Clean up after image imports that died with this member (a crash, a SIGKILL, a power cut).

An upload is staged to a file, recorded as an Image row with status "importing" and
location = this member, streamed into an RBD image named `partial_*`, renamed to its final
name with a protected snapshot, then marked "ready". Killed anywhere in between, it leaves some
of: a staging file, an "importing" row (and its alias), a `partial_*` image, a finished RBD
image whose row still says "importing". At member start-up none of this member's imports can
still be running, so what is older than this daemon's start is finished or removed:

- a finished RBD image (its snapshot exists) makes the row "ready": the work was done;
- otherwise the row and its aliases go, with whatever RBD image the import had begun;
- `partial_*` images tagged with this member's storage owner (or untagged: killed before
  tagging), and staging files, are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from microcloudd.api.errors import MicrocloudError, NotFound
from microcloudd.db.records import Image, ImageAlias, StoragePool
from microcloudd.drivers.storage import naming
from microcloudd.services.cloud import Cloud
from microcloudd.services.image_staging import staging_dir
from microcloudd.services.images import IMPORTING, READY

log = logging.getLogger(__name__)


@dataclass
class ImportCleanup:
    completed: list[str] = field(default_factory=list)  # fingerprints marked ready
    forgotten: list[str] = field(default_factory=list)  # rows (and RBD images) removed
    partials: list[str] = field(default_factory=list)  # "pool/partial_*" removed
    staged: list[str] = field(default_factory=list)  # staging files removed


async def clean_dead_imports(cloud: Cloud, *, before: float) -> ImportCleanup:
    """Finish or remove this member's imports begun before `before` (unix time)."""
    db, storage = cloud.need_db(), cloud.need_storage()
    member = cloud.settings.get("member", "")
    out = ImportCleanup()

    for path in await asyncio.to_thread(lambda: sorted(staging_dir(cloud.state_dir).iterdir())):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < before:
                path.unlink()
                out.staged.append(path.name)

    stale = db.find(Image, where=lambda i: i.status == IMPORTING and i.location == member)
    for img in stale:
        try:
            await storage.image_info(img.pool, img.fingerprint)
        except NotFound:
            await storage.delete_image(img.pool, img.fingerprint, if_exists=True)
            async with db.transaction() as txn:
                for alias in db.find(ImageAlias, image=img.fingerprint):
                    txn.delete(ImageAlias, alias.name, if_exists=True)
                txn.delete(Image, img.fingerprint, if_exists=True)
            out.forgotten.append(img.fingerprint)
            continue
        await db.update(Image, img.fingerprint, status=READY)
        out.completed.append(img.fingerprint)

    for pool in db.all(StoragePool):
        for obj in await storage.list_owned(pool.name):
            if not naming.is_partial(obj.backend_name):
                continue
            if obj.owner in (storage.owner, "") and obj.created_at < before:
                await storage.delete_partial(pool.name, obj.backend_name)
                out.partials.append(f"{pool.name}/{obj.backend_name}")

    if stale or out.partials or out.staged:
        log.info("image imports that died with this member: %d finished, %d removed, %d partial RBD "
                 "images and %d staging files removed", len(out.completed), len(out.forgotten),
                 len(out.partials), len(out.staged))
    return out


async def run_once(cloud: Cloud, started: float) -> None:
    """At member start: best effort, never stops the member from coming up."""
    try:
        await clean_dead_imports(cloud, before=started)
    except MicrocloudError as e:
        log.warning("cleaning up dead image imports: %s", e)

