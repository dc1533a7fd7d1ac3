"""From an instance's database row to what the drivers need: RBD names, ports, the domain spec.

Everything here is derived from the row alone (ids, MACs and port UUIDs were chosen and
recorded before any backend was touched), so every step can be re-run after a crash and
arrive at the same objects.

Settings read from `cloud.settings` (filled by the daemon at init):
  storage.pool      the default RBD pool for root disks ("remote")
  ceph.mon_host     monitors QEMU connects to: "ip:port[,ip:port...]"
  ceph.user         cephx user QEMU uses (without "client."), default "admin"
  ceph.secret_uuid  the libvirt secret holding that user's key
  ceph.key          that key (base64); when set, the secret is (re)defined in libvirt
  network.default   the network of the default eth0 ("" or absent: no default NIC)
  ovs.bridge        the integration bridge ("br-int")
"""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

from microcloudd.api.errors import Unavailable
from microcloudd.db.records import Instance
from microcloudd.drivers.compute.types import CephMonitor, Disk, DomainSpec, Nic, RbdImage
from microcloudd.drivers.network.base import PortSpec
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.services import instance_config as ic
from microcloudd.services import network_store
from microcloudd.services import profile_expand as pe
from microcloudd.services.cloud import Cloud

SEED_SUFFIX = "-cidata"  # the seed is the VM volume "<instance>-cidata": such names are reserved
MAX_NAME = 63 - len(SEED_SUFFIX)


def default_pool(cloud: Cloud) -> str:
    return cloud.default_pool


def expanded(cloud: Cloud, rec: Instance) -> Instance:
    """The row with its profiles applied: what the backends realise (see profile_expand)."""
    return pe.expanded(cloud, rec)


def root_pool(cloud: Cloud, rec: Instance) -> str:
    _, root = ic.root_device(expanded(cloud, rec).devices)
    return root.get("pool") or default_pool(cloud)


def root_size(rec: Instance) -> int:
    """The root disk's size in bytes (0: the image's); `rec` expanded."""
    _, root = ic.root_device(rec.devices)
    return ic.parse_size(root["size"], "root size") if root.get("size") else 0


def seed_volume(name: str) -> str:
    return name + SEED_SUFFIX


def port_name(instance: str, device: str) -> str:
    return f"{instance}/{device}"


def port_id(rec: Instance, device: str) -> str:
    """The OVN port of a NIC: derived by the networks service from (network, instance, device)."""
    return network_store.port_id(rec.devices[device]["network"], rec.name, device)


def mac(rec: Instance, device: str) -> str:
    return rec.config.get(f"volatile.{device}.hwaddr") or rec.devices.get(device, {}).get("hwaddr", "")


def new_mac() -> str:
    b = uuidlib.uuid4().bytes
    return f"00:16:3e:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}"  # LXD's OUI, as its instances


def port_specs(rec: Instance) -> list[PortSpec]:
    """The OVN ports of `rec`'s NICs; `rec` expanded."""
    return [PortSpec(network=dev["network"], name=port_name(rec.name, n), id=port_id(rec, n), mac=mac(rec, n),
                     ipv4=dev.get("ipv4.address") or None, hostname=rec.name)
            for n, dev in ic.nic_devices(rec.devices).items()]


def _monitors(cloud: Cloud) -> tuple[CephMonitor, ...]:
    raw = cloud.settings.get("ceph.mon_host", "")
    mons = []
    for part in raw.replace(";", ",").split(","):
        part = part.strip().removeprefix("v2:").removeprefix("[").split("/")[0]
        if not part:
            continue
        host, _, port = part.rpartition(":")
        mons.append(CephMonitor(host.strip("[]") or part, int(port) if port.isdigit() else 3300))
    if not mons:
        raise Unavailable("Ceph monitor addresses are not configured (ceph.mon_host): run `microcloud init`")
    return tuple(mons)


def rbd(cloud: Cloud, pool: str, backend: str) -> RbdImage:
    secret = cloud.settings.get("ceph.secret_uuid")
    if not secret:
        raise Unavailable("the libvirt secret for Ceph is not configured (ceph.secret_uuid)")
    return RbdImage(pool=pool, image=backend, monitors=_monitors(cloud),
                    user=cloud.settings.get("ceph.user") or "admin", secret_uuid=secret)


def console_log(cloud: Cloud, name: str) -> Path:
    return cloud.state_dir / "logs" / f"{name}.console.log"


def domain_spec(cloud: Cloud, rec: Instance) -> DomainSpec:
    rec = expanded(cloud, rec)
    lim = ic.limits(rec.config)
    pool = root_pool(cloud, rec)
    bridge = cloud.settings.get("ovs.bridge") or "br-int"
    disks = tuple(
        Disk(source=rbd(cloud, dev.get("pool") or default_pool(cloud),
                        naming.backend_name(VolumeType.CUSTOM, dev["source"])))
        for dev in ic.volume_devices(rec.devices).values())
    nics = tuple(Nic(mac=mac(rec, n), port_id=port_id(rec, n), bridge=bridge)
                 for n in ic.nic_devices(rec.devices))
    return DomainSpec(
        instance=rec.name, uuid=rec.uuid, vcpus=lim.vcpus, memory_mib=lim.memory_mib,
        root=rbd(cloud, pool, naming.backend_name(VolumeType.VM, rec.name)),
        seed=rbd(cloud, pool, naming.backend_name(VolumeType.VM, seed_volume(rec.name))),
        disks=disks, nics=nics, console_log=console_log(cloud, rec.name),
    )
