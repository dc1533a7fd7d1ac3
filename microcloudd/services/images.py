"""Images: upload (staged, checked, then imported into RBD as an operation), lookup by alias
or fingerprint, aliases, delete; and what an instance needs to clone its root disk.

    image = await images.resolve(cloud, "debian")        # alias, fingerprint or unique prefix
    src = images.root_disk_source(image)                 # pool, RBD image, protected snapshot
    disk = await images.clone_root_disk(cloud, "web1", image, size=10 << 30)
"""

from __future__ import annotations

import asyncio
import platform
import re
from dataclasses import dataclass
from typing import Any

from microcloudd import faults
from microcloudd.api import images as api
from microcloudd.api.errors import (
    AlreadyExists,
    Internal,
    InUse,
    InvalidArgument,
    MicrocloudError,
    NotFound,
    QuotaExceeded,
)
from microcloudd.api.server import Operation
from microcloudd.db.records import Image, ImageAlias
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.base import VolumeInfo, VolumeType
from microcloudd.drivers.storage.disk_format import inspect
from microcloudd.events import now
from microcloudd.operations import OperationContext
from microcloudd.services import storage_pools
from microcloudd.services.cloud import Cloud
from microcloudd.services.image_staging import Staged
from microcloudd.services.reverter import Reverter

IMPORTING, READY = "importing", "ready"  # Image.status

_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{1,64}$")


def check_alias_name(name: str) -> str:
    if not isinstance(name, str) or not _ALIAS.match(name):
        raise InvalidArgument(f"Invalid image alias {name!r}: use 1 to 64 letters, digits, '.', '_' "
                              "and '-', starting with a letter or digit")
    return name


def _arch() -> str:
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine())


# -- lookup -------------------------------------------------------------------------------

def get_alias(cloud: Cloud, name: str) -> ImageAlias:
    rec = cloud.need_db().get_or_none(ImageAlias, name)
    if rec is None:
        raise NotFound(f"Image alias {name!r} not found")
    return rec


def resolve_now(cloud: Cloud, ref: str) -> Image:
    """The image `ref` names: an alias, a full fingerprint or a unique fingerprint prefix."""
    db = cloud.need_db()
    alias = db.get_or_none(ImageAlias, ref)
    if alias is not None:
        return db.get(Image, alias.image)
    ref_l = ref.lower()
    if _HEX.match(ref_l):
        exact = db.get_or_none(Image, ref_l)
        if exact is not None:
            return exact
        found = db.find(Image, where=lambda i: i.fingerprint.startswith(ref_l))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidArgument(f"Image fingerprint prefix {ref!r} is ambiguous: it matches "
                                  f"{', '.join(i.fingerprint[:12] for i in found[:5])}; give more digits")
    raise NotFound(f"Image {ref!r} not found (no alias, fingerprint or fingerprint prefix matches it)")


async def resolve(cloud: Cloud, ref: str) -> Image:
    return resolve_now(cloud, ref)


@dataclass(frozen=True)
class RootDiskSource:
    """Where an instance root disk is cloned from (RBD `pool/backend_name@snapshot`)."""

    pool: str
    fingerprint: str
    backend_name: str
    snapshot: str


def root_disk_source(image: Image) -> RootDiskSource:
    return RootDiskSource(image.pool, image.fingerprint,
                          naming.backend_name(VolumeType.IMAGE, image.fingerprint), naming.IMAGE_SNAPSHOT)


def require_ready(image: Image) -> Image:
    if image.status != READY:
        raise InvalidArgument(f"Image {image.fingerprint[:12]} is still being imported; wait for its "
                              "operation (`microcloud operation list`) and try again")
    return image


async def clone_root_disk(cloud: Cloud, instance: str, image: Image, *, size: int = 0) -> VolumeInfo:
    """The instance's root disk as a copy-on-write clone of the image (re-runnable)."""
    require_ready(image)
    return await cloud.need_storage().create_root_disk(image.pool, instance, image.fingerprint, size=size,
                                                       may_exist=True)


def to_api(cloud: Cloud, rec: Image) -> api.Image:
    aliases = sorted(cloud.need_db().find(ImageAlias, image=rec.fingerprint), key=lambda a: a.name)
    props = dict(rec.properties)
    return api.Image(
        fingerprint=rec.fingerprint, filename=rec.filename, size=rec.size,
        architecture=props.get("architecture", _arch()), properties=props,
        aliases=[api.ImageAliasRef(name=a.name, description=a.description) for a in aliases],
        public=rec.public, created_at=rec.created_at, uploaded_at=rec.created_at, pool=rec.pool,
        format=rec.format, virtual_size=int(props.get("volatile.virtual_size", "0") or 0),
    )


def alias_to_api(rec: ImageAlias) -> api.ImageAlias:
    return api.ImageAlias(name=rec.name, description=rec.description, target=rec.image)


def list_images(cloud: Cloud) -> list[Image]:
    return sorted(cloud.need_db().all(Image), key=lambda i: i.created_at)


# -- import -------------------------------------------------------------------------------

@dataclass
class ImportRequest:
    filename: str = ""
    public: bool = False
    properties: dict[str, str] | None = None
    pool: str = ""  # the member's default pool when empty
    alias: str = ""


def check_import(cloud: Cloud, req: ImportRequest) -> None:
    """What can be refused before the body is read: the pool and the alias."""
    req.pool = req.pool or cloud.default_pool
    storage_pools.get_record(cloud, req.pool)
    cloud.need_storage()
    if req.alias:
        check_alias_name(req.alias)
        if cloud.need_db().get_or_none(ImageAlias, req.alias) is not None:
            raise AlreadyExists(f"Image alias {req.alias!r} already exists")


async def start_import(cloud: Cloud, staged: Staged, req: ImportRequest) -> Operation:
    """Validate the staged file (format, fingerprint, room), record the image, then import it
    into RBD as an operation. The staged file is removed in every case."""
    try:
        check_import(cloud, req)
        db, driver = cloud.need_db(), cloud.need_storage()
        fp = staged.sha256
        if db.get_or_none(Image, fp) is not None:
            raise AlreadyExists(f"Image {fp[:12]} already exists (same sha256)", fingerprint=fp)
        try:
            disk = await asyncio.to_thread(inspect, staged.path)
        except MicrocloudError as e:  # name the user's file, not our staging path
            name = repr(req.filename) if req.filename else "The upload"
            raise type(e)(e.message.replace(str(staged.path), name), **e.details) from None
        try:
            await driver.image_info(req.pool, fp)
            raise AlreadyExists(f"Image {fp[:12]} already exists in storage pool {req.pool!r}",
                                fingerprint=fp)
        except NotFound:
            pass
        await _check_room(cloud, req.pool, staged)
        props = {**(req.properties or {}), "volatile.virtual_size": str(disk.virtual_size)}
        record = Image(fingerprint=fp, filename=req.filename or staged.path.name, size=staged.size,
                       format=disk.format.value, pool=req.pool, properties=props, public=req.public,
                       created_at=now(), status=IMPORTING, worker=cloud.settings.get("member", ""))
        async with db.transaction() as txn:  # desired state first; undone if the import fails
            txn.insert(record)
            if req.alias:
                txn.insert(ImageAlias(name=req.alias, image=fp))
    except BaseException:
        staged.remove()
        raise

    async def work(op: OperationContext) -> dict[str, Any]:
        try:
            async with Reverter() as revert:
                revert.add(lambda: _forget(cloud, fp), "image records")

                def progress(done: int, total: int) -> None:
                    pct = 100 * done // max(1, total)
                    op.progress(download_progress=f"import: {pct}%", processed=done, total=total)

                info = await driver.import_image(req.pool, staged.path, progress=progress)
                revert.add(lambda: driver.delete_image(req.pool, info.fingerprint, if_exists=True),
                           "RBD image")
                if info.fingerprint != fp:
                    raise Internal(f"Image fingerprint changed during import ({fp[:12]} → "
                                   f"{info.fingerprint[:12]})")
                faults.point("image.imported")
                await db.update(Image, fp, status=READY)
                revert.success()
        finally:
            staged.remove()
        cloud.events.lifecycle("image-created", f"/1.0/images/{fp}")
        return {"fingerprint": fp, "size": staged.size}

    return cloud.operations.start("Importing image", work, resources={"images": [f"/1.0/images/{fp}"]})


async def _check_room(cloud: Cloud, pool: str, staged: Staged) -> None:
    info = await cloud.need_storage().pool_info(pool)
    if info.quota_bytes:
        needed = (await asyncio.to_thread(staged.path.stat)).st_blocks * 512
        if info.used_bytes + needed > info.quota_bytes:
            mib = 1 << 20
            raise QuotaExceeded(
                f"The image needs about {needed / mib:.0f} MiB but storage pool {pool!r} has only "
                f"{max(0, info.quota_bytes - info.used_bytes) / mib:.0f} MiB left of its "
                f"{info.quota_bytes / mib:.0f} MiB quota")


async def _forget(cloud: Cloud, fp: str) -> None:
    db = cloud.need_db()
    async with db.transaction() as txn:
        for a in db.find(ImageAlias, image=fp):
            txn.delete(ImageAlias, a.name, if_exists=True)
        txn.delete(Image, fp, if_exists=True)


# -- change and delete --------------------------------------------------------------------

async def update(cloud: Cloud, ref: str, body: api.ImagePut, *, replace: bool) -> Image:
    rec = resolve_now(cloud, ref)
    changes: dict[str, Any] = {}
    volatile = {k: v for k, v in rec.properties.items() if k.startswith("volatile.")}
    if body.properties is not None or replace:
        user = {k: v for k, v in (body.properties or {}).items() if not k.startswith("volatile.")}
        changes["properties"] = {**user, **volatile}
    if body.public is not None or replace:
        changes["public"] = bool(body.public)
    if changes:
        rec = await cloud.need_db().update(Image, rec.fingerprint, **changes)
    cloud.events.lifecycle("image-updated", f"/1.0/images/{rec.fingerprint}")
    return rec


async def start_delete(cloud: Cloud, ref: str, *, force: bool) -> Operation:
    rec = resolve_now(cloud, ref)
    driver = cloud.need_storage()
    if not force:  # refuse up front rather than in a failed operation
        try:
            info = await driver.image_info(rec.pool, rec.fingerprint)
        except NotFound:
            info = None
        if info is not None and info.clones:
            names = ", ".join(c.split("/", 1)[-1] for c in info.clones[:5])
            raise InUse(f"Image {rec.fingerprint[:12]} is used by {len(info.clones)} disk(s) cloned from it "
                        f"({names}); delete them first, or use --force to make them independent copies",
                        clones=list(info.clones))

    async def work(op: OperationContext) -> None:
        await driver.delete_image(rec.pool, rec.fingerprint, force=force, if_exists=True)
        await _forget(cloud, rec.fingerprint)
        cloud.events.lifecycle("image-deleted", f"/1.0/images/{rec.fingerprint}")

    return cloud.operations.start("Deleting image", work,
                                  resources={"images": [f"/1.0/images/{rec.fingerprint}"]})


# -- aliases ------------------------------------------------------------------------------

async def create_alias(cloud: Cloud, body: api.ImageAliasesPost) -> ImageAlias:
    check_alias_name(body.name)
    image = resolve_now(cloud, body.target)
    rec = await cloud.need_db().insert(ImageAlias(name=body.name, image=image.fingerprint,
                                                  description=body.description))
    cloud.events.lifecycle("image-alias-created", f"/1.0/images/aliases/{body.name}",
                           target=image.fingerprint)
    return rec


async def update_alias(cloud: Cloud, name: str, body: api.ImageAliasPut, *, replace: bool) -> ImageAlias:
    rec = get_alias(cloud, name)
    if replace and body.target is None:
        raise InvalidArgument("PUT of an image alias needs its target")
    changes: dict[str, Any] = {}
    if body.target is not None:
        changes["image"] = resolve_now(cloud, body.target).fingerprint
    if body.description is not None or replace:
        changes["description"] = body.description or ""
    if changes:
        rec = await cloud.need_db().update(ImageAlias, name, **changes)
    cloud.events.lifecycle("image-alias-updated", f"/1.0/images/aliases/{name}")
    return rec


async def delete_alias(cloud: Cloud, name: str) -> None:
    get_alias(cloud, name)
    await cloud.need_db().delete(ImageAlias, name, if_exists=True)
    cloud.events.lifecycle("image-alias-deleted", f"/1.0/images/aliases/{name}")
