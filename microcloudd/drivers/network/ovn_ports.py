"""Instance ports: logical switch ports named by UUID (libvirt's interfaceid), with a static
or OVN-allocated address, the network's DHCP options, DNS records and ACL port groups."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Any

from microcloudd.api.errors import AlreadyExists, InvalidArgument, NotFound, QuotaExceeded
from microcloudd.api.names import check_name
from microcloudd.drivers.network import acl_rules, addressing
from microcloudd.drivers.network.base import Lease, NetworkSpec, PortInfo, PortSpec
from microcloudd.drivers.network.ovn_network import instance_ports, network_row, spec_of
from microcloudd.drivers.network.ovn_txn import KIND, NAME, NETWORK, OWNER, REVISION, Nb

HOSTNAME = "microcloud:hostname"


def check_port_id(port_id: str) -> str:
    try:
        return str(uuid.UUID(port_id))
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument(f"port id {port_id!r} is not a UUID") from None


def _parse_addresses(nb: Nb, row: Any) -> tuple[str, str | None, str | None, bool]:
    """(mac, ipv4, ipv6, dynamic) from a port's addresses / dynamic_addresses."""
    addresses = nb.value(row, "addresses")
    words = (addresses[0] if addresses else "").split()
    dynamic = "dynamic" in words
    try:
        allocated = nb.value(row, "dynamic_addresses")
    except AttributeError:  # inserted in this transaction: northd has not seen it yet
        allocated = []
    if dynamic and allocated:
        words = allocated[0].split()
    mac, v4, v6 = (words[0] if words else ""), None, None
    for w in words[1:]:
        try:
            ip = ipaddress.ip_address(w)
        except ValueError:
            continue
        if ip.version == 4 and v4 is None:
            v4 = str(ip)
        elif ip.version == 6 and v6 is None:
            v6 = str(ip)
    return mac, v4, v6, dynamic


def port_row(nb: Nb, port_id: str) -> Any:
    row = nb.find("Logical_Switch_Port", name=check_port_id(port_id))
    if row is None or row.external_ids.get(KIND) != "port" or row.external_ids.get(OWNER) != nb.owner:
        raise NotFound(f"port {port_id} not found")
    return row


def _acl_groups(nb: Nb) -> dict[str, Any]:
    return {pg.external_ids[NAME]: pg for pg in nb.owned("Port_Group", "acl")}


def port_acls(nb: Nb, row: Any) -> tuple[str, ...]:
    return tuple(sorted(name for name, pg in _acl_groups(nb).items() if row in pg.ports))


def acl_membership(nb: Nb) -> dict[uuid.UUID, tuple[str, ...]]:
    """Port row UUID -> its ACLs (as port_acls), for every port at once."""
    out: dict[uuid.UUID, list[str]] = {}
    for name, pg in _acl_groups(nb).items():
        for p in nb.value(pg, "ports"):
            if p is not None:
                out.setdefault(p.uuid, []).append(name)
    return {u: tuple(sorted(names)) for u, names in out.items()}


def port_info(nb: Nb, row: Any, acls: dict[uuid.UUID, tuple[str, ...]] | None = None) -> PortInfo:
    """`acls`: acl_membership(nb), when many ports are read in one go."""
    mac, v4, v6, dynamic = _parse_addresses(nb, row)
    ids, up = nb.value(row, "external_ids"), nb.value(row, "up")
    return PortInfo(
        id=nb.value(row, "name"), name=ids.get(NAME, ""), network=ids.get(NETWORK, ""), mac=mac, ipv4=v4,
        ipv6=v6, dynamic=dynamic, hostname=ids.get(HOSTNAME) or None,
        acls=port_acls(nb, row) if acls is None else acls.get(row.uuid, ()),
        up=bool(up[0]) if up else None, revision=int(ids.get(REVISION, "1")),
    )


def _default_group(nb: Nb, prefix: str) -> Any:
    name = acl_rules.default_group_name(prefix)
    pg = nb.find("Port_Group", name=name)
    if pg is not None:
        return pg
    acls = [nb.insert("ACL", direction=a.direction, priority=a.priority, match=a.match, action=a.action,
                      external_ids=nb.tags("acl-default")) for a in acl_rules.default_acls(prefix)]
    return nb.insert("Port_Group", name=name, acls=acls, external_ids=nb.tags("acl-default"))


def apply_acls(nb: Nb, prefix: str, row: Any, acls: tuple[str, ...]) -> None:
    groups = _acl_groups(nb)
    missing = [a for a in acls if a not in groups]
    if missing:
        raise NotFound(f"network ACL {missing[0]!r} not found")
    for name, pg in groups.items():
        if name in acls and row not in pg.ports:
            pg.addvalue("ports", row)
        elif name not in acls and row in pg.ports:
            pg.delvalue("ports", row)
    default = _default_group(nb, prefix)
    if acls:
        default.addvalue("ports", row)
    elif row in (default.ports or []):
        default.delvalue("ports", row)


@dataclass
class PortIndex:
    """What the ports of one network already hold, so a batch checks in linear time."""

    ls: Any = None
    net: NetworkSpec | None = None
    dhcp: dict[int, Any] = field(default_factory=dict)  # IP version -> the network's DHCP_Options
    ids: set[str] = field(default_factory=set)
    macs: set[str] = field(default_factory=set)
    v4: set[str] = field(default_factory=set)
    v6: set[str] = field(default_factory=set)
    hostnames: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, nb: Nb, ls: Any) -> PortIndex:
        net = spec_of(ls)
        dhcp: dict[int, Any] = {ipaddress.ip_network(d.cidr).version: d
                for d in nb.owned("DHCP_Options", "dhcp", **{NETWORK: net.name})}
        index = cls(ls=ls, net=net, dhcp=dhcp)
        for row in instance_ports(ls):
            mac, v4, v6, _ = _parse_addresses(nb, row)
            index.add(row.name, mac, v4, v6, row.external_ids.get(HOSTNAME))
        return index

    def add(self, port_id: str, mac: str, v4: str | None, v6: str | None, hostname: str | None) -> None:
        self.ids.add(port_id)
        self.macs.add(mac)
        for bucket, value in ((self.v4, v4), (self.v6, v6), (self.hostnames, hostname)):
            if value:
                bucket.add(value)


def check_port(nb: Nb, spec: PortSpec, index: PortIndex | None = None) -> PortSpec:
    """Validate against the network and its other ports; fill in id and MAC. With `index`
    (a batch), the checked port is added to it."""
    if not spec.name or len(spec.name) > 255:
        raise InvalidArgument("a port needs a name of 1 to 255 characters")
    taken = index if index is not None else PortIndex.of(nb, network_row(nb, spec.network))
    net = taken.net
    assert net is not None
    port_id = check_port_id(spec.id) if spec.id else str(uuid.uuid4())
    if port_id in taken.ids:
        raise AlreadyExists(f"port {port_id} already exists")
    v4_if = ipaddress.IPv4Interface(net.ipv4_address)
    room = v4_if.network.num_addresses - 3  # network, broadcast and gateway addresses
    if len(taken.ids) >= room:
        # northd would create the port without an address: an instance with no network.
        raise QuotaExceeded(f"network {spec.network} has no free IPv4 address: its {room} addresses in "
                            f"{v4_if.network} all belong to ports")
    mac = addressing.check_mac(spec.mac) if spec.mac else addressing.random_mac()
    ipv4 = addressing.host_address(spec.ipv4, v4_if.network, "IPv4 address") if spec.ipv4 else None
    if ipv4 == str(v4_if.ip):
        raise AlreadyExists(f"IPv4 address {ipv4} is the gateway of network {spec.network}")
    ipv6 = None
    if spec.ipv6:
        if not net.ipv6_address:
            raise InvalidArgument(f"network {spec.network} has no IPv6 subnet for address {spec.ipv6}")
        ipv6 = addressing.host_address(spec.ipv6, ipaddress.IPv6Interface(net.ipv6_address).network,
                                       "IPv6 address")
    if spec.hostname:
        check_name("hostname", spec.hostname)
    checks = (("MAC address", mac, taken.macs), ("IPv4 address", ipv4, taken.v4),
              ("IPv6 address", ipv6, taken.v6), ("host name", spec.hostname, taken.hostnames))
    for what, value, bucket in checks:
        if value and value in bucket:
            raise AlreadyExists(f"{what} {value} is already used on network {spec.network}")
    if index is not None:
        index.add(port_id, mac, ipv4, ipv6, spec.hostname)
    return PortSpec(network=spec.network, name=spec.name, id=port_id, mac=mac, ipv4=ipv4, ipv6=ipv6,
                    hostname=spec.hostname, acls=tuple(spec.acls), revision=spec.revision)


def create_port(
    nb: Nb, prefix: str, spec: PortSpec, dns: bool = True, index: PortIndex | None = None
) -> None:
    """Insert the port of a checked spec (id and MAC set) into its network's switch.
    A batch passes dns=False and calls sync_dns once per network at the end."""
    assert spec.id and spec.mac
    if index is None:
        index = PortIndex.of(nb, network_row(nb, spec.network))
    ls = index.ls
    if spec.ipv4:
        addresses = " ".join(a for a in (spec.mac, spec.ipv4, spec.ipv6) if a)
        security = [addresses]
    else:
        addresses = f"{spec.mac} dynamic"
        security = [spec.mac]  # the address is not known before northd allocates it
    dhcp = index.dhcp
    ext = nb.tags("port", spec.revision, **{NETWORK: spec.network, NAME: spec.name})
    if spec.hostname:
        ext[HOSTNAME] = spec.hostname
    row = nb.insert("Logical_Switch_Port", name=spec.id, addresses=[addresses], port_security=security,
                    external_ids=ext)
    if 4 in dhcp:
        row.dhcpv4_options = [dhcp[4]]
    if 6 in dhcp:
        row.dhcpv6_options = [dhcp[6]]
    ls.addvalue("ports", row)
    if spec.acls:
        apply_acls(nb, prefix, row, spec.acls)
    if dns:
        sync_dns(nb, spec.network)  # ls.ports already includes the new port (IDL applies mutations)


def delete_port(nb: Nb, row: Any) -> None:
    delete_ports(nb, [row])


def delete_ports(nb: Nb, rows: list[Any]) -> None:
    """Delete instance ports; each network's DNS records are rebuilt once."""
    by_network: dict[str, list[Any]] = {}
    for row in rows:
        by_network.setdefault(row.external_ids.get(NETWORK, ""), []).append(row)
    for network, doomed in by_network.items():
        ls = nb.one_owned("Logical_Switch", "network", **{NETWORK: network})
        names = {r.name for r in doomed}
        sync_dns(nb, network, without=names)  # before the delete: a deleted row cannot be read
        for row in doomed:
            if ls is not None:
                ls.delvalue("ports", row)
            row.delete()


def sync_dns(nb: Nb, network: str, without: set[str] | None = None) -> bool:
    """Make the network's DNS records match its ports' host names and known addresses
    (leaving out the ports named in `without`, about to be deleted)."""
    dns = nb.one_owned("DNS", "dns", **{NETWORK: network})
    ls = nb.one_owned("Logical_Switch", "network", **{NETWORK: network})
    if dns is None or ls is None:
        return False
    domain = spec_of(ls).dns_domain
    hosts: dict[str, list[str]] = {}
    for p in instance_ports(ls):
        host = p.external_ids.get(HOSTNAME)
        if not host or (without and p.name in without):
            continue
        _, v4, v6, _ = _parse_addresses(nb, p)
        hosts[host] = [a for a in (v4, v6) if a]
    records = {}
    for host, ips in hosts.items():
        if ips:
            records[host] = " ".join(ips)
            records[f"{host}.{domain}"] = " ".join(ips)
    if dict(dns.records) != records:
        dns.records = records
        return True
    return False


def leases(nb: Nb, network: str) -> list[Lease]:
    ls = network_row(nb, network)
    spec = spec_of(ls)
    out = []
    lrp = nb.one_owned("Logical_Router_Port", "router-internal", **{NETWORK: network})
    if lrp is not None:
        out.append(Lease(hostname=f"{network}.gw", address=str(ipaddress.IPv4Interface(spec.ipv4_address).ip),
                         mac=lrp.mac, type="gateway"))
        if spec.ipv6_address:
            gw6 = str(ipaddress.IPv6Interface(spec.ipv6_address).ip)
            out.append(Lease(hostname=f"{network}.gw", address=gw6, mac=lrp.mac, type="gateway"))
    for p in sorted(instance_ports(ls), key=lambda r: r.name):
        mac, v4, v6, dynamic = _parse_addresses(nb, p)
        host = p.external_ids.get(HOSTNAME) or p.external_ids.get(NAME, p.name)
        for addr in (v4, v6):
            if addr:
                out.append(Lease(hostname=host, address=addr, mac=mac,
                                 type="dynamic" if dynamic else "static", port_id=p.name))
    return out
