"""Networks: validate a request, record the desired network in the cluster database, then
realise it in OVN under a Reverter (a failure leaves neither a row nor OVN state behind).

Also the entry points other areas call: `ensure_default_network` and `summary` (init and
status), `set_uplink`, and the instance NIC helpers `attach_port`/`detach_port` (re-exported
from network_ports).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping

from microcloudd.api.errors import AlreadyExists, Conflict, InUse, InvalidArgument, NotFound
from microcloudd.api.names import check_name
from microcloudd.api.networks import Network, NetworkLease, NetworkState, NetworkStateAddress
from microcloudd.db.database import Database
from microcloudd.db.records import Instance, NetworkForward, Profile
from microcloudd.db.records import Network as NetworkRecord
from microcloudd.drivers.network.base import UplinkSpec
from microcloudd.drivers.network.ovn_network import check_uplink
from microcloudd.services import config_patch
from microcloudd.services import network_config as netcfg
from microcloudd.services import network_store as store
from microcloudd.services.cloud import Cloud
from microcloudd.services.network_ports import attach_port, detach_port, get_port, set_port_acls
from microcloudd.services.reverter import Reverter

__all__ = [
    "attach_port", "create_network", "delete_network", "detach_port", "ensure_default_network", "get_network",
    "get_port", "leases", "list_networks", "patch_network", "replace_network", "set_port_acls", "set_uplink",
    "summary",
]
log = logging.getLogger(__name__)


def record(db: Database, name: str) -> NetworkRecord:
    rec = db.get_or_none(NetworkRecord, name)
    if rec is None:
        raise NotFound(f"Network {name!r} not found")
    return rec


def used_by(db: Database, name: str) -> list[str]:
    """Instances with a port (or a NIC device) on the network, and profiles naming it."""
    users = {f"/1.0/instances/{p.instance}" for p in store.ports(db, network=name)}
    for inst in db.all(Instance):
        if any(d.get("type") == "nic" and d.get("network") == name for d in inst.devices.values()):
            users.add(f"/1.0/instances/{inst.name}")
    for prof in db.all(Profile):
        if any(d.get("type") == "nic" and d.get("network") == name for d in prof.devices.values()):
            users.add(f"/1.0/profiles/{prof.name}")
    return sorted(users)


def to_api(db: Database, rec: NetworkRecord) -> Network:
    return Network(name=rec.name, description=rec.description, type=rec.type, status=rec.status,
                   config=dict(rec.config), used_by=used_by(db, rec.name))


def list_networks(cloud: Cloud) -> list[Network]:
    db = cloud.need_db()
    return [to_api(db, r) for r in sorted(db.all(NetworkRecord), key=lambda r: r.name)]


def get_network(cloud: Cloud, name: str) -> Network:
    db = cloud.need_db()
    return to_api(db, record(db, name))


def _uplink(db: Database) -> UplinkSpec:
    up = store.uplink(db)
    if up is None:
        raise Conflict("No uplink is configured yet: networks need one for their external access "
                       "(run `microcloud init`)")
    return up


def _resolve(db: Database, name: str, config: Mapping[str, str], old: Mapping[str, str] | None = None
             ) -> dict[str, str]:
    """Check the keys, keep our volatile keys, pick `auto` subnets, check overlaps."""
    resolved = {k: v for k, v in config.items() if not k.startswith("volatile.")}
    if old is not None:
        resolved.update({k: v for k, v in old.items() if k.startswith("volatile.")})
        resolved.setdefault("ipv4.address", old.get("ipv4.address", "auto"))
    netcfg.check_keys(name, resolved)
    up = _uplink(db)
    others = [(r.name, r.config) for r in db.all(NetworkRecord) if r.name != name]
    taken = netcfg.taken_subnets(others, up)
    if resolved.get("ipv4.address", "auto") == "auto":
        resolved["ipv4.address"] = netcfg.auto_ipv4(taken, netcfg.host_routes())
    if resolved.get("ipv6.address") == "auto":
        resolved["ipv6.address"] = netcfg.auto_ipv6(taken)
    if resolved.get("ipv6.address") in ("", "none"):
        resolved.pop("ipv6.address")
    netcfg.check_subnets(resolved, taken)
    return resolved


async def create_network(cloud: Cloud, name: str, *, description: str = "",
                         config: Mapping[str, str] | None = None, type_: str = "ovn") -> Network:
    check_name("network", name)
    if type_ != "ovn":
        raise InvalidArgument(f"Network type {type_!r} is not supported: microcloud networks are of type ovn")
    db, driver = cloud.need_db(), cloud.need_network()
    if db.get_or_none(NetworkRecord, name) is not None:
        raise AlreadyExists(f"Network {name!r} already exists")
    resolved = _resolve(db, name, config or {})
    spec = netcfg.to_spec(name, description, resolved)
    async with store.lock(cloud), Reverter() as revert:
        await db.insert(NetworkRecord(name=name, type="ovn", config=resolved, description=description,
                                      status="Pending"))
        revert.add(lambda: db.delete(NetworkRecord, name, if_exists=True), f"network {name} record")
        info = await driver.create_network(spec)
        revert.add(lambda: driver.delete_network(name, if_exists=True), f"network {name} in OVN")
        resolved[netcfg.UPLINK_ADDRESS] = info.spec.uplink_address or ""
        rec = await db.update(NetworkRecord, name, config=resolved, status="Created")
        revert.success()
    cloud.events.lifecycle("network-created", f"/1.0/networks/{name}")
    log.info("network %s created (%s)", name, resolved["ipv4.address"])
    return to_api(db, rec)


def _addressing(config: Mapping[str, str]) -> tuple[str | None, ...]:
    return (config.get("ipv4.address"), config.get("ipv6.address"), config.get("ipv6.dhcp.stateful"))


async def replace_network(cloud: Cloud, name: str, *, description: str, config: Mapping[str, str]) -> Network:
    """PUT: the given config replaces the old one (ipv4.address and volatile keys are kept when
    not given); re-applied to OVN in one transaction."""
    db, driver = cloud.need_db(), cloud.need_network()
    old = record(db, name)
    resolved = _resolve(db, name, config, old.config)
    spec = netcfg.to_spec(name, description, resolved)
    ports = store.ports(db, network=name)
    if ports and _addressing(resolved) != _addressing(old.config):
        users = sorted({f"/1.0/instances/{p.instance}" for p in ports})
        raise InUse(f"Network {name!r} has ports ({', '.join(users)}): its subnets cannot change now")
    async with store.lock(cloud), Reverter() as revert:
        rec = await db.update(NetworkRecord, name, config=resolved, description=description)
        revert.add(lambda: db.update(NetworkRecord, name, config=old.config, description=old.description))
        await driver.update_network(spec)
        revert.success()
    cloud.events.lifecycle("network-updated", f"/1.0/networks/{name}")
    return to_api(db, rec)


async def patch_network(cloud: Cloud, name: str, *, description: str | None = None,
                        config: Mapping[str, str] | None = None) -> Network:
    """PATCH: the given keys change (an empty value removes a key), the others stay."""
    old = record(cloud.need_db(), name)
    merged = config_patch.patched(old.config, config)
    desc = old.description if description is None else description
    return await replace_network(cloud, name, description=desc, config=merged)


async def delete_network(cloud: Cloud, name: str) -> None:
    db, driver = cloud.need_db(), cloud.need_network()
    rec = record(db, name)
    users = used_by(db, name)
    if users:
        raise InUse(f"Network {name!r} is in use by {', '.join(users)}: detach or delete them first",
                    used_by=users)
    forwards = db.find(NetworkForward, network=name)
    async with store.lock(cloud), Reverter() as revert:
        async with db.transaction() as txn:
            for f in forwards:
                txn.delete(NetworkForward, f.row_key(), if_exists=True)
            txn.delete(NetworkRecord, name, if_exists=True)

        async def restore() -> None:
            async with db.transaction() as t:
                t.insert(rec, may_exist=True)
                for f in forwards:
                    t.insert(f, may_exist=True)

        revert.add(restore, f"network {name} record")
        await driver.delete_network(name, if_exists=True)
        revert.success()
    cloud.events.lifecycle("network-deleted", f"/1.0/networks/{name}")
    log.info("network %s deleted", name)


async def leases(cloud: Cloud, name: str) -> list[NetworkLease]:
    db = cloud.need_db()
    record(db, name)
    by_port = {p.id: p for p in store.ports(db, network=name)}
    out = []
    for lease in await cloud.need_network().leases(name):
        location = ""
        port = by_port.get(lease.port_id or "")
        if port is not None:
            inst = db.get_or_none(Instance, port.instance)
            location = inst.location if inst is not None else ""
        out.append(NetworkLease(hostname=lease.hostname, hwaddr=lease.mac, address=lease.address,
                                type=lease.type, location=location))
    return out


async def state(cloud: Cloud, name: str) -> NetworkState:
    db = cloud.need_db()
    rec = record(db, name)
    info = await cloud.need_network().get_network(name)
    addresses = []
    for key, family in (("ipv4.address", "inet"), ("ipv6.address", "inet6")):
        value = rec.config.get(key)
        if value:
            iface = ipaddress.ip_interface(value)
            addresses.append(NetworkStateAddress(family=family, address=str(iface.ip),
                                                 netmask=str(iface.network.prefixlen)))
    gateway = [lease for lease in await cloud.need_network().leases(name) if lease.type == "gateway"]
    return NetworkState(addresses=addresses, hwaddr=gateway[0].mac if gateway else "", mtu=info.spec.mtu,
                        ovn={"uplink_ipv4": info.spec.uplink_address or "", "ports": info.ports})


async def set_uplink(cloud: Cloud, spec: UplinkSpec) -> None:
    """Record the uplink every network's router attaches to, then configure it in OVN."""
    db, driver = cloud.need_db(), cloud.need_network()
    check_uplink(spec)
    up_net = ipaddress.IPv4Network(spec.cidr)
    for label, net in netcfg.taken_subnets([(r.name, r.config) for r in db.all(NetworkRecord)], None):
        if net.version == 4 and net.overlaps(up_net):
            raise InvalidArgument(f"uplink subnet {up_net} overlaps {net}, the subnet of {label}")
    async with store.lock(cloud):
        await store.put_uplink(db, spec)
        await driver.ensure_uplink(spec)


async def ensure_default_network(cloud: Cloud, name: str = "default", ipv4: str = "auto",
                                 uplink: UplinkSpec | None = None,
                                 description: str = "Default network") -> Network:
    """For `microcloud init` (idempotent): the uplink if given, then the network unless it
    exists; a network left Pending/Errored by an interrupted earlier run is realised now."""
    db, driver = cloud.need_db(), cloud.need_network()
    if uplink is not None:
        await set_uplink(cloud, uplink)
    rec = db.get_or_none(NetworkRecord, name)
    if rec is None:
        return await create_network(cloud, name, description=description, config={"ipv4.address": ipv4})
    if rec.status != "Created" or not rec.config.get(netcfg.UPLINK_ADDRESS):
        async with store.lock(cloud):
            spec = netcfg.to_spec(name, rec.description, rec.config)
            info = await driver.create_network(spec, may_exist=True)
            config = {**rec.config, netcfg.UPLINK_ADDRESS: info.spec.uplink_address or ""}
            rec = await db.update(NetworkRecord, name, config=config, status="Created")
    return to_api(db, rec)


def summary(cloud: Cloud) -> dict[str, object]:
    """For `microcloud status`: counts from the cluster database and the uplink."""
    if cloud.db is None:
        return {}
    db = cloud.db
    nets = db.all(NetworkRecord)
    up = store.uplink(db)
    out: dict[str, object] = {
        "networks": len(nets),
        "ports": len(store.ports(db)),
        "uplink": f"{up.cidr} via {up.gateway}" if up else "none",
    }
    bad = sorted(n.name for n in nets if n.status != "Created")
    if bad:
        out["not_created"] = ", ".join(bad)
    return out
