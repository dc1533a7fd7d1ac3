"""The daemon's view of its stack at run time: start it when the member is initialised,
build the drivers, run the reconcilers, stop it all; summaries for `microcloud status`.

    rt = Runtime(cloud, supervisor)
    rt.start_in_background()   # at daemon start: only if init/state.json says initialised
    await rt.member_ready(stack)  # init's last step calls this too
    await rt.stop()            # reconcilers, drivers (the daemon then stops the Supervisor)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from microcloudd.api.errors import MicrocloudError
from microcloudd.components.supervisor import Supervisor
from microcloudd.init import record
from microcloudd.services import (
    instance_reconciler,
    network_reconciler,
    networks,
    storage_pools,
    storage_reconciler,
)
from microcloudd.services.cloud import Cloud
from microcloudd.stack import drivers
from microcloudd.stack.components import LocalStack

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, cloud: Cloud, supervisor: Supervisor) -> None:
        self.cloud, self.sup = cloud, supervisor
        self.state = "stopped"  # stopped, starting, running, failed: <why>
        self.started = time.time()  # work begun before this (by a dead daemon) is not awaited
        self._task: asyncio.Task[None] | None = None
        self._instances: Any = None
        self._networks: Any = None
        self._storage: asyncio.Task[None] | None = None

    def initialized(self) -> bool:
        return record.load(self.cloud.state_dir).initialized

    def start_in_background(self) -> None:
        """Start the stack of an initialised member without holding up the API socket."""
        rec = record.load(self.cloud.state_dir)
        if not rec.initialized or rec.plan is None:
            return
        stack = LocalStack(self.cloud.state_dir, rec.plan, self.sup)
        self._task = asyncio.get_running_loop().create_task(self._start(stack), name="stack-start")

    async def _start(self, stack: LocalStack) -> None:
        self.state = "starting"
        try:
            await stack.start()
            await self.member_ready(stack)
        except MicrocloudError as e:
            self.state = f"failed: {e}"
            log.error("the stack did not start: %s (components keep retrying; see `microcloud status`)", e)

    async def member_ready(self, stack: LocalStack) -> None:
        """Drivers in, reconcilers running: the member serves its whole API."""
        rec = record.load(self.cloud.state_dir)
        await drivers.connect(self.cloud, stack, rec.secret_uuid)
        if self._storage is None:
            self._storage = asyncio.get_running_loop().create_task(
                storage_reconciler.run(self.cloud, self.started), name="storage-reconciler")
        if self._instances is None:
            self._instances = await instance_reconciler.start(self.cloud)
        if self._networks is None:
            self._networks = network_reconciler.start_reconciler(self.cloud)
        self.state = "running"
        log.info("member %s is ready", stack.plan.member)

    async def stop(self) -> None:
        for task in (self._task, self._storage):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, MicrocloudError):
                    pass
        self._storage = None
        # Guests go down with libvirtd, our child: shut them down gracefully first (bounded),
        # each recorded RUNNING so the reconciler starts it again after our restart.
        shutdown = getattr(self._instances, "shutdown_instances", None)
        if shutdown is not None:
            try:
                await shutdown()
            except MicrocloudError as e:
                log.warning("shutting the instances down: %s", e)
        for attr in ("_instances", "_networks"):
            rec = getattr(self, attr)
            setattr(self, attr, None)
            if rec is not None:
                try:
                    await asyncio.wait_for(rec.stop(), 5)
                except (TimeoutError, MicrocloudError) as e:
                    log.warning("stopping a reconciler: %s", e)
        await drivers.close(self.cloud)
        self.state = "stopped"

    async def summaries(self) -> tuple[dict[str, Any], dict[str, Any]]:
        storage: dict[str, Any] = {}
        network: dict[str, Any] = {}
        try:
            if self.cloud.db is not None:
                storage = await asyncio.wait_for(storage_pools.summary(self.cloud), 5)
            network = dict(networks.summary(self.cloud))
        except (MicrocloudError, TimeoutError) as e:
            storage = storage or {"available": False, "message": str(e)}
        return storage, network
