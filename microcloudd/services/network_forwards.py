"""Network forwards: a listen address on the uplink sent to addresses on a network (a 1:1
NAT for `config.target_address`, per-port rules as load balancers), checked against the
cluster database before anything changes."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence

import msgspec

from microcloudd.api.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from microcloudd.api.networks import NetworkForward, NetworkForwardPort
from microcloudd.db.database import Database
from microcloudd.db.records import Network as NetworkRecord
from microcloudd.db.records import NetworkForward as ForwardRecord
from microcloudd.drivers.network import addressing
from microcloudd.drivers.network.base import ForwardPort, ForwardSpec
from microcloudd.services import config_patch
from microcloudd.services import network_store as store
from microcloudd.services.cloud import Cloud
from microcloudd.services.network_config import UPLINK_ADDRESS
from microcloudd.services.reverter import Reverter

log = logging.getLogger(__name__)


def spec_of(rec: ForwardRecord) -> ForwardSpec:
    ports = tuple(ForwardPort(protocol=p["protocol"], listen_port=p["listen_port"],
                              target_address=p["target_address"], target_port=p.get("target_port", ""))
                  for p in rec.ports)
    return ForwardSpec(listen_address=rec.listen_address,
                       target_address=rec.config.get("target_address") or None,
                       ports=ports, description=rec.description)


def to_api(rec: ForwardRecord) -> NetworkForward:
    return NetworkForward(listen_address=rec.listen_address, description=rec.description,
                          config=dict(rec.config),
                          ports=[msgspec.convert(p, NetworkForwardPort) for p in rec.ports])


def _network(db: Database, name: str) -> NetworkRecord:
    rec = db.get_or_none(NetworkRecord, name)
    if rec is None:
        raise NotFound(f"Network {name!r} not found")
    return rec


def record(db: Database, network: str, listen_address: str) -> ForwardRecord:
    _network(db, network)
    rec = db.get_or_none(ForwardRecord, (network, listen_address))
    if rec is None:
        raise NotFound(f"Network {network!r} has no forward on {listen_address}")
    return rec


def check(db: Database, rec: ForwardRecord) -> ForwardRecord:
    """Listen address on the uplink and free; targets inside the network; ports that parse."""
    net = _network(db, rec.network)
    up = store.uplink(db)
    if up is None:
        raise Conflict("No uplink is configured yet: forwards listen on it (run `microcloud init`)")
    up_net = ipaddress.IPv4Network(up.cidr)
    try:
        listen = str(ipaddress.IPv4Address(rec.listen_address))
    except ValueError:
        raise InvalidArgument(f"listen address {rec.listen_address!r} is not an IPv4 address") from None
    if listen != rec.listen_address:
        raise InvalidArgument(f"listen address {rec.listen_address!r} is not in canonical form ({listen})")
    addressing.host_address(listen, up_net, f"listen address (the uplink is {up_net})")
    if listen == up.gateway:
        raise InvalidArgument(f"listen address {listen} is the uplink gateway")
    for other in db.all(NetworkRecord):
        if other.config.get(UPLINK_ADDRESS) == listen:
            raise AlreadyExists(f"listen address {listen} is the uplink address of network {other.name!r}")
    for f in db.find(ForwardRecord, listen_address=listen):
        if f.network != rec.network:
            raise AlreadyExists(f"listen address {listen} is already forwarded by network {f.network!r}")
    for key in rec.config:
        if key != "target_address" and not key.startswith("user."):
            raise InvalidArgument(f"Invalid option for a forward: unknown key {key!r} "
                                  "(target_address, user.*)")
    subnet = ipaddress.IPv4Interface(net.config["ipv4.address"]).network
    target = rec.config.get("target_address", "")
    if target:
        addressing.host_address(target, subnet, f"target_address (network {rec.network!r} is {subnet})")
    if not target and not rec.ports:
        raise InvalidArgument("A forward needs config target_address or at least one port rule")
    for p in rec.ports:
        if p.get("protocol") not in ("tcp", "udp"):
            raise InvalidArgument(f"forward port protocol {p.get('protocol')!r} is not tcp or udp")
        addressing.host_address(p.get("target_address", ""), subnet,
                                f"forward port target_address (network {rec.network!r} is {subnet})")
        n_listen = len(addressing.port_list(p.get("listen_port", ""), "listen_port"))
        if p.get("target_port"):
            n_target = len(addressing.port_list(p["target_port"], "target_port"))
            if n_target not in (1, n_listen):
                raise InvalidArgument(f"forward target_port {p['target_port']!r} does not match listen_port "
                                      f"{p['listen_port']!r}")
    return rec


def _dicts(ports: Sequence[NetworkForwardPort]) -> list[dict[str, str]]:
    return [msgspec.structs.asdict(p) for p in ports]


def list_forwards(cloud: Cloud, network: str) -> list[NetworkForward]:
    db = cloud.need_db()
    _network(db, network)
    recs = db.find(ForwardRecord, network=network)
    return [to_api(r) for r in sorted(recs, key=lambda r: ipaddress.ip_address(r.listen_address))]


def get_forward(cloud: Cloud, network: str, listen_address: str) -> NetworkForward:
    return to_api(record(cloud.need_db(), network, listen_address))


async def create_forward(cloud: Cloud, network: str, listen_address: str, *, description: str = "",
                         config: Mapping[str, str] | None = None,
                         ports: Sequence[NetworkForwardPort] = ()) -> NetworkForward:
    db, driver = cloud.need_db(), cloud.need_network()
    rec = check(db, ForwardRecord(network=network, listen_address=listen_address, description=description,
                                  config=dict(config or {}), ports=_dicts(ports)))
    if db.get_or_none(ForwardRecord, (network, listen_address)) is not None:
        raise AlreadyExists(f"Network {network!r} already has a forward on {listen_address}")
    async with store.lock(cloud), Reverter() as revert:
        await db.insert(rec)
        revert.add(lambda: db.delete(ForwardRecord, (network, listen_address), if_exists=True))
        await driver.create_forward(network, spec_of(rec))
        revert.add(lambda: driver.delete_forward(network, listen_address, if_exists=True))
        revert.success()
    cloud.events.lifecycle("network-forward-created", f"/1.0/networks/{network}/forwards/{listen_address}")
    return to_api(rec)


async def replace_forward(cloud: Cloud, network: str, listen_address: str, *, description: str,
                          config: Mapping[str, str], ports: Sequence[NetworkForwardPort]) -> NetworkForward:
    db, driver = cloud.need_db(), cloud.need_network()
    old = record(db, network, listen_address)
    new = check(db, ForwardRecord(network=network, listen_address=listen_address, description=description,
                                  config=dict(config), ports=_dicts(ports)))
    key = (network, listen_address)
    async with store.lock(cloud), Reverter() as revert:
        rec = await db.update(ForwardRecord, key, description=new.description, config=new.config,
                              ports=new.ports)
        revert.add(lambda: db.update(ForwardRecord, key, description=old.description, config=old.config,
                                     ports=old.ports))
        # The driver has no in-place update: remove and recreate, the old one restored on failure.
        await driver.delete_forward(network, listen_address, if_exists=True)
        revert.add(lambda: driver.create_forward(network, spec_of(old), may_exist=True))
        await driver.create_forward(network, spec_of(rec))
        revert.success()
    cloud.events.lifecycle("network-forward-updated", f"/1.0/networks/{network}/forwards/{listen_address}")
    return to_api(rec)


async def patch_forward(cloud: Cloud, network: str, listen_address: str, *, description: str | None = None,
                        config: Mapping[str, str] | None = None,
                        ports: Sequence[NetworkForwardPort] | None = None) -> NetworkForward:
    old = to_api(record(cloud.need_db(), network, listen_address))
    merged = config_patch.patched(old.config, config)
    return await replace_forward(cloud, network, listen_address,
                                 description=old.description if description is None else description,
                                 config=merged, ports=old.ports if ports is None else ports)


async def delete_forward(cloud: Cloud, network: str, listen_address: str) -> None:
    db, driver = cloud.need_db(), cloud.need_network()
    old = record(db, network, listen_address)
    async with store.lock(cloud), Reverter() as revert:
        await db.delete(ForwardRecord, (network, listen_address), if_exists=True)
        revert.add(lambda: db.insert(old, may_exist=True))
        await driver.delete_forward(network, listen_address, if_exists=True)
        revert.success()
    cloud.events.lifecycle("network-forward-deleted", f"/1.0/networks/{network}/forwards/{listen_address}")
