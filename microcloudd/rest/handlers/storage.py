"""Handlers of the storage API (microcloudd/api/storage.py)."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from microcloudd.api import storage as api
from microcloudd.api.declare import Recursion
from microcloudd.api.server import Operation
from microcloudd.rest import envelope
from microcloudd.rest.app import Context
from microcloudd.services import image_staging, storage_pools, volumes
from microcloudd.services.cloud import Cloud

CHUNK = 1 << 20


class StorageHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    # -- pools ----------------------------------------------------------------------------

    async def storage_pools_list(self, ctx: Context, query: Recursion) -> list[object]:
        recs = storage_pools.list_pools(self.cloud)
        if query.recursion:
            return [storage_pools.to_api(self.cloud, r) for r in recs]
        return [f"/1.0/storage-pools/{r.name}" for r in recs]

    async def storage_pool_create(self, ctx: Context, body: api.StoragePoolsPost) -> None:
        await storage_pools.create_pool(self.cloud, body)

    async def storage_pool_get(self, ctx: Context, pool: str) -> api.StoragePool:
        return storage_pools.to_api(self.cloud, storage_pools.get_record(self.cloud, pool))

    async def storage_pool_put(self, ctx: Context, pool: str, body: api.StoragePoolPut) -> api.StoragePool:
        rec = await storage_pools.update_pool(self.cloud, pool, body, replace=True)
        return storage_pools.to_api(self.cloud, rec)

    async def storage_pool_patch(self, ctx: Context, pool: str, body: api.StoragePoolPut) -> api.StoragePool:
        rec = await storage_pools.update_pool(self.cloud, pool, body, replace=False)
        return storage_pools.to_api(self.cloud, rec)

    async def storage_pool_delete(self, ctx: Context, pool: str) -> None:
        await storage_pools.delete_pool(self.cloud, pool)

    async def storage_pool_resources(self, ctx: Context, pool: str) -> api.StoragePoolResources:
        return await storage_pools.resources(self.cloud, pool)

    # -- volumes --------------------------------------------------------------------------

    def _volumes(self, pool: str, query: Recursion, custom_only: bool) -> list[object]:
        recs = volumes.list_volumes(self.cloud, pool, custom_only=custom_only)
        if query.recursion:
            return [volumes.to_api(r) for r in recs]
        return [volumes.url_of(r) for r in recs]

    async def storage_volumes_list(self, ctx: Context, pool: str, query: Recursion) -> list[object]:
        return self._volumes(pool, query, custom_only=False)

    async def storage_volumes_custom_list(self, ctx: Context, pool: str, query: Recursion) -> list[object]:
        return self._volumes(pool, query, custom_only=True)

    async def storage_volume_create(self, ctx: Context, pool: str, body: api.StorageVolumesPost) -> Operation:
        return await volumes.start_create(self.cloud, pool, body)

    async def storage_volume_get(self, ctx: Context, pool: str, volume: str) -> api.StorageVolume:
        return volumes.to_api(volumes.get_record(self.cloud, pool, volume))

    async def storage_volume_put(self, ctx: Context, pool: str, volume: str, body: api.StorageVolumePut,
                                 query: api.ForceQuery) -> api.StorageVolume:
        rec = await volumes.update(self.cloud, pool, volume, body, force=bool(query.force), replace=True)
        return volumes.to_api(rec)

    async def storage_volume_patch(self, ctx: Context, pool: str, volume: str, body: api.StorageVolumePut,
                                   query: api.ForceQuery) -> api.StorageVolume:
        rec = await volumes.update(self.cloud, pool, volume, body, force=bool(query.force), replace=False)
        return volumes.to_api(rec)

    async def storage_volume_delete(self, ctx: Context, pool: str, volume: str) -> None:
        await volumes.delete(self.cloud, pool, volume)

    # -- snapshots ------------------------------------------------------------------------

    async def storage_volume_snapshots_list(self, ctx: Context, pool: str, volume: str,
                                            query: Recursion) -> list[object]:
        snaps = volumes.list_snapshots(self.cloud, pool, volume)
        if query.recursion:
            size = volumes.get_record(self.cloud, pool, volume).size
            return [volumes.snapshot_to_api(s, int(s.config.get("size", size))) for s in snaps]
        base = f"/1.0/storage-pools/{pool}/volumes/custom/{volume}/snapshots"
        return [f"{base}/{s.name}" for s in snaps]

    async def storage_volume_snapshot_create(self, ctx: Context, pool: str, volume: str,
                                             body: api.SnapshotsPost) -> Operation:
        return await volumes.start_snapshot(self.cloud, pool, volume, body)

    async def storage_volume_snapshot_get(self, ctx: Context, pool: str, volume: str,
                                          snapshot: str) -> api.StorageVolumeSnapshot:
        snap = volumes.get_snapshot(self.cloud, pool, volume, snapshot)
        return volumes.snapshot_to_api(snap, int(snap.config.get("size", "0")))

    async def storage_volume_snapshot_delete(self, ctx: Context, pool: str, volume: str,
                                             snapshot: str) -> Operation:
        return await volumes.start_delete_snapshot(self.cloud, pool, volume, snapshot)

    # -- backups --------------------------------------------------------------------------

    async def storage_volume_export(self, ctx: Context, pool: str, volume: str) -> web.StreamResponse:
        path = await volumes.export(self.cloud, pool, volume)
        try:
            f = await asyncio.to_thread(open, path, "rb")
            try:
                size = (await asyncio.to_thread(path.stat)).st_size
                resp = web.StreamResponse(headers={
                    "Content-Type": "application/octet-stream", "Content-Length": str(size),
                    "Content-Disposition": f'attachment; filename="{volume}.mcbackup"'})
                await resp.prepare(ctx.request)
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            finally:
                f.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def storage_volume_import(self, ctx: Context, pool: str, volume: str) -> web.Response:
        volumes.check_import(self.cloud, pool, volume)  # refuse before reading the body
        staged = await image_staging.stage(self.cloud.state_dir, ctx.request.content.iter_chunked(CHUNK),
                                           "backup")
        return envelope.async_(await volumes.start_import(self.cloud, pool, volume, staged))


def make(cloud: Cloud) -> StorageHandlers:
    return StorageHandlers(cloud)
