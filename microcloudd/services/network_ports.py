"""Instance NIC ports, for the instances service: attach (idempotent), change ACLs, detach.

    info = await attach_port(cloud, "default", "web1", "eth0", acls=("web",))
    info.id   -> libvirt's <virtualport><parameters interfaceid=...>
    info.mac, info.ipv4

The port is recorded first (network_store), then created in OVN; the reconciler recreates
a recorded port that disappeared and removes one nobody recorded.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from microcloudd.api.errors import InvalidArgument, NotFound
from microcloudd.db.database import Database
from microcloudd.db.records import Network as NetworkRecord
from microcloudd.db.records import NetworkACL
from microcloudd.drivers.network import addressing
from microcloudd.drivers.network.base import PortInfo, PortSpec
from microcloudd.services import network_store as store
from microcloudd.services.cloud import Cloud
from microcloudd.services.network_store import PortRecord
from microcloudd.services.reverter import Reverter

log = logging.getLogger(__name__)


def port_spec(rec: PortRecord) -> PortSpec:
    return PortSpec(network=rec.network, name=rec.name, id=rec.id, mac=rec.mac, ipv4=rec.ipv4,
                    hostname=rec.hostname, acls=rec.acls)


def _network(db: Database, name: str) -> NetworkRecord:
    rec = db.get_or_none(NetworkRecord, name)
    if rec is None:
        raise NotFound(f"Network {name!r} not found")
    return rec


def _check_acls(db: Database, acls: Sequence[str]) -> tuple[str, ...]:
    for a in acls:
        if db.get_or_none(NetworkACL, a) is None:
            raise NotFound(f"Network ACL {a!r} not found")
    return tuple(sorted(set(acls)))


def _hostname(db: Database, network: str, instance: str, pid: str) -> str | None:
    """The instance's DNS name on this network, unless another of its NICs there has it."""
    for p in store.ports(db, network=network):
        if p.hostname == instance and p.id != pid:
            return None
    return instance


async def attach_port(cloud: Cloud, network: str, instance: str, device: str, *, mac: str | None = None,
                      ipv4: str | None = None, acls: Sequence[str] = ()) -> PortInfo:
    """Make the port of `instance`'s NIC `device` exist on `network` as asked (idempotent)."""
    db, driver = cloud.need_db(), cloud.need_network()
    net = _network(db, network)
    acl_names = _check_acls(db, acls)
    if mac is not None:
        mac = addressing.check_mac(mac)
    if ipv4 is not None:
        gw = ipaddress.IPv4Interface(net.config["ipv4.address"])
        ipv4 = addressing.host_address(ipv4, gw.network, f"ipv4.address of {instance}/{device}")
        if ipv4 == str(gw.ip):
            raise InvalidArgument(f"ipv4.address {ipv4} of {instance}/{device} is the gateway of network "
                                  f"{network!r}")
    pid = store.port_id(network, instance, device)
    old = store.port(db, pid)
    rec = PortRecord(id=pid, network=network, instance=instance, device=device,
                     mac=mac or (old.mac if old else addressing.random_mac()), ipv4=ipv4,
                     hostname=_hostname(db, network, instance, pid), acls=acl_names)
    async with store.lock(cloud), Reverter() as revert:
        if old != rec:
            await store.put_port(db, rec)
            revert.add((lambda: store.put_port(db, old)) if old else (lambda: store.drop_port(db, pid)),
                       f"port record {rec.name}")
        info = await driver.create_port(port_spec(rec), may_exist=True)
        if info.mac != rec.mac or (rec.ipv4 and info.ipv4 != rec.ipv4):
            # The NIC's address changed: the port is remade (same id, so libvirt's interfaceid holds).
            await driver.delete_port(pid, if_exists=True)
            info = await driver.create_port(port_spec(rec))
        elif info.acls != rec.acls:
            info = await driver.set_port_acls(pid, rec.acls)
        revert.success()
    log.info("port %s (%s) on network %s: %s %s", rec.name, pid, network, info.mac, info.ipv4 or "dynamic")
    return info


async def set_port_acls(cloud: Cloud, network: str, instance: str, device: str,
                        acls: Sequence[str]) -> PortInfo:
    """Change the ACLs of an attached NIC (its `security.acls`)."""
    db, driver = cloud.need_db(), cloud.need_network()
    pid = store.port_id(network, instance, device)
    old = store.port(db, pid)
    if old is None:
        raise NotFound(f"{instance}/{device} has no port on network {network!r}")
    rec = PortRecord(**{**old.__dict__, "acls": _check_acls(db, acls)})
    async with store.lock(cloud), Reverter() as revert:
        await store.put_port(db, rec)
        revert.add(lambda: store.put_port(db, old))
        info = await driver.set_port_acls(pid, rec.acls)
        revert.success()
    return info


async def get_port(cloud: Cloud, network: str, instance: str, device: str) -> PortInfo:
    db, driver = cloud.need_db(), cloud.need_network()
    pid = store.port_id(network, instance, device)
    if store.port(db, pid) is None:
        raise NotFound(f"{instance}/{device} has no port on network {network!r}")
    return await driver.get_port(pid)


async def detach_port(cloud: Cloud, network: str, instance: str, device: str) -> None:
    """Remove the NIC's port; nothing to do when it is already gone."""
    db, driver = cloud.need_db(), cloud.need_network()
    pid = store.port_id(network, instance, device)
    async with store.lock(cloud):
        await store.drop_port(db, pid)
        await driver.delete_port(pid, if_exists=True)
