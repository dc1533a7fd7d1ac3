"""The Ceph RBD storage driver: StorageDriver over Debian's python3-rados/python3-rbd.

    driver = RBDDriver(conf_path, keyring_path, user="admin", owner="microcloud:<cluster id>")
    await driver.connect()
    info = await driver.import_image("remote", Path("disk.qcow2"), progress=cb)
    disk = await driver.create_root_disk("remote", "web1", info.fingerprint, size=10 << 30)
    ...
    await driver.close()

Every rados/rbd call runs in the driver's own thread pool (never on the event loop, and
long imports do not starve asyncio's default executor). Progress callbacks are called on
the event loop. Cancelling an awaiting task makes the running call stop at its next chunk
and undo what it created.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import rados

from microcloudd.api.errors import InvalidArgument, Unavailable
from microcloudd.drivers.storage import rbd_backup, rbd_images, rbd_pools, rbd_volumes
from microcloudd.drivers.storage.base import (
    ImageInfo,
    OwnedObject,
    PoolInfo,
    Progress,
    SnapshotInfo,
    StorageDriver,
    VolumeInfo,
    VolumeType,
)
from microcloudd.drivers.storage.rbd_session import Session, SyncProgress, fence_previous

T = TypeVar("T")


class RBDDriver(StorageDriver):
    name = "ceph"

    def __init__(self, conf_path: Path, keyring_path: Path, *, user: str = "admin", owner: str,
                 max_workers: int = 8, fence_file: Path | None = None) -> None:
        """`fence_file`: where this driver notes its Ceph client's address while connected;
        a note left by a client that died (a killed daemon) gets that client blocklisted on the
        next connect, so the OSDs drop its watches and locks at once instead of after
        osd_client_watch_timeout (30 s: deletes of the images it had open failed until then)."""
        if not owner:
            raise InvalidArgument("The storage driver needs an owner tag")
        self.conf_path, self.keyring_path = Path(conf_path), Path(keyring_path)
        self.user, self.owner = user, owner
        self.fence_file = fence_file
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="rbd")
        self._cluster: rados.Rados | None = None

    # -- plumbing ----------------------------------------------------------------------------

    async def connect(self, timeout: float = 30.0) -> None:
        if self._cluster is not None:
            return

        def connect() -> rados.Rados:
            cluster = rados.Rados(conffile=str(self.conf_path), rados_id=self.user, conf={
                "keyring": str(self.keyring_path),
                # Fail instead of hanging forever when Ceph is down or a pool is full.
                "rados_mon_op_timeout": "60", "rados_osd_op_timeout": "120",
            })
            try:
                cluster.connect(timeout=max(1, int(timeout)))
            except rados.Error as e:
                cluster.shutdown()
                raise Unavailable(
                    f"Cannot reach Ceph with {self.conf_path} as client.{self.user}: {e}") from e
            return cluster

        if not self.conf_path.is_file():
            raise Unavailable(f"Ceph configuration {self.conf_path} not found")
        loop = asyncio.get_running_loop()
        self._cluster = await loop.run_in_executor(self._executor, connect)
        if self.fence_file is not None:
            await loop.run_in_executor(self._executor, fence_previous, self._cluster, self.fence_file)

    async def close(self) -> None:
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, cluster.shutdown)
            if self.fence_file is not None:  # shut down cleanly: nothing of it to fence
                self.fence_file.unlink(missing_ok=True)
        self._executor.shutdown(wait=False)

    def _progress(self, cb: Progress | None) -> SyncProgress:
        """A thread-safe progress that hops to the loop, at most ~10 times a second."""
        if cb is None:
            return lambda done, total: None
        loop = asyncio.get_running_loop()
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done >= total or now - last[0] >= 0.1:
                last[0] = now
                loop.call_soon_threadsafe(cb, done, total)

        return report

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._cluster is None:
            raise Unavailable("The storage driver is not connected to Ceph")
        session = Session(self._cluster, self.conf_path, self.keyring_path, self.user, self.owner)
        work = functools.partial(fn, session, *args)
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # Let the worker stop at its next chunk and clean up before we give up.
            session.cancel.set()
            await asyncio.wait([future])
            raise

    # -- pools -------------------------------------------------------------------------------

    async def create_pool(self, name: str, *, quota_bytes: int = 0, may_exist: bool = False) -> PoolInfo:
        return await self._call(rbd_pools.create_pool, name, quota_bytes, may_exist)

    async def delete_pool(self, name: str, *, if_exists: bool = False) -> None:
        await self._call(rbd_pools.delete_pool, name, if_exists)

    async def pool_info(self, name: str) -> PoolInfo:
        return await self._call(rbd_pools.pool_info, name)

    async def list_pools(self) -> list[str]:
        return await self._call(rbd_pools.list_pools)

    async def set_pool_quota(self, name: str, *, max_bytes: int = 0, max_objects: int = 0) -> None:
        await self._call(rbd_pools.set_quota, name, max_bytes, max_objects)

    # -- images ------------------------------------------------------------------------------

    async def import_image(self, pool: str, source: Path, *, progress: Progress | None = None) -> ImageInfo:
        return await self._call(rbd_images.import_image, pool, Path(source), self._progress(progress))

    async def image_info(self, pool: str, fingerprint: str) -> ImageInfo:
        return await self._call(rbd_images.image_info, pool, fingerprint)

    async def list_images(self, pool: str) -> list[ImageInfo]:
        return await self._call(rbd_images.list_images, pool)

    async def delete_image(self, pool: str, fingerprint: str, *, force: bool = False,
                           if_exists: bool = False) -> None:
        await self._call(rbd_images.delete_image, pool, fingerprint, force, if_exists)

    # -- volumes -----------------------------------------------------------------------------

    async def create_root_disk(self, pool: str, instance: str, fingerprint: str, *, size: int = 0,
                               may_exist: bool = False) -> VolumeInfo:
        return await self._call(rbd_images.create_root_disk, pool, instance, fingerprint, size, may_exist)

    async def create_volume(self, pool: str, name: str, size: int, *, type: VolumeType = VolumeType.CUSTOM,
                            may_exist: bool = False) -> VolumeInfo:
        return await self._call(rbd_volumes.create_volume, pool, name, size, type, may_exist)

    async def volume_info(self, pool: str, name: str, *,
                          type: VolumeType = VolumeType.CUSTOM) -> VolumeInfo:
        return await self._call(rbd_volumes.volume_info, pool, name, type)

    async def list_volumes(self, pool: str, *, type: VolumeType | None = None) -> list[VolumeInfo]:
        return await self._call(rbd_volumes.list_volumes, pool, type)

    async def volume_names(self, pool: str, *, type: VolumeType | None = None) -> list[str]:
        return await self._call(rbd_volumes.volume_names, pool, type)

    async def resize_volume(self, pool: str, name: str, size: int, *, type: VolumeType = VolumeType.CUSTOM,
                            force: bool = False) -> VolumeInfo:
        return await self._call(rbd_volumes.resize_volume, pool, name, size, type, force)

    async def copy_volume(self, pool: str, source: str, target: str, *,
                          type: VolumeType = VolumeType.CUSTOM, target_pool: str | None = None,
                          progress: Progress | None = None) -> VolumeInfo:
        return await self._call(rbd_volumes.copy_volume, pool, source, target, type, target_pool or pool,
                                self._progress(progress))

    async def delete_volume(self, pool: str, name: str, *, type: VolumeType = VolumeType.CUSTOM,
                            if_exists: bool = False) -> None:
        await self._call(rbd_volumes.delete_volume, pool, name, type, if_exists)

    async def set_attached(self, pool: str, name: str, instance: str, attached: bool, *,
                           type: VolumeType = VolumeType.CUSTOM) -> VolumeInfo:
        return await self._call(rbd_volumes.set_attached, pool, name, instance, attached, type)

    # -- snapshots ---------------------------------------------------------------------------

    async def create_snapshot(self, pool: str, name: str, snapshot: str, *,
                              type: VolumeType = VolumeType.CUSTOM, may_exist: bool = False) -> SnapshotInfo:
        return await self._call(rbd_volumes.create_snapshot, pool, name, snapshot, type, may_exist)

    async def list_snapshots(self, pool: str, name: str, *,
                             type: VolumeType = VolumeType.CUSTOM) -> list[SnapshotInfo]:
        return await self._call(rbd_volumes.list_snapshots, pool, name, type)

    async def restore_snapshot(self, pool: str, name: str, snapshot: str, *,
                               type: VolumeType = VolumeType.CUSTOM) -> None:
        await self._call(rbd_volumes.restore_snapshot, pool, name, snapshot, type)

    async def delete_snapshot(self, pool: str, name: str, snapshot: str, *,
                              type: VolumeType = VolumeType.CUSTOM, if_exists: bool = False) -> None:
        await self._call(rbd_volumes.delete_snapshot, pool, name, snapshot, type, if_exists)

    # -- backups -----------------------------------------------------------------------------

    async def export_volume(self, pool: str, name: str, target: Path, *,
                            type: VolumeType = VolumeType.CUSTOM, progress: Progress | None = None) -> int:
        return await self._call(rbd_backup.export_volume, pool, name, type, Path(target),
                                self._progress(progress))

    async def import_volume(self, pool: str, name: str, source: Path, *, type: VolumeType = VolumeType.CUSTOM,
                            progress: Progress | None = None) -> VolumeInfo:
        return await self._call(rbd_backup.import_volume, pool, name, type, Path(source),
                                self._progress(progress))

    # -- orphans -----------------------------------------------------------------------------

    async def delete_partial(self, pool: str, backend_name: str) -> None:
        await self._call(rbd_volumes.delete_partial, pool, backend_name)

    async def list_owned(self, pool: str) -> list[OwnedObject]:
        return await self._call(rbd_volumes.list_owned, pool)
