"""The network reconciler: make OVN hold what the cluster database says, periodically and on
demand. A port deleted behind our back comes back, an orphan we own goes away, a network
whose OVN settings drifted is re-applied; what was repaired is logged and published as a
`network-reconciled` lifecycle event.

    reconciler = start_reconciler(cloud, interval=30)   # the daemon, once OVN is up
    reconciler.trigger()                                # "look now"
    await reconciler.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from microcloudd.api.errors import MicrocloudError
from microcloudd.db.database import Database
from microcloudd.db.records import Network as NetworkRecord
from microcloudd.db.records import NetworkACL, NetworkForward
from microcloudd.drivers.network.base import DesiredState, ReconcileReport
from microcloudd.services import network_acls, network_forwards, network_store
from microcloudd.services import network_config as netcfg
from microcloudd.services.cloud import Cloud
from microcloudd.services.network_ports import port_spec

log = logging.getLogger(__name__)
DEFAULT_INTERVAL = 30.0


def desired_state(db: Database) -> DesiredState:
    nets = {r.name: netcfg.to_spec(r.name, r.description, r.config) for r in db.all(NetworkRecord)}
    return DesiredState(
        networks=tuple(nets[n] for n in sorted(nets)),
        ports=tuple(port_spec(p) for p in network_store.ports(db) if p.network in nets),
        acls=tuple(network_acls.spec_of(a) for a in sorted(db.all(NetworkACL), key=lambda a: a.name)),
        forwards=tuple((f.network, network_forwards.spec_of(f)) for f in db.all(NetworkForward)
                       if f.network in nets),
    )


async def reconcile_once(cloud: Cloud) -> ReconcileReport | None:
    """One pass; None when this member has no database or OVN yet."""
    db, driver = cloud.db, cloud.network
    if db is None or driver is None:
        return None
    async with network_store.lock(cloud):
        desired = desired_state(db)
        report = await driver.reconcile(desired)
        # The driver only creates missing networks; settings changed behind our back (or
        # recorded before a crash that stopped their update) are re-applied here.
        have = {i.spec.name: i.spec for i in await driver.list_networks()}
        for spec in desired.networks:
            got = have.get(spec.name)
            if got is None:
                continue
            want = spec if spec.uplink_address else dataclasses.replace(
                spec, uplink_address=got.uplink_address)
            if got != want:
                await driver.update_network(want)
                report.created.append(f"network {spec.name} (settings)")
            rec = db.get(NetworkRecord, spec.name)
            if rec.status != "Created" or not rec.config.get(netcfg.UPLINK_ADDRESS):
                # Left Pending by an interrupted create: now it exists, record what OVN chose.
                config = {**rec.config, netcfg.UPLINK_ADDRESS: got.uplink_address or ""}
                await db.update(NetworkRecord, spec.name, config=config, status="Created")
    if report.changed:
        log.warning("network reconciler repaired drift: created %s; removed %s",
                    ", ".join(report.created) or "nothing", ", ".join(report.removed) or "nothing")
        cloud.events.lifecycle("network-reconciled", "/1.0/networks", created=list(report.created),
                               removed=list(report.removed))
    return report


class NetworkReconciler:
    def __init__(self, cloud: Cloud, interval: float = DEFAULT_INTERVAL) -> None:
        self.cloud, self.interval = cloud, interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        self.last_report: ReconcileReport | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="network-reconciler")

    def trigger(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self.last_report = await reconcile_once(self.cloud)
            except MicrocloudError as e:  # OVN or the database away: try again next time
                log.warning("network reconciler: %s", e)
            except Exception:
                log.exception("network reconciler pass failed")
            self.passes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()


def start_reconciler(cloud: Cloud, interval: float = DEFAULT_INTERVAL) -> NetworkReconciler:
    reconciler = NetworkReconciler(cloud, interval)
    reconciler.start()
    return reconciler
