"""The launch and delete state machines of an instance.

Launch: the database row (stage "creating", every id chosen) → root disk (COW clone of the
image's protected snapshot) → OVN port per NIC → NoCloud seed in RBD → custom volumes
marked attached → libvirt domain → started if wanted → stage "created".
Delete: stage "deleting" → domain gone → ports gone → volumes detached, seed and root disk
(with its snapshots) gone → snapshot rows and the row gone.

Every step is idempotent (`may_exist`/`if_exists`, ids from the row), so after a crash the
reconciler re-runs `realise` or `remove` from the start and ends in the same place.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from microcloudd import faults
from microcloudd.api.errors import AlreadyExists, Conflict, MicrocloudError
from microcloudd.db.records import Instance, InstanceSnapshot
from microcloudd.drivers.compute.types import PowerState
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.services import instance_config as ic
from microcloudd.services import instance_seed, instance_spec, network_ports
from microcloudd.services.cloud import Cloud
from microcloudd.services.reverter import Reverter

log = logging.getLogger(__name__)

CREATING, CREATED, DELETING = "creating", "created", "deleting"


async def ensure_ceph_secret(cloud: Cloud) -> None:
    """Define the libvirt secret QEMU opens RBD images with, when this daemon holds the key."""
    key = cloud.settings.get("ceph.key")
    secret = cloud.settings.get("ceph.secret_uuid")
    if key and secret:
        await cloud.need_compute().ensure_ceph_secret(secret, cloud.settings.get("ceph.user") or "admin", key)


async def realise(cloud: Cloud, rec: Instance, revert: Reverter | None = None) -> Instance:
    """Bring every backend object of `rec` into existence; returns the row, stage "created".
    With `revert`, each new object is registered to be removed if a later step fails.
    The backends get the expansion (profiles applied); the row keeps the instance's own."""
    storage, compute = cloud.need_storage(), cloud.need_compute()
    cloud.need_network()
    db = cloud.need_db()
    rec = instance_spec.expanded(cloud, rec)
    pool = instance_spec.root_pool(cloud, rec)
    name = rec.name

    faults.point("launch.row")
    await storage.create_root_disk(pool, name, rec.image, size=instance_spec.root_size(rec), may_exist=True)
    if revert:
        revert.add(lambda: storage.delete_volume(pool, name, type=VolumeType.VM, if_exists=True), "root disk")
    faults.point("launch.root")

    for dev_name, dev in ic.nic_devices(rec.devices).items():
        await network_ports.attach_port(cloud, dev["network"], name, dev_name, mac=instance_spec.mac(rec,
                                                                                                     dev_name),
                                        ipv4=dev.get("ipv4.address") or None)
        if revert:
            revert.add(_undo_port(cloud, dev["network"], name, dev_name), f"port {name}/{dev_name}")
    faults.point("launch.ports")

    await instance_seed.write_seed(storage, pool, rec)
    if revert:
        revert.add(lambda: instance_seed.delete_seed(storage, pool, name), "seed")
    faults.point("launch.seed")

    for dev in ic.volume_devices(rec.devices).values():
        vpool, vol = dev.get("pool") or instance_spec.default_pool(cloud), dev["source"]
        await storage.set_attached(vpool, vol, name, True)
        if revert:
            revert.add(_undo_attach(cloud, vpool, vol, name), f"volume {vol}")

    await compute.define(instance_spec.domain_spec(cloud, rec), may_exist=True)
    if revert:
        revert.add(lambda: compute.undefine(name, if_exists=True, force=True), "domain")
    faults.point("launch.domain")

    if rec.status == "Running":
        st = await compute.state(name)
        if st.state is PowerState.STOPPED:
            await compute.start(name)
    faults.point("launch.started")
    return await db.update(Instance, name, stage=CREATED)


def _undo_port(cloud: Cloud, network: str, name: str, device: str) -> Callable[[], Awaitable[object]]:
    async def undo() -> None:
        await network_ports.detach_port(cloud, network, name, device)
    return undo


def _undo_attach(cloud: Cloud, pool: str, volume: str, name: str) -> Callable[[], Awaitable[object]]:
    async def undo() -> None:
        await cloud.need_storage().set_attached(pool, volume, name, False)
    return undo


async def remove(cloud: Cloud, name: str) -> None:
    """Remove everything of instance `name`, then its rows; safe to re-run at any point."""
    db = cloud.need_db()
    rec = db.get_or_none(Instance, name)
    if rec is None:
        return
    storage, compute = cloud.need_storage(), cloud.need_compute()
    if rec.stage != DELETING:
        rec = await db.update(Instance, name, stage=DELETING)
    rec = instance_spec.expanded(cloud, rec)
    faults.point("delete.marked")
    await compute.undefine(name, if_exists=True, force=True)
    faults.point("delete.domain")
    for dev_name, dev in ic.nic_devices(rec.devices).items():
        await network_ports.detach_port(cloud, dev["network"], name, dev_name)
    faults.point("delete.ports")
    pool = instance_spec.root_pool(cloud, rec)
    for dev in ic.volume_devices(rec.devices).values():
        try:
            await storage.set_attached(dev.get("pool") or instance_spec.default_pool(cloud), dev["source"],
                                       name, False)
        except MicrocloudError as e:  # the volume itself is gone: nothing holds it any more
            log.info("detaching volume %s from %s: %s", dev["source"], name, e)
    await instance_seed.delete_seed(storage, pool, name)
    await storage.delete_volume(pool, name, type=VolumeType.VM, if_exists=True)
    faults.point("delete.disks")
    async with db.transaction() as txn:
        for snap in db.find(InstanceSnapshot, instance=name):
            txn.delete(InstanceSnapshot, snap.row_key(), if_exists=True)
        txn.delete(Instance, name, if_exists=True)


async def launch(cloud: Cloud, rec: Instance) -> Instance:
    """Run a launch whose row is already in the database; on failure undo every step made
    and drop the row, so a failed launch leaves nothing behind."""
    db = cloud.need_db()
    revert = Reverter()
    try:
        async with revert:
            done = await realise(cloud, rec, revert)
            revert.success()
    except BaseException:
        try:
            await db.delete(Instance, rec.name, if_exists=True)
        except MicrocloudError:
            log.exception("launch of %s failed and its row could not be dropped (the reconciler will)",
                          rec.name)
        raise
    return done


async def insert_row(cloud: Cloud, rec: Instance) -> Instance:
    try:
        return await cloud.need_db().insert(rec)
    except AlreadyExists:
        raise AlreadyExists(f"Instance {rec.name!r} already exists", name=rec.name) from None


def check_final(rec: Instance) -> None:
    if rec.stage == CREATING:
        raise Conflict(f"Instance {rec.name!r} is still being created")
    if rec.stage == DELETING:
        raise Conflict(f"Instance {rec.name!r} is being deleted")
