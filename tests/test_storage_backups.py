"""Volume export/import on real Ceph: the round trip is byte-identical (including a clone's
inherited data and sparse regions); a damaged or foreign file is refused, leaving nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import rbd

from microcloudd.api.errors import AlreadyExists, InvalidArgument, NotFound
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.drivers.storage.rbd import RBDDriver
from tests.fixtures.ceph import CephCluster, make_raw_disk

MiB = 1 << 20


def content(ceph: CephCluster, pool: str, name: str) -> bytes:
    with ceph.rados() as cluster, cluster.open_ioctx(pool) as io, rbd.Image(io, name, read_only=True) as im:
        return bytes(im.read(0, im.size()))


async def test_export_import_round_trip_is_byte_identical(rbd_driver: RBDDriver, rbd_pool: str,
                                                          ceph: CephCluster, tmp_path: Path) -> None:
    await rbd_driver.create_volume(rbd_pool, "src", 40 * MiB)
    with ceph.rados() as cluster, cluster.open_ioctx(rbd_pool) as io, rbd.Image(io, "custom_src") as im:
        im.write(os.urandom(3 * MiB + 123), 1000)  # unaligned, crosses objects
        im.write(os.urandom(4096), 40 * MiB - 4096)  # the very end
    seen: list[tuple[int, int]] = []
    size = await rbd_driver.export_volume(rbd_pool, "src", tmp_path / "src.backup",
                                          progress=lambda d, t: seen.append((d, t)))
    assert size == (tmp_path / "src.backup").stat().st_size and size < 5 * MiB  # sparse
    assert seen[-1] == (40 * MiB, 40 * MiB)
    restored = await rbd_driver.import_volume(rbd_pool, "restored", tmp_path / "src.backup")
    assert restored.size == 40 * MiB and restored.metadata["name"] == "restored"
    assert content(ceph, rbd_pool, "custom_restored") == content(ceph, rbd_pool, "custom_src")
    # exporting the restored volume gives the same extents: same file but for the name
    await rbd_driver.export_volume(rbd_pool, "restored", tmp_path / "again.backup")
    assert (tmp_path / "again.backup").stat().st_size == size + len("restored") - len("src")
    with pytest.raises(AlreadyExists):
        await rbd_driver.import_volume(rbd_pool, "restored", tmp_path / "src.backup")


async def test_export_of_clone_includes_parent_data(rbd_driver: RBDDriver, rbd_pool: str,
                                                    ceph: CephCluster, tmp_path: Path) -> None:
    image = await rbd_driver.import_image(rbd_pool, make_raw_disk(tmp_path / "d.img", 4 * MiB))
    await rbd_driver.create_root_disk(rbd_pool, "vm1", image.fingerprint, size=8 * MiB)
    await rbd_driver.export_volume(rbd_pool, "vm1", tmp_path / "vm1.backup", type=VolumeType.VM)
    await rbd_driver.import_volume(rbd_pool, "vm2", tmp_path / "vm1.backup", type=VolumeType.VM)
    assert content(ceph, rbd_pool, "vm_vm2") == content(ceph, rbd_pool, "vm_vm1")
    assert (await rbd_driver.volume_info(rbd_pool, "vm2", type=VolumeType.VM)).parent == ""


async def test_bad_backup_files_leave_nothing(rbd_driver: RBDDriver, rbd_pool: str, ceph: CephCluster,
                                              tmp_path: Path) -> None:
    await rbd_driver.create_volume(rbd_pool, "v", 8 * MiB)
    with ceph.rados() as cluster, cluster.open_ioctx(rbd_pool) as io, rbd.Image(io, "custom_v") as im:
        im.write(os.urandom(MiB), 0)
    good = tmp_path / "v.backup"
    await rbd_driver.export_volume(rbd_pool, "v", good)
    data = good.read_bytes()

    damaged = tmp_path / "damaged.backup"
    damaged.write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    with pytest.raises(InvalidArgument, match="checksum mismatch"):
        await rbd_driver.import_volume(rbd_pool, "w", damaged)
    cut = tmp_path / "cut.backup"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArgument, match="truncated"):
        await rbd_driver.import_volume(rbd_pool, "w", cut)
    foreign = make_raw_disk(tmp_path / "disk.img", MiB)
    with pytest.raises(InvalidArgument, match="wrong magic"):
        await rbd_driver.import_volume(rbd_pool, "w", foreign)
    with pytest.raises(InvalidArgument, match="holds a custom volume, not a virtual-machine volume"):
        await rbd_driver.import_volume(rbd_pool, "w", good, type=VolumeType.VM)
    with pytest.raises(NotFound, match=r"Backup file .* not found"):
        await rbd_driver.import_volume(rbd_pool, "w", tmp_path / "missing.backup")
    with pytest.raises(NotFound, match=r"Directory .* not found"):
        await rbd_driver.export_volume(rbd_pool, "v", tmp_path / "no" / "dir.backup")
    with pytest.raises(NotFound, match="Volume 'ghost'"):
        await rbd_driver.export_volume(rbd_pool, "ghost", tmp_path / "ghost.backup")
    assert not (tmp_path / "ghost.backup").exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]
    assert [o.backend_name for o in await rbd_driver.list_owned(rbd_pool)] == ["custom_v"]
