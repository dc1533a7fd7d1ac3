"""Storage pools: a `StoragePool` row (desired state) realised as an RBD pool.

Config keys: `quota` (max bytes, e.g. "10GiB"; "0" for none). Replication follows the
number of OSD hosts (the driver decides it at creation).
"""

from __future__ import annotations

from typing import Any

from microcloudd.api import storage as api
from microcloudd.api.errors import AlreadyExists, InUse, InvalidArgument, MicrocloudError, NotFound
from microcloudd.api.names import check_name
from microcloudd.db.records import Image, StoragePool, Volume
from microcloudd.services import cloud as cloud_mod
from microcloudd.services.cloud import Cloud
from microcloudd.services.reverter import Reverter

DEFAULT_POOL = cloud_mod.DEFAULT_POOL
CONFIG_KEYS = {"quota"}


def check_config(config: dict[str, str]) -> int:
    """Validate a pool config; returns the quota in bytes (0 = none)."""
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise InvalidArgument(f"Unknown storage pool config key(s) {unknown}; known: {sorted(CONFIG_KEYS)}")
    return api.parse_size(config.get("quota", "0"), "quota")


def get_record(cloud: Cloud, name: str) -> StoragePool:
    rec = cloud.need_db().get_or_none(StoragePool, name)
    if rec is None:
        raise NotFound(f"Storage pool {name!r} not found")
    return rec


def used_by(cloud: Cloud, name: str) -> list[str]:
    db = cloud.need_db()
    urls = [f"/1.0/images/{i.fingerprint}" for i in db.find(Image, pool=name)]
    for v in db.find(Volume, pool=name):
        if v.type == "custom":
            urls.append(f"/1.0/storage-pools/{name}/volumes/custom/{v.name}")
        else:
            urls.append(f"/1.0/instances/{v.name}")
    return sorted(urls)


def to_api(cloud: Cloud, rec: StoragePool) -> api.StoragePool:
    return api.StoragePool(name=rec.name, driver=rec.driver, description=rec.description,
                           config=dict(rec.config), status=rec.status, locations=[cloud.server_name],
                           used_by=used_by(cloud, rec.name))


def list_pools(cloud: Cloud) -> list[StoragePool]:
    return sorted(cloud.need_db().all(StoragePool), key=lambda p: p.name)


async def _realise(cloud: Cloud, name: str, quota: int) -> bool:
    """Make the RBD pool exist with this quota; returns True if this call created it.
    Re-runnable: a pool we created earlier (our owner tag) is taken as it is."""
    driver = cloud.need_storage()
    try:
        await driver.create_pool(name, quota_bytes=quota)
        return True
    except AlreadyExists:
        info = await driver.pool_info(name)
        if info.owner != driver.owner:
            raise AlreadyExists(f"A Ceph pool named {name!r} already exists and was not created by this "
                                "microcloud; choose another name") from None
        await driver.set_pool_quota(name, max_bytes=quota)
        return False


async def create_pool(cloud: Cloud, body: api.StoragePoolsPost) -> StoragePool:
    check_name("storage pool", body.name)
    if body.driver != "ceph":
        raise InvalidArgument(f"Unsupported storage driver {body.driver!r}: only \"ceph\" is available")
    quota = check_config(body.config)
    db, driver = cloud.need_db(), cloud.need_storage()
    if db.get_or_none(StoragePool, body.name) is not None:
        raise AlreadyExists(f"Storage pool {body.name!r} already exists")
    async with Reverter() as revert:
        await db.insert(StoragePool(name=body.name, driver="ceph", config=dict(body.config), status="Pending",
                                    description=body.description))
        revert.add(lambda: db.delete(StoragePool, body.name, if_exists=True), "pool record")
        if await _realise(cloud, body.name, quota):
            revert.add(lambda: driver.delete_pool(body.name, if_exists=True), "RBD pool")
        rec = await db.update(StoragePool, body.name, status="Created")
        revert.success()
    cloud.events.lifecycle("storage-pool-created", f"/1.0/storage-pools/{body.name}")
    return rec


async def ensure_default_pool(cloud: Cloud, name: str = DEFAULT_POOL) -> StoragePool:
    """The default pool exists in the database and in Ceph (idempotent; for `microcloud init`)."""
    db = cloud.need_db()
    rec = db.get_or_none(StoragePool, name)
    if rec is None:
        rec = await db.insert(StoragePool(name=name, status="Pending",
                                          description="Default pool (Ceph RBD)"), may_exist=True)
    await _realise(cloud, name, check_config(rec.config))
    if rec.status != "Created":
        rec = await db.update(StoragePool, name, status="Created")
    return rec


async def update_pool(cloud: Cloud, name: str, body: api.StoragePoolPut, *, replace: bool) -> StoragePool:
    rec = get_record(cloud, name)
    config = dict(body.config) if body.config is not None else ({} if replace else dict(rec.config))
    if not replace and body.config is not None:
        config = {**rec.config, **body.config}
        config = {k: v for k, v in config.items() if v != ""}  # PATCH with "" unsets a key
    quota = check_config(config)
    description = body.description if body.description is not None else ("" if replace else rec.description)
    await cloud.need_storage().set_pool_quota(name, max_bytes=quota)
    rec = await cloud.need_db().update(StoragePool, name, config=config, description=description)
    cloud.events.lifecycle("storage-pool-updated", f"/1.0/storage-pools/{name}")
    return rec


async def delete_pool(cloud: Cloud, name: str) -> None:
    get_record(cloud, name)
    users = used_by(cloud, name)
    if users:
        raise InUse(f"Storage pool {name!r} is in use by {len(users)} object(s): "
                    f"{', '.join(users[:5])}; delete them first", used_by=users)
    await cloud.need_storage().delete_pool(name, if_exists=True)
    await cloud.need_db().delete(StoragePool, name, if_exists=True)
    cloud.events.lifecycle("storage-pool-deleted", f"/1.0/storage-pools/{name}")


async def resources(cloud: Cloud, name: str) -> api.StoragePoolResources:
    get_record(cloud, name)
    info = await cloud.need_storage().pool_info(name)
    total = min(info.total_bytes, info.quota_bytes) if info.quota_bytes else info.total_bytes
    return api.StoragePoolResources(space=api.ResourceSpace(used=info.used_bytes, total=total),
                                    replicas=info.replicas, quota=info.quota_bytes)


async def summary(cloud: Cloud) -> dict[str, Any]:
    """What `microcloud status` shows about storage: each pool's state and usage."""
    if cloud.storage is None or cloud.db is None:
        return {"available": False, "message": "storage is not initialised (run `microcloud init`)"}
    pools = []
    for rec in list_pools(cloud):
        entry: dict[str, Any] = {"name": rec.name, "status": rec.status}
        try:
            info = await cloud.storage.pool_info(rec.name)
            entry.update(used=info.used_bytes, total=info.total_bytes, quota=info.quota_bytes,
                         replicas=info.replicas)
        except MicrocloudError as e:
            entry.update(status="Unavailable", message=str(e))
        pools.append(entry)
    return {"available": True, "driver": "ceph", "pools": pools}
