"""Build the storage, network and compute drivers of a started stack into the Cloud, and
the settings services read beside them (see services/instance_spec.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from microcloudd.api.errors import MicrocloudError
from microcloudd.services.cloud import Cloud
from microcloudd.stack import guest_ceph

if TYPE_CHECKING:
    from microcloudd.stack.components import LocalStack

log = logging.getLogger(__name__)


async def connect(cloud: Cloud, stack: LocalStack, secret_uuid: str) -> None:
    """Connect every driver (those already connected are kept); fill cloud.settings."""
    # Imported here, not at module level: librados/librbd, libvirt and ovsdbapp's NB schema
    # cost ~30 MB of RSS, which a daemon that is not initialised (or not yet) should not pay.
    from microcloudd.drivers.compute.libvirt import LibvirtDriver
    from microcloudd.drivers.network.ovn import OvnNetworkDriver
    from microcloudd.drivers.storage.rbd import RBDDriver

    plan, owner = stack.plan, stack.plan.member
    access = await asyncio.to_thread(stack.ceph_access)
    cloud.settings.update({
        "member": owner,
        "storage.pool": plan.storage.pool,
        "network.default": plan.network.name,
        "ceph.conf": str(access.conf_path),
        "ceph.keyring": str(access.keyring_path),
        "ceph.user": access.user,
        "ceph.fsid": access.fsid,
        "ceph.mon_host": access.mon_host,
        "ceph.key": await asyncio.to_thread(lambda: access.key),
        "ceph.secret_uuid": secret_uuid,
        "ovs.bridge": stack.chassis.bridge,
        "ovs.rundir": str(stack.chassis.run_dir),
        "netns": stack.lay.netns,
        "libvirt.uri": stack.libvirt_uri,
        "ovn.nb": stack.central.nb_remote,
        "ovn.sb": stack.central.sb_remote,
    })
    if cloud.storage is None:
        storage = RBDDriver(access.conf_path, access.keyring_path, user=access.user, owner=owner,
                            fence_file=stack.lay.ceph_client_note)
        await storage.connect()
        cloud.storage = storage
    if cloud.network is None:
        cloud.network = await OvnNetworkDriver.connect(stack.central.nb_remote, owner)
    if cloud.compute is None:
        conf = await asyncio.to_thread(guest_ceph.write, stack.lay, access.mon_host,
                                       host_libvirt=stack.host_libvirt)
        compute = await LibvirtDriver.connect(stack.libvirt_uri, owner, guest_ceph_conf=conf)
        if stack.host_libvirt:  # its QEMU is outside our namespace: NICs through veths
            from microcloudd.drivers.compute.host_nic import HostNicCompute, HostNics

            nics = HostNics(stack.lay.netns, stack.chassis.db_sock, stack.chassis.bridge)
            cloud.compute = HostNicCompute(compute, nics)
        else:
            cloud.compute = compute


async def close(cloud: Cloud) -> None:
    """Close every driver (before their components stop, so nothing hangs on a dead socket)."""
    for attr in ("compute", "network", "storage"):
        drv = getattr(cloud, attr)
        setattr(cloud, attr, None)
        if drv is None:
            continue
        with contextlib.suppress(MicrocloudError, OSError):
            try:
                await asyncio.wait_for(drv.close(), 5)
            except TimeoutError:
                log.warning("closing the %s driver took more than 5 s; going on", attr)
