"""Clean up storage work that died with this member (a crash, a SIGKILL, a power cut).

An image upload is staged to a file, recorded as an Image row with status "importing" and
worker = this member, streamed into an RBD image named `partial_*`, renamed to its final
name with a protected snapshot, then marked "ready". A custom volume (create, copy, backup
import) is recorded "creating" first and marked "ready" when its RBD volume is whole. Killed
anywhere in between, such work leaves some of: a staging file, a row still "importing" or
"creating" (an image's aliases), a `partial_*` image, an RBD volume half written, a finished
RBD image whose row was never marked. At member start-up none of this member's work begun
before the daemon started can still be running, so:

- an image whose RBD image and snapshot exist is marked "ready": the work was done;
- any other unfinished image or volume goes: its RBD image or volume, its row (and aliases);
  the user's operation already failed with the daemon, and a retry starts clean;
- `partial_*` images tagged with this member's storage owner (or untagged: killed before
  tagging) and staging files, older than this daemon, are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from microcloudd.api.errors import MicrocloudError, NotFound
from microcloudd.db.records import Image, ImageAlias, StoragePool, Volume
from microcloudd.drivers.storage import naming
from microcloudd.services.cloud import Cloud
from microcloudd.services.image_staging import staging_dir
from microcloudd.services.images import IMPORTING, READY
from microcloudd.services.volumes import CREATING

log = logging.getLogger(__name__)


@dataclass
class Cleanup:
    images_completed: list[str] = field(default_factory=list)  # fingerprints marked ready
    images_removed: list[str] = field(default_factory=list)  # rows (and RBD images) removed
    volumes_removed: list[str] = field(default_factory=list)  # "pool/name" rows and RBD volumes
    partials: list[str] = field(default_factory=list)  # "pool/partial_*" removed
    staged: list[str] = field(default_factory=list)  # staging files removed
    pending: list[str] = field(default_factory=list)  # could not be cleaned yet (see run)

    def empty(self) -> bool:
        return not (self.images_completed or self.images_removed or self.volumes_removed
                    or self.partials or self.staged)


async def clean_unfinished(cloud: Cloud, *, before: float) -> Cleanup:
    """Finish or undo this member's storage work begun before `before` (unix time)."""
    db, storage = cloud.need_db(), cloud.need_storage()
    member = cloud.settings.get("member", "")
    out = Cleanup()

    for path in await asyncio.to_thread(lambda: sorted(staging_dir(cloud.state_dir).iterdir())):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < before:
                path.unlink()
                out.staged.append(path.name)

    # One item that cannot be cleaned now is left `pending` for the next pass; it does not stop
    # the others. (The dead daemon's own watches are gone: the storage driver blocklisted its
    # Ceph client on connecting; a user without that right waits for the OSDs' 30 s timeout.)
    for img in db.find(Image, where=lambda i: i.status == IMPORTING and i.worker == member):
        with _pending(out, f"image {img.fingerprint[:12]}"):
            try:
                await storage.image_info(img.pool, img.fingerprint)
            except NotFound:
                await storage.delete_image(img.pool, img.fingerprint, if_exists=True)
                async with db.transaction() as txn:
                    for alias in db.find(ImageAlias, image=img.fingerprint):
                        txn.delete(ImageAlias, alias.name, if_exists=True)
                    txn.delete(Image, img.fingerprint, if_exists=True)
                out.images_removed.append(img.fingerprint)
                continue
            await db.update(Image, img.fingerprint, status=READY)
            out.images_completed.append(img.fingerprint)

    for vol in db.find(Volume, where=lambda v: v.status == CREATING and v.worker == member):
        with _pending(out, f"volume {vol.pool}/{vol.name}"):
            await storage.delete_volume(vol.pool, vol.name, if_exists=True)
            await db.delete(Volume, vol.row_key(), if_exists=True)
            out.volumes_removed.append(f"{vol.pool}/{vol.name}")

    for pool in db.all(StoragePool):
        with _pending(out, f"storage pool {pool.name}"):
            for obj in await storage.list_owned(pool.name):
                if naming.is_partial(obj.backend_name) and obj.owner in (storage.owner, "") \
                        and obj.created_at < before:
                    await storage.delete_partial(pool.name, obj.backend_name)
                    out.partials.append(f"{pool.name}/{obj.backend_name}")

    if not out.empty():
        log.info("storage work that died with this member: %d image imports finished, %d removed; "
                 "%d volumes removed; %d partial RBD images and %d staging files removed",
                 len(out.images_completed), len(out.images_removed), len(out.volumes_removed),
                 len(out.partials), len(out.staged))
    return out


@contextlib.contextmanager
def _pending(out: Cleanup, what: str) -> Iterator[None]:
    try:
        yield
    except MicrocloudError as e:
        out.pending.append(what)
        log.info("unfinished work on %s not cleaned up yet: %s", what, e)


async def run(cloud: Cloud, started: float, *, retry_every: float = 10.0, attempts: int = 12) -> None:
    """At member start, in the background: pass again while something is pending (about two
    minutes at most, then it waits for the next start); never stops the member coming up."""
    for attempt in range(attempts):
        try:
            out = await clean_unfinished(cloud, before=started)
        except MicrocloudError as e:
            log.warning("cleaning up unfinished storage work: %s", e)
        else:
            if not out.pending:
                return
        if attempt + 1 < attempts:
            await asyncio.sleep(retry_every)
    log.warning("unfinished storage work is still not cleaned up; the next start tries again")
