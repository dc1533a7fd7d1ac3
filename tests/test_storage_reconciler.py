"""Storage work that died with its member is finished or undone at the next start
(services/storage_reconciler.py), on real Ceph and the real database.

The leftovers are made the way a crash makes them: a real image import and a real volume
backup import SIGKILLed in the middle of streaming into RBD, and a finished image import whose
row still says "importing" (killed at the `image.imported` point, before it was marked ready).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest
import rados
import rbd

from microcloudd.api.errors import InvalidArgument
from microcloudd.api.instances import InstanceSource, InstancesPost
from microcloudd.db.records import Image, ImageAlias, Instance, StoragePool, Volume
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.services import images, instances, storage_reconciler, volumes
from microcloudd.services.cloud import Cloud
from microcloudd.services.image_staging import staging_dir
from tests.fixtures.ceph import CephCluster, make_raw_disk

# Imports (an image, or a volume backup as `name`) in a child process that SIGKILLs itself
# once the first chunk is in RBD.
KILLED_IMPORT = """
import asyncio, os, signal, sys
from pathlib import Path
from microcloudd.drivers.storage.rbd import RBDDriver

async def main(conf, keyring, user, owner, pool, source, name=""):
    d = RBDDriver(Path(conf), Path(keyring), user=user, owner=owner)
    await d.connect()
    def progress(done, total):
        if done > 0:
            os.kill(os.getpid(), signal.SIGKILL)
    if name:
        await d.import_volume(pool, name, Path(source), progress=progress)
    else:
        await d.import_image(pool, Path(source), progress=progress)

asyncio.run(main(*sys.argv[1:]))
"""


async def _killed_import(ceph: CephCluster, owner: str, pool: str, source: Path, name: str = "") -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_IMPORT, str(ceph.conf_path), str(ceph.keyring_path), ceph.user,
        owner, pool, str(source), name, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == -9, err.decode()


def _fill(ceph: CephCluster, pool: str, backend: str) -> None:
    """Data in every MiB, so the backup has extents to stream (and the import a chunk to die on)."""
    with rados.Rados(conffile=str(ceph.conf_path), rados_id=ceph.user,
                     conf={"keyring": str(ceph.keyring_path)}) as cluster, cluster.open_ioctx(pool) as io, \
            rbd.Image(io, backend) as image:
        for off in range(0, image.size(), 1 << 20):
            image.write(os.urandom(64 << 10), off)


def _partials(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith("partial_")]


async def _owned(cloud: Cloud, pool: str) -> list[str]:
    return [o.backend_name for o in await cloud.need_storage().list_owned(pool)]


async def test_dead_imports_are_finished_or_removed(cloud: Cloud, ceph: CephCluster, rbd_pool: str,
                                                    tmp_path: Path) -> None:
    db, storage = cloud.need_db(), cloud.need_storage()
    member = cloud.settings.get("member", "")
    await db.insert(StoragePool(name=rbd_pool), may_exist=True)  # the pools the member knows

    # 1. An import killed while streaming: its row (with an alias) and a partial RBD image.
    src = make_raw_disk(tmp_path / "killed.raw", 64 << 20, seed=7, holes=False)
    await _killed_import(ceph, storage.owner, rbd_pool, src)
    assert len(_partials(await _owned(cloud, rbd_pool))) == 1
    killed_fp = "ab" * 32
    await db.insert(Image(fingerprint=killed_fp, pool=rbd_pool, status=images.IMPORTING, worker=member))
    await db.insert(ImageAlias(name="half", image=killed_fp))

    # 2. An import that finished in RBD but died before its row was marked ready.
    done_src = make_raw_disk(tmp_path / "done.raw", 8 << 20, seed=8)
    info = await storage.import_image(rbd_pool, done_src)
    await db.insert(Image(fingerprint=info.fingerprint, pool=rbd_pool, status=images.IMPORTING,
                          worker=member))

    # 3. Another member's import in flight: not ours to judge.
    other_fp = "cd" * 32
    await db.insert(Image(fingerprint=other_fp, pool=rbd_pool, status=images.IMPORTING, worker="other"))

    # 4. A volume backup import killed while writing, and a volume create that never ran.
    await storage.create_volume(rbd_pool, "backup-src", 32 << 20)
    await asyncio.to_thread(_fill, ceph, rbd_pool, naming.backend_name(VolumeType.CUSTOM, "backup-src"))
    backup = tmp_path / "vol.backup"
    await storage.export_volume(rbd_pool, "backup-src", backup)
    await storage.delete_volume(rbd_pool, "backup-src")
    await _killed_import(ceph, storage.owner, rbd_pool, backup, "restored")
    assert "restored" in [v.name for v in await storage.list_volumes(rbd_pool)]
    for name in ("restored", "never-made"):
        await db.insert(Volume(pool=rbd_pool, name=name, status=volumes.CREATING, worker=member))
    with pytest.raises(InvalidArgument, match="still being created"):
        await volumes.attach(cloud, rbd_pool, "restored", "someone")

    # 5. A staging file from before the restart.
    old_staged = staging_dir(cloud.state_dir) / "dead.upload"
    old_staged.write_bytes(b"x" * 1024)

    before = time.time() + 0.01
    await asyncio.sleep(0.02)
    # An upload that began after this daemon started is left alone.
    new_staged = staging_dir(cloud.state_dir) / "live.upload"
    new_staged.write_bytes(b"y")
    os.utime(new_staged, (before + 1, before + 1))

    report = await storage_reconciler.clean_unfinished(cloud, before=before)

    assert report.images_removed == [killed_fp]
    assert report.images_completed == [info.fingerprint]
    assert len(report.partials) == 1 and report.staged == ["dead.upload"]
    # The killed import's watch on "restored" lingers until the OSD times it out (30 s): that
    # volume waits for a later pass, as the daemon's background run does every 10 s.
    removed = list(report.volumes_removed)
    deadline = time.monotonic() + 90
    while f"volume {rbd_pool}/restored" in report.pending and time.monotonic() < deadline:
        await asyncio.sleep(5)
        report = await storage_reconciler.clean_unfinished(cloud, before=before)
        removed += report.volumes_removed
    assert sorted(removed) == [f"{rbd_pool}/never-made", f"{rbd_pool}/restored"]
    assert db.find(Volume, pool=rbd_pool) == []
    assert "restored" not in [v.name for v in await storage.list_volumes(rbd_pool)]
    assert db.get_or_none(Image, killed_fp) is None and db.get_or_none(ImageAlias, "half") is None
    assert db.get(Image, info.fingerprint).status == images.READY
    assert db.get(Image, other_fp).status == images.IMPORTING
    assert _partials(await _owned(cloud, rbd_pool)) == []
    assert not old_staged.exists() and new_staged.exists()

    # The completed image is usable: a root disk clones from it.
    disk = await images.clone_root_disk(cloud, "after-crash", db.get(Image, info.fingerprint))
    await storage.delete_volume(rbd_pool, disk.name, type=VolumeType.VM)

    # Running it again finds nothing more to do.
    again = await storage_reconciler.clean_unfinished(cloud, before=before)
    assert again.empty()
    await db.delete(Image, other_fp)
    await db.delete(Image, info.fingerprint)
    await storage.delete_image(rbd_pool, info.fingerprint)


async def test_an_importing_image_is_refused_for_a_root_disk(cloud: Cloud, rbd_pool: str) -> None:
    db, storage = cloud.need_db(), cloud.need_storage()
    img = images.resolve_now(cloud, "test")
    importing = await db.update(Image, img.fingerprint, status=images.IMPORTING)
    try:
        before = await _owned(cloud, rbd_pool)
        with pytest.raises(InvalidArgument, match="still being imported"):
            await images.clone_root_disk(cloud, "too-early", importing)
        with pytest.raises(InvalidArgument, match="still being imported"):  # a launch, up front
            body = InstancesPost(name="too-early", source=InstanceSource(alias="test"))
            await instances.create(cloud, body)
        assert db.get_or_none(Instance, "too-early") is None
        assert await _owned(cloud, rbd_pool) == before
        vm_disks = await storage.list_volumes(rbd_pool, type=VolumeType.VM)
        assert not [v for v in vm_disks if "too-early" in v.name]
    finally:
        await db.update(Image, img.fingerprint, status=images.READY)
