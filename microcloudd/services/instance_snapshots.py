"""Instance snapshots: an RBD snapshot of the root disk plus a row keeping the config of the
moment. The row is written first and dropped if the RBD snapshot fails, so the two agree."""

from __future__ import annotations

from typing import Any

from microcloudd.api import instances as api
from microcloudd.api.errors import AlreadyExists, Conflict, NotFound
from microcloudd.api.names import check_name
from microcloudd.api.server import Operation
from microcloudd.db.records import Instance, InstanceSnapshot
from microcloudd.drivers.compute.types import PowerState
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.events import now
from microcloudd.operations import OperationContext
from microcloudd.services import instance_launch as launch
from microcloudd.services import instance_spec as isp
from microcloudd.services import instance_view as view
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_config import READONLY_PREFIXES
from microcloudd.services.instance_locks import locks
from microcloudd.services.instances import get_record


def url(name: str, snap: str) -> str:
    return f"/1.0/instances/{name}/snapshots/{snap}"


def records(cloud: Cloud, name: str) -> list[InstanceSnapshot]:
    get_record(cloud, name)
    return sorted(cloud.need_db().find(InstanceSnapshot, instance=name), key=lambda s: s.created_at)


def get(cloud: Cloud, name: str, snap: str) -> InstanceSnapshot:
    get_record(cloud, name)
    rec = cloud.need_db().get_or_none(InstanceSnapshot, (name, snap))
    if rec is None:
        raise NotFound(f"Snapshot {snap!r} of instance {name!r} not found")
    return rec


def _next_name(existing: set[str]) -> str:
    i = 0
    while f"snap{i}" in existing:
        i += 1
    return f"snap{i}"


async def create(cloud: Cloud, name: str, body: api.SnapshotsPost) -> Operation:
    rec = get_record(cloud, name)
    launch.check_final(rec)
    if body.stateful:
        raise Conflict("Stateful snapshots (with memory) are not supported")
    existing = {s.name for s in records(cloud, name)}
    snap = check_name("snapshot", body.name) if body.name else _next_name(existing)
    if snap in existing:
        raise AlreadyExists(f"Snapshot {snap!r} of instance {name!r} already exists")
    row = InstanceSnapshot(instance=name, name=snap, config=rec.config, devices=rec.devices, created_at=now())

    async def work(op: OperationContext) -> dict[str, Any] | None:
        db, storage = cloud.need_db(), cloud.need_storage()
        async with locks(cloud).hold(name):
            await db.insert(row)
            try:
                await storage.create_snapshot(isp.root_pool(cloud, rec), name, snap, type=VolumeType.VM,
                                              may_exist=True)
            except BaseException:
                await db.delete(InstanceSnapshot, (name, snap), if_exists=True)
                raise
        cloud.events.lifecycle("instance-snapshot-created", url(name, snap))
        return None

    return cloud.operations.start("Snapshotting instance", work, may_cancel=False,
                                  resources={"instances": [view.url(name)]})


async def delete(cloud: Cloud, name: str, snap: str) -> Operation:
    get(cloud, name, snap)

    async def work(op: OperationContext) -> dict[str, Any] | None:
        rec = get_record(cloud, name)
        async with locks(cloud).hold(name):
            await cloud.need_storage().delete_snapshot(isp.root_pool(cloud, rec), name, snap,
                                                       type=VolumeType.VM,
                                                       if_exists=True)
            await cloud.need_db().delete(InstanceSnapshot, (name, snap), if_exists=True)
        cloud.events.lifecycle("instance-snapshot-deleted", url(name, snap))
        return None

    return cloud.operations.start("Deleting snapshot", work, may_cancel=False,
                                  resources={"instances": [view.url(name)]})


async def check_restore(cloud: Cloud, rec: Instance, snap: str) -> None:
    get(cloud, rec.name, snap)
    launch.check_final(rec)
    compute = cloud.need_compute()
    if await compute.exists(rec.name) and (await compute.state(rec.name)).state is not PowerState.STOPPED:
        raise Conflict("Stop the instance before restoring a snapshot")


async def restore(cloud: Cloud, rec: Instance, snap: str) -> None:
    """The root disk back to the snapshot, and the config of that moment (caller holds the lock)."""
    await check_restore(cloud, rec, snap)
    snapshot = get(cloud, rec.name, snap)
    await cloud.need_storage().restore_snapshot(isp.root_pool(cloud, rec), rec.name, snap, type=VolumeType.VM)
    # The user's settings of that moment; the ids of today's devices (ports, MACs) stay.
    config = {k: v for k, v in snapshot.config.items() if not k.startswith(READONLY_PREFIXES)}
    config.update({k: v for k, v in rec.config.items() if k.startswith(READONLY_PREFIXES)})
    new = await cloud.need_db().update(Instance, rec.name, config=config)
    await cloud.need_compute().define(isp.domain_spec(cloud, new), may_exist=True)
    cloud.events.lifecycle("instance-snapshot-restored", url(rec.name, snap))
