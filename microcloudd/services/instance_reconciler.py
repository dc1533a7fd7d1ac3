"""The per-member instance reconciler, and libvirt's events turned into lifecycle events.

    reconciler = await start(cloud)      # starts the instances that should run (instance_autostart),
    ...                                  # runs one pass now, then every `interval` seconds
    await reconciler.shutdown_instances()  # the daemon's graceful stop: guests down, state kept
    await reconciler.stop()

A pass, for the instances this member owns (their row's `location`):
- a row still "creating" (the daemon died mid-launch) is driven to "created" by re-running the
  launch steps, or, if that fails, cleanly removed; a row "deleting" is removed;
- a created row whose domain disappeared (libvirt lost it) gets it re-defined (and started if
  it should run); a domain found stopped where the row says running means the guest powered
  off while we were away: the row follows (after the first pass has started what should run);
and for everything tagged ours: a domain, a root disk or seed, an OVN port of an instance
port, or a host libvirtd's veth (drivers/compute/host_nic.py) with no row (or an id no row
knows) is an orphan of a crash and is removed.
Instances whose lock is held (API work in flight) are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from microcloudd.api.errors import MicrocloudError
from microcloudd.db.records import Image, Instance
from microcloudd.drivers.compute.base import EventSubscription
from microcloudd.drivers.compute.types import DomainStatus, EventKind, LifecycleEvent, PowerState, is_resync
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.services import instance_autostart as autostart
from microcloudd.services import instance_config as ic
from microcloudd.services import instance_launch as launch
from microcloudd.services import instance_spec as isp
from microcloudd.services import instance_view as view
from microcloudd.services import network_ports, network_store
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_locks import locks

log = logging.getLogger(__name__)
DEFAULT_INTERVAL = 60.0

_LIFECYCLE = {EventKind.STARTED: "instance-started", EventKind.STOPPED: "instance-stopped",
              EventKind.SUSPENDED: "instance-paused", EventKind.RESUMED: "instance-resumed",
              EventKind.SHUTDOWN: "instance-shutdown", EventKind.CRASHED: "instance-crashed"}


@dataclass
class Report:
    finished: list[str] = field(default_factory=list)  # launches driven to "created"
    removed: list[str] = field(default_factory=list)  # instances removed (deletes finished, launches failed)
    redefined: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # "domain x", "volume pool/x", "port <id>"
    errors: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # by the member's start (autostart)


class InstanceReconciler:
    def __init__(self, cloud: Cloud, interval: float = DEFAULT_INTERVAL) -> None:
        self.cloud, self.interval = cloud, interval
        self._tasks: list[asyncio.Task[None]] = []
        self._pass_lock = asyncio.Lock()
        self._booted = False  # the first pass starts what should run (instance_autostart)
        self._stopping = False  # the daemon is shutting its guests down: their stops are not the users'

    async def start(self) -> None:
        try:  # the key QEMU opens RBD images with; once per start, it outlives us in libvirt
            await launch.ensure_ceph_secret(self.cloud)
        except MicrocloudError as e:
            log.warning("cannot store the Ceph key in libvirt: %s", e)
        # Subscribe before returning, so no libvirt event after start() can be missed.
        events = self.cloud.compute.subscribe() if self.cloud.compute is not None else None
        self._tasks = [asyncio.create_task(self._periodic(), name="instance-reconciler")]
        if events is not None:
            self._tasks.append(asyncio.create_task(self._watch_events(events), name="instance-events"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def shutdown_instances(self, budget: float = autostart.SHUTDOWN_BUDGET) -> list[str]:
        """The daemon's graceful stop: no more passes; running guests shut down, recorded RUNNING."""
        self._stopping = True
        async with self._pass_lock:  # let a pass in flight finish; none starts after this
            return await autostart.shutdown_instances(self.cloud, budget)

    async def _periodic(self) -> None:
        while True:
            try:
                await self.run_once()
            except MicrocloudError as e:
                log.warning("instance reconciler: %s", e)
            except Exception:
                log.exception("instance reconciler pass failed")
            await asyncio.sleep(self.interval)

    # -- one pass ----------------------------------------------------------------------------
    async def run_once(self) -> Report:
        async with self._pass_lock:
            report = Report()
            if self._stopping:
                return report
            cloud = self.cloud
            db = cloud.need_db()
            boot, self._booted = not self._booted, True
            if boot:  # before the row of a guest that died with us follows it
                report.started, report.redefined = await autostart.start_instances(cloud)
            # One libvirt query for every domain; a pass at 500 instances would otherwise make
            # a thousand. Only what looks wrong in it is asked again, under the instance's lock.
            domains = await self._domains()
            for rec in sorted(db.all(Instance), key=lambda r: r.name):
                if rec.location != cloud.server_name or locks(cloud).busy(rec.name):
                    continue
                try:
                    async with locks(cloud).hold(rec.name):
                        await self._converge(rec.name, report, boot, domains.get(rec.name))
                except MicrocloudError as e:
                    report.errors.append(f"{rec.name}: {e}")
                    log.warning("instance %s: %s", rec.name, e)
            await self._orphans(report, domains)
            return report

    async def _domains(self) -> dict[str, DomainStatus]:
        """This member's domains by instance name (empty without a compute driver)."""
        compute = self.cloud.compute
        if compute is None:
            return {}
        return {d.instance or d.name: d for d in await compute.list_owned()}

    async def _converge(self, name: str, report: Report, boot: bool = False,
                        seen: DomainStatus | None = None) -> None:
        """`seen`: the instance's domain in the pass's listing (None: it was not there)."""
        cloud = self.cloud
        rec = cloud.need_db().get_or_none(Instance, name)
        if rec is None:
            return
        if rec.stage == launch.DELETING:
            await launch.remove(cloud, name)
            report.removed.append(name)
            cloud.events.lifecycle("instance-deleted", view.url(name))
        elif rec.stage == launch.CREATING:
            try:
                await launch.realise(cloud, rec)
                report.finished.append(name)
                cloud.events.lifecycle("instance-created", view.url(name), type="virtual-machine")
            except MicrocloudError as e:
                log.warning("instance %s: finishing its launch failed (%s): removing it", name, e)
                await launch.remove(cloud, name)
                report.removed.append(name)
        else:
            await self._check_domain(rec, report, boot, seen)

    async def _check_domain(self, rec: Instance, report: Report, boot: bool,
                            seen: DomainStatus | None) -> None:
        """`boot`: the member's first pass, after autostart started what should run. `seen`
        is from before the lock was taken: anything that calls for a change is asked again."""
        cloud, compute = self.cloud, self.cloud.need_compute()
        if seen is not None and (seen.state is not PowerState.STOPPED or rec.status == "Stopped"):
            return  # defined, and its power state is not in question
        if not await compute.exists(rec.name):
            await compute.define(isp.domain_spec(cloud, rec), may_exist=True)
            report.redefined.append(rec.name)
            if rec.status in ("Running", "Frozen") and not boot:
                await compute.start(rec.name)
                if rec.status == "Frozen":
                    await cloud.need_db().update(Instance, rec.name, status="Running")
                return
        st = await compute.state(rec.name)
        if st.state is PowerState.STOPPED and rec.status != "Stopped":
            # At boot: not to be started (autostart). Later: it powered off and we missed the
            # event, so a restart leaves it off too.
            config = rec.config if boot else autostart.with_state(rec.config, autostart.STOPPED)
            await cloud.need_db().update(Instance, rec.name, status="Stopped", config=config)

    # -- orphans -----------------------------------------------------------------------------
    async def _orphans(self, report: Report, domains: dict[str, DomainStatus]) -> None:
        """`domains`: the pass's listing, taken before its rows were read (an instance's row
        is written before its domain is defined, so a listed domain without a row is no launch
        in flight)."""
        cloud = self.cloud
        db = cloud.need_db()
        if cloud.compute is not None:
            for name, dom in domains.items():
                if name in report.removed:
                    continue  # removed with its row earlier in this pass
                if db.get_or_none(Instance, name) is None and not locks(cloud).busy(name):
                    await self._quietly(report, f"domain {dom.name}",
                                        cloud.compute.undefine(dom.name, if_exists=True, force=True))
            await self._host_nic_orphans(report)
        if cloud.storage is not None:
            pools = {isp.default_pool(cloud)} | {i.pool for i in db.all(Image) if i.pool}
            pools |= {isp.root_pool(cloud, r) for r in db.all(Instance)}
            for pool in sorted(pools):
                try:  # names only: opening each image to describe it was most of a pass's work
                    names = await cloud.storage.volume_names(pool, type=VolumeType.VM)
                except MicrocloudError:
                    continue  # a pool not created yet
                for vol in names:
                    owner = vol.removesuffix(isp.SEED_SUFFIX)
                    if db.get_or_none(Instance, owner) is None and not locks(cloud).busy(owner):
                        backend = naming.backend_name(VolumeType.VM, vol)
                        await self._quietly(report, f"volume {pool}/{backend}",
                                            cloud.storage.delete_volume(pool, vol, type=VolumeType.VM,
                                                                        if_exists=True))
        if cloud.network is not None:
            # Ports the networks service recorded for an instance that has no row (or no such
            # NIC any more); OVN ports nobody recorded are the network reconciler's.
            for port in network_store.ports(db):
                rec = db.get_or_none(Instance, port.instance)
                wanted = rec is not None and \
                    isp.expanded(cloud, rec).devices.get(port.device, {}).get("network") == port.network
                if not wanted and not locks(cloud).busy(port.instance):
                    await self._quietly(report, f"port {port.id} ({port.instance}/{port.device})",
                                        network_ports.detach_port(cloud, port.network, port.instance,
                                                                  port.device))

    async def _host_nic_orphans(self, report: Report) -> None:
        """Host-side NIC plumbing (a host libvirtd's veths) of a port no NIC of ours has any
        more. Listed before the rows are read: a NIC's row is written before its veth is made."""
        cloud, compute = self.cloud, self.cloud.need_compute()
        plumbed = await compute.host_nic_ports()
        if not plumbed:
            return
        wanted: set[str] = set()
        for rec in cloud.need_db().all(Instance):
            if rec.location == cloud.server_name:
                rec = isp.expanded(cloud, rec)
                wanted |= {isp.port_id(rec, n) for n in ic.nic_devices(rec.devices)}
        for port in sorted(plumbed - wanted):
            await self._quietly(report, f"host NIC of port {port}", compute.remove_host_nic(port))

    @staticmethod
    async def _quietly(report: Report, what: str, aw: object) -> None:
        try:
            if await aw is False:  # type: ignore[misc]
                return  # already gone (removed meanwhile by whoever held it)
            report.orphans.append(what)
            log.info("instance reconciler removed orphan %s", what)
        except MicrocloudError as e:
            report.errors.append(f"{what}: {e}")

    # -- libvirt events ----------------------------------------------------------------------
    async def _watch_events(self, sub: EventSubscription) -> None:
        try:
            async for ev in sub:
                try:
                    await self.on_event(ev)
                except MicrocloudError as e:
                    log.warning("handling libvirt event %s of %s: %s", ev.kind, ev.name, e)
        finally:
            sub.close()

    async def on_event(self, ev: LifecycleEvent) -> None:
        cloud = self.cloud
        if cloud.db is None:
            return
        if is_resync(ev):  # libvirt's connection was lost and is back: events were missed
            log.info("the libvirt connection is back: checking every instance now")
            await self.run_once()
            return
        rec = cloud.db.get_or_none(Instance, ev.name)
        if rec is None or rec.location != cloud.server_name or rec.uuid != ev.uuid:
            return  # not one of ours (another owner's domain on a shared libvirt)
        action = _LIFECYCLE.get(ev.kind)
        if action:
            cloud.events.lifecycle(action, view.url(rec.name))
        # The guest powered itself off (no action of ours in flight): the row follows, and a
        # daemon restart leaves it off. (A stop of our own holds the lock or `_stopping`.)
        recorded = rec.status == "Stopped" and rec.config.get(autostart.LAST_STATE) == autostart.STOPPED
        if ev.kind == EventKind.STOPPED and not recorded and not locks(cloud).busy(rec.name) \
                and not self._stopping and rec.stage == launch.CREATED:
            await cloud.db.update(Instance, rec.name, status="Stopped",
                                  config=autostart.with_state(rec.config, autostart.STOPPED))


async def start(cloud: Cloud, interval: float = DEFAULT_INTERVAL) -> InstanceReconciler:
    """Start this member's instance reconciler (the daemon calls this once its drivers are in)."""
    r = InstanceReconciler(cloud, interval)
    await r.start()
    return r


async def stop(reconciler: InstanceReconciler) -> None:
    await reconciler.stop()



