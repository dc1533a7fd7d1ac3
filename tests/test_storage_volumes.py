"""Custom volumes on real Ceph: create, list, info, resize, copy, attach marks, delete,
snapshots (restore brings the bytes back), owner tags for the orphan reconciler."""

from __future__ import annotations

import pytest
import rbd

from microcloudd.api.errors import AlreadyExists, InUse, InvalidArgument, NotFound
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.drivers.storage.rbd import RBDDriver
from tests.fixtures.ceph import CephCluster

MiB = 1 << 20


def write(ceph: CephCluster, pool: str, name: str, data: bytes, offset: int = 0) -> None:
    with ceph.rados() as cluster, cluster.open_ioctx(pool) as io, rbd.Image(io, name) as im:
        im.write(data, offset)


def read(ceph: CephCluster, pool: str, name: str, offset: int, length: int) -> bytes:
    with ceph.rados() as cluster, cluster.open_ioctx(pool) as io, rbd.Image(io, name, read_only=True) as im:
        return bytes(im.read(offset, length))


def names(ceph: CephCluster, pool: str) -> list[str]:
    with ceph.rados() as cluster, cluster.open_ioctx(pool) as io:
        return sorted(rbd.RBD().list(io))


async def test_volume_lifecycle(rbd_driver: RBDDriver, rbd_pool: str, ceph: CephCluster) -> None:
    vol = await rbd_driver.create_volume(rbd_pool, "data", 32 * MiB)
    assert (vol.name, vol.type, vol.size) == ("data", VolumeType.CUSTOM, 32 * MiB)
    assert vol.backend_name == "custom_data"
    assert vol.metadata == {"owner": "test-owner", "kind": "custom", "name": "data"} and vol.used_bytes == 0
    assert (await rbd_driver.create_volume(rbd_pool, "data", 32 * MiB, may_exist=True)).size == 32 * MiB
    with pytest.raises(AlreadyExists, match="Volume 'data' in storage pool"):
        await rbd_driver.create_volume(rbd_pool, "data", 32 * MiB)
    await rbd_driver.create_volume(rbd_pool, "web1", 8 * MiB, type=VolumeType.VM)
    assert [v.name for v in await rbd_driver.list_volumes(rbd_pool, type=VolumeType.CUSTOM)] == ["data"]
    assert {v.name for v in await rbd_driver.list_volumes(rbd_pool)} == {"data", "web1"}

    write(ceph, rbd_pool, "custom_data", b"A" * 4096, 20 * MiB)
    assert (await rbd_driver.volume_info(rbd_pool, "data")).used_bytes > 0
    grown = await rbd_driver.resize_volume(rbd_pool, "data", 64 * MiB)
    assert grown.size == 64 * MiB
    with pytest.raises(InvalidArgument, match="shrinking from 67108864 to 16777216 bytes destroys the data"):
        await rbd_driver.resize_volume(rbd_pool, "data", 16 * MiB)
    assert (await rbd_driver.volume_info(rbd_pool, "data")).size == 64 * MiB
    assert (await rbd_driver.resize_volume(rbd_pool, "data", 24 * MiB, force=True)).size == 24 * MiB

    copy = await rbd_driver.copy_volume(rbd_pool, "data", "data-copy")
    assert copy.size == 24 * MiB and copy.parent == "" and copy.metadata["name"] == "data-copy"
    assert read(ceph, rbd_pool, "custom_data-copy", 20 * MiB, 4096) == b"A" * 4096
    write(ceph, rbd_pool, "custom_data-copy", b"B" * 4096, 20 * MiB)  # the copy is independent
    assert read(ceph, rbd_pool, "custom_data", 20 * MiB, 4096) == b"A" * 4096
    with pytest.raises(AlreadyExists):
        await rbd_driver.copy_volume(rbd_pool, "data", "data-copy")

    # attached: delete refused, nothing removed; detached: deleted
    att = await rbd_driver.set_attached(rbd_pool, "data", "web1", True)
    assert att.attached_to == ("web1",)
    assert (await rbd_driver.set_attached(rbd_pool, "data", "web1", True)).attached_to == ("web1",)
    with pytest.raises(InUse, match=r"attached to instance\(s\) web1; detach it first"):
        await rbd_driver.delete_volume(rbd_pool, "data")
    assert "custom_data" in names(ceph, rbd_pool)
    await rbd_driver.set_attached(rbd_pool, "data", "web1", False)

    owned = {o.backend_name: o for o in await rbd_driver.list_owned(rbd_pool)}
    assert set(owned) == {"custom_data", "custom_data-copy", "vm_web1"}
    assert owned["vm_web1"].type == "virtual-machine" and owned["vm_web1"].owner == "test-owner"

    for name in ("data", "data-copy"):
        await rbd_driver.delete_volume(rbd_pool, name)
    await rbd_driver.delete_volume(rbd_pool, "data", if_exists=True)
    await rbd_driver.delete_volume(rbd_pool, "web1", type=VolumeType.VM)
    assert names(ceph, rbd_pool) == []


async def test_volume_open_by_another_client_is_in_use(rbd_driver: RBDDriver, rbd_pool: str,
                                                       ceph: CephCluster) -> None:
    await rbd_driver.create_volume(rbd_pool, "busy", 4 * MiB)
    await rbd_driver.create_snapshot(rbd_pool, "busy", "s1")
    with ceph.rados() as cluster, cluster.open_ioctx(rbd_pool) as io, rbd.Image(io, "custom_busy"):
        with pytest.raises(InUse, match="open by a running instance"):
            await rbd_driver.delete_volume(rbd_pool, "busy")
    # refused before anything was touched: the snapshot is still there
    assert [s.name for s in await rbd_driver.list_snapshots(rbd_pool, "busy")] == ["s1"]
    await rbd_driver.delete_volume(rbd_pool, "busy")


async def test_snapshots_restore_brings_bytes_back(rbd_driver: RBDDriver, rbd_pool: str,
                                                   ceph: CephCluster) -> None:
    await rbd_driver.create_volume(rbd_pool, "db", 8 * MiB)
    write(ceph, rbd_pool, "custom_db", b"v1" * 2048)
    snap = await rbd_driver.create_snapshot(rbd_pool, "db", "before")
    assert snap.name == "before" and snap.size == 8 * MiB and snap.created_at > 0
    await rbd_driver.create_snapshot(rbd_pool, "db", "before", may_exist=True)
    with pytest.raises(AlreadyExists, match="Snapshot 'before'"):
        await rbd_driver.create_snapshot(rbd_pool, "db", "before")
    write(ceph, rbd_pool, "custom_db", b"v2" * 2048)
    await rbd_driver.create_snapshot(rbd_pool, "db", "after")
    assert [s.name for s in await rbd_driver.list_snapshots(rbd_pool, "db")] == ["before", "after"]
    assert (await rbd_driver.volume_info(rbd_pool, "db")).snapshots == ("before", "after")

    await rbd_driver.restore_snapshot(rbd_pool, "db", "before")
    assert read(ceph, rbd_pool, "custom_db", 0, 4096) == b"v1" * 2048
    await rbd_driver.restore_snapshot(rbd_pool, "db", "after")
    assert read(ceph, rbd_pool, "custom_db", 0, 4096) == b"v2" * 2048

    with pytest.raises(NotFound, match="Snapshot 'nope' of volume 'db'"):
        await rbd_driver.restore_snapshot(rbd_pool, "db", "nope")
    with pytest.raises(InvalidArgument, match="Invalid snapshot name"):
        await rbd_driver.create_snapshot(rbd_pool, "db", "mc_base")
    await rbd_driver.delete_snapshot(rbd_pool, "db", "before")
    await rbd_driver.delete_snapshot(rbd_pool, "db", "before", if_exists=True)
    with pytest.raises(NotFound):
        await rbd_driver.delete_snapshot(rbd_pool, "db", "before")
    # a volume with snapshots deletes cleanly
    await rbd_driver.delete_volume(rbd_pool, "db")
    assert names(ceph, rbd_pool) == []


async def test_volume_bad_input(rbd_driver: RBDDriver, rbd_pool: str, ceph: CephCluster) -> None:
    with pytest.raises(InvalidArgument, match="Invalid volume name 'bad_name'"):
        await rbd_driver.create_volume(rbd_pool, "bad_name", MiB)
    with pytest.raises(InvalidArgument, match="Invalid volume name"):
        await rbd_driver.create_volume(rbd_pool, "-x", MiB)
    with pytest.raises(InvalidArgument, match="size must be a positive number"):
        await rbd_driver.create_volume(rbd_pool, "zero", 0)
    with pytest.raises(InvalidArgument, match="multiple of 512"):
        await rbd_driver.create_volume(rbd_pool, "odd", 1000)
    with pytest.raises(NotFound, match="Storage pool 'missing-pool' not found"):
        await rbd_driver.create_volume("missing-pool", "v", MiB)
    with pytest.raises(NotFound, match=f"Volume 'ghost' in storage pool '{rbd_pool}' not found"):
        await rbd_driver.volume_info(rbd_pool, "ghost")
    for call in (rbd_driver.resize_volume(rbd_pool, "ghost", MiB),
                 rbd_driver.delete_volume(rbd_pool, "ghost"),
                 rbd_driver.create_snapshot(rbd_pool, "ghost", "s"),
                 rbd_driver.copy_volume(rbd_pool, "ghost", "ghost2")):
        with pytest.raises(NotFound, match="'ghost'"):
            await call
    assert names(ceph, rbd_pool) == []


async def test_volume_names_and_a_missing_pool(rbd_driver: RBDDriver, rbd_pool: str) -> None:
    await rbd_driver.create_volume(rbd_pool, "data", 8 * MiB)
    await rbd_driver.create_volume(rbd_pool, "web1", 8 * MiB, type=VolumeType.VM)
    assert await rbd_driver.volume_names(rbd_pool) == ["data", "web1"]
    assert await rbd_driver.volume_names(rbd_pool, type=VolumeType.VM) == ["web1"]
    with pytest.raises(NotFound, match="nopool"):
        await rbd_driver.volume_names("nopool")
