"""Handlers of the instances API (microcloudd/api/instances.py): thin calls into services."""

from __future__ import annotations

from typing import Any

from aiohttp import WSMsgType, web

from microcloudd.api import instances as api
from microcloudd.api.declare import Recursion
from microcloudd.api.server import Operation
from microcloudd.operations import OperationContext
from microcloudd.rest.app import Context
from microcloudd.services import (
    instance_console,
    instance_power,
    instance_snapshots,
    instance_update,
    instances,
)
from microcloudd.services import instance_view as view
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_locks import locks


class InstancesHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    async def instances_list(self, ctx: Context, query: Recursion) -> list[Any]:
        return await instances.list_instances(self.cloud, query.recursion, query.filter)

    async def instances_create(self, ctx: Context, body: api.InstancesPost) -> Operation:
        return await instances.create(self.cloud, body)

    async def instance_get(self, ctx: Context, name: str, query: Recursion) -> Any:
        return await instances.get(self.cloud, name, query.recursion)

    async def instance_put(self, ctx: Context, name: str, body: api.InstanceRestore) -> Operation:
        cloud = self.cloud
        rec = instances.get_record(cloud, name)
        if body.restore:
            await instance_snapshots.check_restore(cloud, rec, body.restore)

            async def restore(op: OperationContext) -> dict[str, Any] | None:
                async with locks(cloud).hold(name):
                    await instance_snapshots.restore(cloud, instances.get_record(cloud, name), body.restore)
                return None

            return cloud.operations.start("Restoring snapshot", restore, may_cancel=False,
                                          resources={"instances": [view.url(name)]})
        new = await instance_update.plan(cloud, rec, body, merge=False)

        async def update(op: OperationContext) -> dict[str, Any] | None:
            async with locks(cloud).hold(name):
                await instance_update.apply(cloud, rec, new)
            cloud.events.lifecycle("instance-updated", view.url(name))
            return None

        return cloud.operations.start("Updating instance", update, may_cancel=False,
                                      resources={"instances": [view.url(name)]})

    async def instance_patch(self, ctx: Context, name: str, body: api.InstancePut) -> None:
        cloud = self.cloud
        rec = instances.get_record(cloud, name)
        new = await instance_update.plan(cloud, rec, body, merge=True)
        async with locks(cloud).hold(name):
            await instance_update.apply(cloud, rec, new)
        cloud.events.lifecycle("instance-updated", view.url(name))

    async def instance_delete(self, ctx: Context, name: str) -> Operation:
        return await instances.delete(self.cloud, name)

    async def instance_state(self, ctx: Context, name: str) -> api.InstanceState:
        return await instances.state(self.cloud, name)

    async def instance_state_put(self, ctx: Context, name: str, body: api.StatePut) -> Operation:
        return await instance_power.change(self.cloud, name, body)

    async def instance_console(self, ctx: Context, name: str, query: api.ConsoleQuery) -> web.StreamResponse:
        request = ctx.request
        if request.headers.get("Upgrade", "").lower() != "websocket":
            data = await instance_console.read_log(self.cloud, name, query.max_bytes)
            return web.Response(body=data, content_type="text/plain", charset="utf-8")
        console = await instance_console.open_console(self.cloud, name)  # errors before the handshake
        ws = web.WebSocketResponse(heartbeat=30)
        try:
            await ws.prepare(request)
        except BaseException:
            await console.close()
            raise

        async def receive() -> bytes | None:
            msg = await ws.receive()
            if msg.type == WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type == WSMsgType.TEXT:
                return str(msg.data).encode()
            return None

        await instance_console.bridge(console, ws.send_bytes, receive)
        await ws.close()
        return ws

    async def instance_console_post(self, ctx: Context, name: str, body: api.ConsolePost) -> Operation:
        return await instance_console.attach(self.cloud, name, body)

    async def instance_snapshots_list(self, ctx: Context, name: str, query: Recursion) -> list[Any]:
        snaps = instance_snapshots.records(self.cloud, name)
        if query.recursion:
            return [view.snapshot(s) for s in snaps]
        return [instance_snapshots.url(name, s.name) for s in snaps]

    async def instance_snapshots_create(self, ctx: Context, name: str, body: api.SnapshotsPost) -> Operation:
        return await instance_snapshots.create(self.cloud, name, body)

    async def instance_snapshot_get(self, ctx: Context, name: str, snapshot: str) -> api.InstanceSnapshot:
        return view.snapshot(instance_snapshots.get(self.cloud, name, snapshot))

    async def instance_snapshot_delete(self, ctx: Context, name: str, snapshot: str) -> Operation:
        return await instance_snapshots.delete(self.cloud, name, snapshot)


def make(cloud: Cloud) -> InstancesHandlers:
    return InstancesHandlers(cloud)
