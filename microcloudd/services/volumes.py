"""Custom volumes: create (empty or a copy), resize, delete, snapshots, restore, export to
and import from a backup file, and the attach marks instances set.

Each change validates first (4xx before any work), records the desired state in the
database, then realises it with the driver under a Reverter; driver calls are re-runnable
(`may_exist`/`if_exists`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from microcloudd import faults
from microcloudd.api import storage as api
from microcloudd.api.errors import AlreadyExists, InUse, InvalidArgument, NotFound, QuotaExceeded
from microcloudd.api.names import check_name
from microcloudd.api.server import Operation
from microcloudd.db.records import Volume, VolumeSnapshot
from microcloudd.events import now
from microcloudd.operations import OperationContext
from microcloudd.services import storage_pools
from microcloudd.services.cloud import Cloud
from microcloudd.services.image_staging import Staged, new_path
from microcloudd.services.reverter import Reverter

CUSTOM = "custom"
CREATING, READY = "creating", "ready"  # Volume.status
CONFIG_KEYS = {"size"}


def _key(pool: str, name: str) -> tuple[str, str, str]:
    return (pool, CUSTOM, name)


def _url(pool: str, name: str) -> str:
    return f"/1.0/storage-pools/{pool}/volumes/custom/{name}"


def get_record(cloud: Cloud, pool: str, name: str, *, ready: bool = False) -> Volume:
    """The volume's row; with `ready`, refused while its create, copy or import still runs."""
    storage_pools.get_record(cloud, pool)
    rec = cloud.need_db().get_or_none(Volume, _key(pool, name))
    if rec is None:
        raise NotFound(f"Volume {name!r} not found in storage pool {pool!r}")
    if ready and rec.status != READY:
        raise InvalidArgument(f"Volume {name!r} in storage pool {pool!r} is still being created; wait for "
                              "its operation (`microcloud operation list`) and try again")
    return rec


def to_api(rec: Volume) -> api.StorageVolume:
    return api.StorageVolume(name=rec.name, type=rec.type, description=rec.description,
                             config={**rec.config, "size": str(rec.size)}, content_type=rec.content_type,
                             location=rec.location,
                             used_by=[f"/1.0/instances/{i}" for i in sorted(rec.used_by)],
                             created_at=rec.created_at, pool=rec.pool)


def list_volumes(cloud: Cloud, pool: str, *, custom_only: bool = True) -> list[Volume]:
    storage_pools.get_record(cloud, pool)
    found = cloud.need_db().find(Volume, pool=pool)
    if custom_only:
        found = [v for v in found if v.type == CUSTOM]
    return sorted(found, key=lambda v: (v.type, v.name))


def url_of(rec: Volume) -> str:
    return f"/1.0/storage-pools/{rec.pool}/volumes/{rec.type}/{rec.name}"


def _check_new(cloud: Cloud, pool: str, name: str) -> None:
    check_name("volume", name)
    storage_pools.get_record(cloud, pool)
    cloud.need_storage()
    if cloud.need_db().get_or_none(Volume, _key(pool, name)) is not None:
        raise AlreadyExists(f"Volume {name!r} already exists in storage pool {pool!r}")


async def _check_room(cloud: Cloud, pool: str, size: int, what: str) -> None:
    info = await cloud.need_storage().pool_info(pool)
    if info.quota_bytes and info.used_bytes + size > info.quota_bytes:
        mib = 1 << 20
        raise QuotaExceeded(f"{what} of {size / mib:.0f} MiB does not fit in storage pool {pool!r}: "
                            f"{max(0, info.quota_bytes - info.used_bytes) / mib:.0f} MiB left of its "
                            f"{info.quota_bytes / mib:.0f} MiB quota")


def _config_size(config: dict[str, str]) -> int | None:
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise InvalidArgument(f"Unknown volume config key(s) {unknown}; known: {sorted(CONFIG_KEYS)}")
    if "size" not in config:
        return None
    size = api.parse_size(config["size"], "volume size")
    if size <= 0 or size % 512:
        raise InvalidArgument(f"Invalid volume size {config['size']!r}: "
                              "must be a positive multiple of 512 bytes")
    return size


async def _ready(cloud: Cloud, pool: str, name: str) -> None:
    await cloud.need_db().update(Volume, _key(pool, name), status=READY)


async def _record(cloud: Cloud, rec: Volume, revert: Reverter) -> None:
    db = cloud.need_db()
    await db.insert(rec)
    revert.add(lambda: db.delete(Volume, rec.row_key(), if_exists=True), "volume record")


# -- create / copy ------------------------------------------------------------------------

async def start_create(cloud: Cloud, pool: str, body: api.StorageVolumesPost) -> Operation:
    if body.type != CUSTOM:
        raise InvalidArgument(f"Only custom volumes can be created here, not {body.type!r}")
    if body.content_type != "block":
        raise InvalidArgument(f"Unsupported content type {body.content_type!r}: only \"block\"")
    _check_new(cloud, pool, body.name)
    size = _config_size(body.config)
    driver = cloud.need_storage()
    if body.source is not None:
        if body.source.type != "copy":
            raise InvalidArgument(f"Unsupported volume source type {body.source.type!r}: only \"copy\"")
        src_pool = body.source.pool or pool
        src = get_record(cloud, src_pool, body.source.name, ready=True)
        if size is not None and size != src.size:
            raise InvalidArgument("A copy has the size of its source; resize it afterwards")
        size = src.size
    elif size is None:
        raise InvalidArgument("A new volume needs config.size (e.g. \"10GiB\")")
    await _check_room(cloud, pool, size, f"Volume {body.name!r}")
    rec = Volume(pool=pool, name=body.name, size=size, description=body.description,
                 location="", created_at=now(), status=CREATING, worker=cloud.settings.get("member", ""))
    revert = Reverter()
    await _record(cloud, rec, revert)

    async def work(op: OperationContext) -> dict[str, Any]:
        async with revert:
            if body.source is not None:
                def progress(done: int, total: int) -> None:
                    op.progress(copy_progress=f"{100 * done // max(1, total)}%")

                await driver.copy_volume(src_pool, body.source.name, body.name, target_pool=pool,
                                         progress=progress)
            else:
                await driver.create_volume(pool, body.name, size, may_exist=True)
            await _ready(cloud, pool, body.name)
            revert.success()
        cloud.events.lifecycle("storage-volume-created", _url(pool, body.name))
        return {"size": size}

    return cloud.operations.start("Copying volume" if body.source else "Creating volume", work,
                                  resources={"storage_volumes": [_url(pool, body.name)]})


# -- change -------------------------------------------------------------------------------

async def update(cloud: Cloud, pool: str, name: str, body: api.StorageVolumePut, *, force: bool,
                 replace: bool) -> Volume:
    rec = get_record(cloud, pool, name, ready=True)
    db, driver = cloud.need_db(), cloud.need_storage()
    if body.restore:
        snap = db.get_or_none(VolumeSnapshot, (_key(pool, name), body.restore))
        if snap is None:
            raise NotFound(f"Snapshot {body.restore!r} of volume {name!r} not found")
        await driver.restore_snapshot(pool, name, body.restore)
        cloud.events.lifecycle("storage-volume-restored", _url(pool, name), snapshot=body.restore)
        rec = await db.update(Volume, rec.row_key(), size=(await driver.volume_info(pool, name)).size)
    size = _config_size(body.config) if body.config is not None else None
    changes: dict[str, Any] = {}
    if size is not None and size != rec.size:
        if size < rec.size and not force:
            raise InvalidArgument(f"Shrinking volume {name!r} from {rec.size} to {size} bytes destroys the "
                                  "data past the new end; use force to do it anyway")
        if size > rec.size:
            await _check_room(cloud, pool, size - rec.size, f"Growing volume {name!r}")
        info = await driver.resize_volume(pool, name, size, force=force)
        changes["size"] = info.size
    if body.description is not None or (replace and not body.restore):
        changes["description"] = body.description or ""
    if changes:
        rec = await db.update(Volume, rec.row_key(), **changes)
        cloud.events.lifecycle("storage-volume-updated", _url(pool, name))
    return rec


async def delete(cloud: Cloud, pool: str, name: str) -> None:
    rec = get_record(cloud, pool, name, ready=True)
    if rec.used_by:
        raise InUse(f"Volume {name!r} is attached to instance(s) {', '.join(sorted(rec.used_by))}; "
                    "detach it first", instances=sorted(rec.used_by))
    await cloud.need_storage().delete_volume(pool, name, if_exists=True)
    db = cloud.need_db()
    async with db.transaction() as txn:
        for s in db.find(VolumeSnapshot, volume=rec.row_key()):
            txn.delete(VolumeSnapshot, s.row_key(), if_exists=True)
        txn.delete(Volume, rec.row_key(), if_exists=True)
    cloud.events.lifecycle("storage-volume-deleted", _url(pool, name))


# -- attach marks (for the instances service) ---------------------------------------------

async def attach(cloud: Cloud, pool: str, name: str, instance: str) -> Volume:
    """Mark the volume used by `instance` (the compute side attaches the disk); idempotent."""
    rec = get_record(cloud, pool, name, ready=True)
    await cloud.need_storage().set_attached(pool, name, instance, True)
    if instance not in rec.used_by:
        rec = await cloud.need_db().update(Volume, rec.row_key(), used_by=sorted({*rec.used_by, instance}))
    return rec


async def detach(cloud: Cloud, pool: str, name: str, instance: str) -> Volume:
    rec = get_record(cloud, pool, name)
    await cloud.need_storage().set_attached(pool, name, instance, False)
    if instance in rec.used_by:
        rec = await cloud.need_db().update(Volume, rec.row_key(),
                                           used_by=[i for i in rec.used_by if i != instance])
    return rec


# -- snapshots ----------------------------------------------------------------------------

def snapshot_to_api(rec: VolumeSnapshot, size: int) -> api.StorageVolumeSnapshot:
    return api.StorageVolumeSnapshot(name=rec.name, description=rec.description,
                                     config={**rec.config, "size": str(size)}, created_at=rec.created_at)


def list_snapshots(cloud: Cloud, pool: str, name: str) -> list[VolumeSnapshot]:
    rec = get_record(cloud, pool, name)
    return sorted(cloud.need_db().find(VolumeSnapshot, volume=rec.row_key()), key=lambda s: s.created_at)


def get_snapshot(cloud: Cloud, pool: str, name: str, snapshot: str) -> VolumeSnapshot:
    rec = get_record(cloud, pool, name)
    snap = cloud.need_db().get_or_none(VolumeSnapshot, (rec.row_key(), snapshot))
    if snap is None:
        raise NotFound(f"Snapshot {snapshot!r} of volume {name!r} not found")
    return snap


async def start_snapshot(cloud: Cloud, pool: str, name: str, body: api.SnapshotsPost) -> Operation:
    rec = get_record(cloud, pool, name, ready=True)
    check_name("snapshot", body.name)
    db, driver = cloud.need_db(), cloud.need_storage()
    key = (rec.row_key(), body.name)
    if db.get_or_none(VolumeSnapshot, key) is not None:
        raise AlreadyExists(f"Snapshot {body.name!r} of volume {name!r} already exists")
    await db.insert(VolumeSnapshot(volume=rec.row_key(), name=body.name, description=body.description,
                                   config={"size": str(rec.size)}, created_at=now()))
    revert = Reverter()
    revert.add(lambda: db.delete(VolumeSnapshot, key, if_exists=True), "snapshot record")

    async def work(op: OperationContext) -> None:
        async with revert:
            await driver.create_snapshot(pool, name, body.name, may_exist=True)
            revert.success()
        cloud.events.lifecycle("storage-volume-snapshot-created", f"{_url(pool, name)}/snapshots/{body.name}")

    return cloud.operations.start("Snapshotting volume", work,
                                  resources={"storage_volumes": [_url(pool, name)]})


async def start_delete_snapshot(cloud: Cloud, pool: str, name: str, snapshot: str) -> Operation:
    snap = get_snapshot(cloud, pool, name, snapshot)
    db, driver = cloud.need_db(), cloud.need_storage()

    async def work(op: OperationContext) -> None:
        await driver.delete_snapshot(pool, name, snapshot, if_exists=True)
        await db.delete(VolumeSnapshot, snap.row_key(), if_exists=True)
        cloud.events.lifecycle("storage-volume-snapshot-deleted", f"{_url(pool, name)}/snapshots/{snapshot}")

    return cloud.operations.start("Deleting volume snapshot", work,
                                  resources={"storage_volumes": [_url(pool, name)]})


# -- backups ------------------------------------------------------------------------------

async def export(cloud: Cloud, pool: str, name: str) -> Path:
    """Write a backup file of the volume under the staging dir; the caller streams and removes it."""
    get_record(cloud, pool, name, ready=True)
    target = new_path(cloud.state_dir, "backup")
    try:
        await cloud.need_storage().export_volume(pool, name, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def check_import(cloud: Cloud, pool: str, name: str) -> None:
    _check_new(cloud, pool, name)


async def start_import(cloud: Cloud, pool: str, name: str, staged: Staged) -> Operation:
    """Create the volume from a staged backup file, as an operation."""
    try:
        _check_new(cloud, pool, name)
        revert = Reverter()
        await _record(cloud, Volume(pool=pool, name=name, size=0, created_at=now(), status=CREATING,
                                    worker=cloud.settings.get("member", "")), revert)
    except BaseException:
        staged.remove()
        raise
    db, driver = cloud.need_db(), cloud.need_storage()

    async def work(op: OperationContext) -> dict[str, Any]:
        try:
            async with revert:
                def progress(done: int, total: int) -> None:
                    op.progress(import_progress=f"{100 * done // max(1, total)}%")

                info = await driver.import_volume(pool, name, staged.path, progress=progress)
                revert.add(lambda: driver.delete_volume(pool, name, if_exists=True), "RBD volume")
                faults.point("volume.imported")
                await db.update(Volume, _key(pool, name), size=info.size, status=READY)
                revert.success()
        finally:
            staged.remove()
        cloud.events.lifecycle("storage-volume-created", _url(pool, name))
        return {"size": info.size}

    return cloud.operations.start("Importing volume", work, resources={"storage_volumes": [_url(pool, name)]})
