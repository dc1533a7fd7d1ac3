"""Handlers of the init API (microcloudd/api/init.py)."""

from __future__ import annotations

import asyncio

import msgspec

from microcloudd.api.init import Disk, InitRequest, InitState
from microcloudd.api.server import Operation
from microcloudd.init import disks
from microcloudd.init.machine import Initializer
from microcloudd.operations import OperationContext
from microcloudd.rest.app import Context
from microcloudd.services.cloud import Cloud


class InitHandlers:
    def __init__(self, cloud: Cloud, initializer: Initializer) -> None:
        self.cloud, self.init = cloud, initializer

    async def init_get(self, ctx: Context) -> InitState:
        return await asyncio.to_thread(self.init.state)

    async def init_disks(self, ctx: Context) -> list[Disk]:
        return await asyncio.to_thread(disks.discover)

    async def init_run(self, ctx: Context, body: InitRequest) -> Operation:
        # Validation happens here, before the operation: a bad plan changes nothing.
        plan = await asyncio.to_thread(self.init.plan_for, body)
        if body.dry_run:
            async def show(op: OperationContext) -> dict[str, object]:
                return {"plan": msgspec.to_builtins(plan), "dry_run": True}

            return self.cloud.operations.start("Validating the init plan", show, may_cancel=False)

        async def work(op: OperationContext) -> dict[str, object]:
            return await self.init.run(plan, op)

        return self.cloud.operations.start(f"Initialising member {plan.member}", work, may_cancel=False,
                                           resources={"init": ["/1.0/init"]})


def make(cloud: Cloud) -> InitHandlers:
    """The daemon finds this object among the handlers and sets `init.on_ready` (to start its
    reconcilers once the member is initialised)."""
    if cloud.supervisor is None:
        raise RuntimeError("the daemon must give the Cloud its Supervisor before building handlers")
    return InitHandlers(cloud, Initializer(cloud, cloud.supervisor))
