"""Power actions (`PUT /1.0/instances/{name}/state`): start, stop, restart, freeze, unfreeze.

The wanted status is recorded in the row first (so the reconciler and libvirt's events know
a stop was asked for), with the last power state a daemon restart goes by (start, restart:
RUNNING; stop: STOPPED; see instance_autostart), then libvirt is told. A domain missing under
a created row (libvirt lost it) is re-defined from the row before a start.
"""

from __future__ import annotations

from typing import Any

from microcloudd.api import instances as api
from microcloudd.api.errors import Conflict, InvalidArgument
from microcloudd.api.server import Operation
from microcloudd.db.records import Instance
from microcloudd.drivers.compute.types import PowerState
from microcloudd.operations import OperationContext
from microcloudd.services import instance_autostart as autostart
from microcloudd.services import instance_launch as launch
from microcloudd.services import instance_spec as isp
from microcloudd.services import instance_view as view
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_locks import locks
from microcloudd.services.instances import get_record

ACTIONS = ("start", "stop", "restart", "freeze", "unfreeze")
DEFAULT_GRACE = 30.0
_DESCRIPTIONS = {"start": "Starting instance", "stop": "Stopping instance", "restart": "Restarting instance",
                 "freeze": "Freezing instance", "unfreeze": "Unfreezing instance"}


async def ensure_domain(cloud: Cloud, rec: Instance) -> None:
    compute = cloud.need_compute()
    if not await compute.exists(rec.name):
        await compute.define(isp.domain_spec(cloud, rec), may_exist=True)


async def _check(cloud: Cloud, rec: Instance, action: str) -> PowerState:
    launch.check_final(rec)
    if rec.location and rec.location != cloud.server_name:
        raise Conflict(f"Instance {rec.name!r} runs on member {rec.location!r}; ask that member")
    compute = cloud.need_compute()
    current = (await compute.state(rec.name)).state if await compute.exists(rec.name) else PowerState.STOPPED
    running = current in (PowerState.RUNNING, PowerState.FROZEN, PowerState.STOPPING)
    if action == "start" and running:
        raise Conflict("The instance is already running")
    if action in ("stop", "restart", "freeze") and not running:
        raise Conflict("The instance is not running" if action == "freeze"
                       else "The instance is already stopped")
    if action == "unfreeze" and current is not PowerState.FROZEN:
        raise Conflict("The instance is not frozen")
    return current


async def change(cloud: Cloud, name: str, body: api.StatePut) -> Operation:
    if body.action not in ACTIONS:
        raise InvalidArgument(f"Unknown action {body.action!r}; one of: {', '.join(ACTIONS)}")
    if body.stateful:
        raise InvalidArgument("Stateful stop/start is not supported")
    rec = get_record(cloud, name)
    await _check(cloud, rec, body.action)
    grace = DEFAULT_GRACE if body.timeout is None or body.timeout < 0 else float(body.timeout)

    async def work(op: OperationContext) -> dict[str, Any] | None:
        async with locks(cloud).hold(name):
            await run(cloud, name, body.action, force=body.force, grace=grace)
        return None

    return cloud.operations.start(_DESCRIPTIONS[body.action], work, resources={"instances": [view.url(name)]},
                                  may_cancel=False)


async def run(cloud: Cloud, name: str, action: str, *, force: bool = False,
              grace: float = DEFAULT_GRACE) -> None:
    db, compute = cloud.need_db(), cloud.need_compute()
    rec = get_record(cloud, name)
    await _check(cloud, rec, action)  # again, under the lock: another action may have won
    if action == "start":
        await ensure_domain(cloud, rec)
        await db.update(Instance, name, status="Running",
                        config=autostart.with_state(rec.config, autostart.RUNNING))
        await compute.start(name)
    elif action == "stop":
        await db.update(Instance, name, status="Stopped",
                        config=autostart.with_state(rec.config, autostart.STOPPED))
        await compute.stop(name, force=force, grace=grace)
    elif action == "restart":
        if force:
            await compute.reboot(name, force=True)
        else:
            # A clean restart: shut down (or power off after the grace), boot again; this works
            # whether or not the guest honours ACPI reboot.
            await db.update(Instance, name, status="Stopped")
            await compute.stop(name, grace=grace)
            await db.update(Instance, name, status="Running")
            await compute.start(name)
        await autostart.record(cloud, name, autostart.RUNNING)
        cloud.events.lifecycle("instance-restarted", view.url(name))
    elif action == "freeze":
        await compute.freeze(name)
        await db.update(Instance, name, status="Frozen")
    elif action == "unfreeze":
        await compute.unfreeze(name)
        await db.update(Instance, name, status="Running")
