"""Images on real Ceph: import (raw and qcow2, detected from content), fingerprint,
duplicates, copy-on-write root disks, delete refused while cloned or flattening when forced."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import rbd

from microcloudd.api.errors import AlreadyExists, InUse, InvalidArgument, NotFound, QuotaExceeded
from microcloudd.drivers.storage.base import DiskFormat, VolumeType
from microcloudd.drivers.storage.rbd import RBDDriver
from tests.fixtures.ceph import CephCluster, make_qcow2_disk, make_raw_disk

MiB = 1 << 20


def rbd_names(ceph: CephCluster, pool: str) -> list[str]:
    with ceph.rados() as cluster, cluster.open_ioctx(pool) as io:
        return sorted(rbd.RBD().list(io))


def read_rbd(ceph: CephCluster, pool: str, name: str, offset: int, length: int) -> bytes:
    with ceph.rados() as cluster, cluster.open_ioctx(pool) as io, rbd.Image(io, name, read_only=True) as im:
        return bytes(im.read(offset, length))


async def test_import_raw_and_clone_root_disk(rbd_driver: RBDDriver, rbd_pool: str, ceph: CephCluster,
                                              tmp_path: Path) -> None:
    raw = make_raw_disk(tmp_path / "disk.img", 8 * MiB)
    seen: list[tuple[int, int]] = []
    info = await rbd_driver.import_image(rbd_pool, raw, progress=lambda d, t: seen.append((d, t)))
    assert info.fingerprint == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert info.format is DiskFormat.RAW and info.size == 8 * MiB and info.clones == ()
    assert seen and seen[-1] == (8 * MiB, 8 * MiB)
    assert read_rbd(ceph, rbd_pool, info.backend_name, 0, 8 * MiB) == raw.read_bytes()
    assert [i.fingerprint for i in await rbd_driver.list_images(rbd_pool)] == [info.fingerprint]

    disk = await rbd_driver.create_root_disk(rbd_pool, "web1", info.fingerprint, size=64 * MiB)
    assert disk.type is VolumeType.VM and disk.size == 64 * MiB and disk.backend_name == "vm_web1"
    assert disk.parent == f"{rbd_pool}/{info.backend_name}@mc_base"
    assert disk.metadata["owner"] == "test-owner" and disk.metadata["name"] == "web1"
    # idempotent retry, and a clash without may_exist
    again = await rbd_driver.create_root_disk(rbd_pool, "web1", info.fingerprint, size=64 * MiB,
                                              may_exist=True)
    assert again.backend_name == disk.backend_name
    with pytest.raises(AlreadyExists, match="Root disk of instance 'web1'"):
        await rbd_driver.create_root_disk(rbd_pool, "web1", info.fingerprint)

    # the clone is independent of its parent after writes (both ways)
    with ceph.rados() as cluster, cluster.open_ioctx(rbd_pool) as io:
        with rbd.Image(io, "vm_web1") as child:
            child.write(b"C" * 4096, 0)
    assert read_rbd(ceph, rbd_pool, info.backend_name, 0, 4096) == raw.read_bytes()[:4096]
    assert read_rbd(ceph, rbd_pool, "vm_web1", 4096, 4096) == raw.read_bytes()[4096:8192]
    assert (await rbd_driver.image_info(rbd_pool, info.fingerprint)).clones == (f"{rbd_pool}/vm_web1",)

    # deleting an image with clones is refused, and nothing changes
    with pytest.raises(InUse, match=r"used by 1 disk\(s\) cloned from it \(vm_web1\)"):
        await rbd_driver.delete_image(rbd_pool, info.fingerprint)
    assert info.backend_name in rbd_names(ceph, rbd_pool)
    # forced: the clone is flattened and keeps its bytes
    await rbd_driver.delete_image(rbd_pool, info.fingerprint, force=True)
    assert rbd_names(ceph, rbd_pool) == ["vm_web1"]
    assert (await rbd_driver.volume_info(rbd_pool, "web1", type=VolumeType.VM)).parent == ""
    assert read_rbd(ceph, rbd_pool, "vm_web1", 0, 8192) == b"C" * 4096 + raw.read_bytes()[4096:8192]
    await rbd_driver.delete_image(rbd_pool, info.fingerprint, if_exists=True)
    await rbd_driver.delete_volume(rbd_pool, "web1", type=VolumeType.VM)
    assert rbd_names(ceph, rbd_pool) == []


async def test_import_qcow2_detected_from_content(rbd_driver: RBDDriver, rbd_pool: str, ceph: CephCluster,
                                                  tmp_path: Path) -> None:
    raw = make_raw_disk(tmp_path / "disk.raw", 6 * MiB, seed=7)
    qcow = make_qcow2_disk(tmp_path / "disk.img", raw)  # the name says nothing
    info = await rbd_driver.import_image(rbd_pool, qcow)
    assert info.format is DiskFormat.QCOW2 and info.size == 6 * MiB
    assert info.fingerprint == hashlib.sha256(qcow.read_bytes()).hexdigest()
    assert read_rbd(ceph, rbd_pool, info.backend_name, 0, 6 * MiB) == raw.read_bytes()
    # the same file again: refused by fingerprint, the partial copy removed
    with pytest.raises(AlreadyExists, match=info.fingerprint[:12]):
        await rbd_driver.import_image(rbd_pool, qcow)
    assert rbd_names(ceph, rbd_pool) == [info.backend_name]
    await rbd_driver.delete_image(rbd_pool, info.fingerprint)


async def test_import_bad_input_leaves_nothing(rbd_driver: RBDDriver, rbd_pool: str, ceph: CephCluster,
                                               tmp_path: Path) -> None:
    text = tmp_path / "notes.qcow2"
    text.write_bytes(b"hello, this is not a disk\n" * 100)
    with pytest.raises(InvalidArgument, match="neither a qcow2 image nor a raw disk image"):
        await rbd_driver.import_image(rbd_pool, text)
    empty = tmp_path / "empty.img"
    empty.touch()
    with pytest.raises(InvalidArgument, match="is empty"):
        await rbd_driver.import_image(rbd_pool, empty)
    with pytest.raises(NotFound, match="not found"):
        await rbd_driver.import_image(rbd_pool, tmp_path / "missing.img")
    raw = make_raw_disk(tmp_path / "ok.img", 1 * MiB)
    with pytest.raises(NotFound, match="Storage pool 'no-such-pool' not found"):
        await rbd_driver.import_image("no-such-pool", raw)
    assert rbd_names(ceph, rbd_pool) == []


async def test_unknown_image_and_bad_names(rbd_driver: RBDDriver, rbd_pool: str) -> None:
    missing = "ab" * 32
    with pytest.raises(NotFound, match=r"Image abababababab in storage pool '.*' not found"):
        await rbd_driver.image_info(rbd_pool, missing)
    with pytest.raises(NotFound):
        await rbd_driver.delete_image(rbd_pool, missing)
    await rbd_driver.delete_image(rbd_pool, missing, if_exists=True)
    with pytest.raises(NotFound, match="not found"):
        await rbd_driver.create_root_disk(rbd_pool, "vm1", missing)
    with pytest.raises(InvalidArgument, match="Invalid image fingerprint"):
        await rbd_driver.image_info(rbd_pool, "../etc")
    with pytest.raises(InvalidArgument, match="Invalid instance name"):
        await rbd_driver.create_root_disk(rbd_pool, "bad_name", missing)


async def test_import_over_quota_is_refused(rbd_driver: RBDDriver, rbd_pool: str, ceph: CephCluster,
                                            tmp_path: Path) -> None:
    await rbd_driver.set_pool_quota(rbd_pool, max_bytes=4 * MiB)
    raw = make_raw_disk(tmp_path / "big.img", 16 * MiB, holes=False)
    left = f"storage pool '{rbd_pool}' has only 4 MiB left of its 4 MiB quota"
    with pytest.raises(QuotaExceeded, match=left):
        await rbd_driver.import_image(rbd_pool, raw)
    assert rbd_names(ceph, rbd_pool) == []
