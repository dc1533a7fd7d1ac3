"""Instances across a restart of the daemon, as LXD does it.

On a graceful stop of microcloudd the running instances of this member are shut down
(ACPI power button, forced off once one overall budget is spent) after their last power state
is recorded as `volatile.last_state.power` = RUNNING. A user's start/stop records RUNNING or
STOPPED, and so does a guest that powers itself off. When the member's reconciler starts, an
instance is started if `boot.autostart` is true, never if it is false, and else if its last
state was RUNNING. After a SIGKILL the last recorded state (the user's intent) decides.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from microcloudd.api.errors import MicrocloudError
from microcloudd.db.records import Instance
from microcloudd.drivers.compute.types import PowerState
from microcloudd.services import instance_config as ic
from microcloudd.services import instance_spec as isp
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_launch import CREATED
from microcloudd.services.instance_locks import locks

log = logging.getLogger(__name__)

LAST_STATE = "volatile.last_state.power"
RUNNING, STOPPED = "RUNNING", "STOPPED"
AUTOSTART = "boot.autostart"
SHUTDOWN_BUDGET = 30.0  # for all guests together; then they are powered off


def wants_start(rec: Instance) -> bool:
    """Whether the member's start should start `rec` (a created instance of this member, its
    profiles applied)."""
    auto = rec.config.get(AUTOSTART, "").strip().lower()
    if auto in ic.TRUE:
        return True
    if auto in ic.FALSE:
        return False
    last = rec.config.get(LAST_STATE)
    if last is None:  # a row from before this key: its wanted status is the best guess
        return rec.status in ("Running", "Frozen")
    return last == RUNNING


def with_state(config: dict[str, str], state: str) -> dict[str, str]:
    """`config` with the last power state set (for a db.update that changes more)."""
    return {**config, LAST_STATE: state}


async def record(cloud: Cloud, name: str, state: str) -> None:
    db = cloud.need_db()
    rec = db.get_or_none(Instance, name)
    if rec is not None and rec.config.get(LAST_STATE) != state:
        await db.update(Instance, name, config=with_state(rec.config, state))


def _ours(cloud: Cloud) -> list[Instance]:
    return sorted((r for r in cloud.need_db().all(Instance)
                   if r.location == cloud.server_name and r.stage == CREATED), key=lambda r: r.name)


class Started(NamedTuple):
    started: list[str]
    redefined: list[str]  # domains libvirt had lost, defined again from the row


async def start_instances(cloud: Cloud) -> Started:
    """Start this member's instances that should run (see `wants_start`), a lost domain
    defined again first. One failing instance is logged and does not hold up the others."""
    compute, db = cloud.need_compute(), cloud.need_db()
    started: list[str] = []
    redefined: list[str] = []
    for rec in _ours(cloud):
        if locks(cloud).busy(rec.name):
            continue  # API work owns it right now
        async with locks(cloud).hold(rec.name):
            rec = db.get_or_none(Instance, rec.name) or rec
            if not wants_start(isp.expanded(cloud, rec)):  # boot.autostart may come from a profile
                continue
            try:
                if not await compute.exists(rec.name):
                    await compute.define(isp.domain_spec(cloud, rec), may_exist=True)
                    redefined.append(rec.name)
                if (await compute.state(rec.name)).state is PowerState.STOPPED:
                    await db.update(Instance, rec.name, status="Running",
                                    config=with_state(rec.config, RUNNING))
                    await compute.start(rec.name)
                    started.append(rec.name)
            except MicrocloudError as e:
                log.warning("autostart of instance %s failed: %s", rec.name, e)
    if started:
        log.info("started instances %s (autostart or last state RUNNING)", ", ".join(started))
    return Started(started, redefined)


async def shutdown_instances(cloud: Cloud, budget: float = SHUTDOWN_BUDGET) -> list[str]:
    """Shut this member's running instances down together, their last state recorded RUNNING
    first; whatever still runs when `budget` seconds are over is powered off. Returns their names."""
    if cloud.db is None or cloud.compute is None:
        return []
    compute = cloud.compute
    deadline = asyncio.get_running_loop().time() + budget
    running = []
    for rec in _ours(cloud):
        try:
            if await compute.exists(rec.name) and \
                    (await compute.state(rec.name)).state is not PowerState.STOPPED:
                running.append(rec.name)
        except MicrocloudError as e:
            log.warning("instance %s: %s", rec.name, e)

    async def one(name: str) -> None:
        async with locks(cloud).hold(name):  # API work was stopped before us
            try:
                await record(cloud, name, RUNNING)
                left = max(0.0, deadline - asyncio.get_running_loop().time())
                if not await compute.stop(name, grace=left):
                    log.warning("instance %s did not shut down within %.0f s: powered off", name, budget)
            except MicrocloudError as e:
                log.warning("shutting down instance %s: %s", name, e)

    if running:
        log.info("shutting down instances %s (at most %.0f s)", ", ".join(running), budget)
        try:
            # a little past the budget for the power-off itself, or a lock stuck work holds
            async with asyncio.timeout(budget + 5):
                for res in await asyncio.gather(*(one(n) for n in running), return_exceptions=True):
                    if isinstance(res, Exception):
                        log.error("shutting down an instance: %r", res)
        except TimeoutError:
            log.warning("instances still shutting down after %.0f s: libvirtd's stop ends them", budget + 5)
    return running
