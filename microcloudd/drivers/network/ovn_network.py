"""Networks in the NB database: the uplink switch, and per network a logical switch behind
a logical router (SNAT to the uplink, default route), native DHCPv4 (and DHCPv6/RA), DNS.

Functions here run inside one NB transaction (see ovn_txn) and validate before writing, so
a refused request leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from microcloudd.api.errors import AlreadyExists, Conflict, InUse, InvalidArgument, NotFound
from microcloudd.api.names import check_name
from microcloudd.drivers.network import addressing, codec
from microcloudd.drivers.network.base import NetworkSpec, UplinkSpec
from microcloudd.drivers.network.ovn_names import Names
from microcloudd.drivers.network.ovn_txn import KIND, NAME, NETWORK, SPEC, Nb

FORWARD_KEY = "microcloud:forward:"  # + listen address, on the router: the forward's spec


# ---------------------------------------------------------------- uplink

def check_uplink(spec: UplinkSpec) -> UplinkSpec:
    try:
        net = ipaddress.IPv4Network(spec.cidr, strict=True)
    except ValueError:
        raise InvalidArgument(f"uplink subnet {spec.cidr!r} is not an IPv4 subnet (192.0.2.0/24)") from None
    addressing.host_address(spec.gateway, net, "uplink gateway")
    if len(spec.ip_range) != 2:
        raise InvalidArgument("uplink ip_range needs a first and a last address")
    lo = addressing.host_address(spec.ip_range[0], net, "uplink range start")
    hi = addressing.host_address(spec.ip_range[1], net, "uplink range end")
    if ipaddress.IPv4Address(lo) > ipaddress.IPv4Address(hi):
        raise InvalidArgument(f"uplink range {lo}-{hi} is empty")
    for d in spec.dns_servers:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise InvalidArgument(f"uplink DNS server {d!r} is not an IP address") from None
    if not spec.physical_network or not spec.physical_network.replace("-", "").replace("_", "").isalnum():
        raise InvalidArgument(f"uplink physical network name {spec.physical_network!r} is not a plain name")
    return spec


def uplink_row(nb: Nb) -> Any | None:
    return nb.one_owned("Logical_Switch", "uplink")


def uplink_spec(nb: Nb) -> UplinkSpec:
    row = uplink_row(nb)
    if row is None:
        raise Conflict("the uplink is not configured yet: networks need it for their external access")
    return codec.uplink(row.external_ids[SPEC])


def set_gateway_chassis(nb: Nb, lrp: Any, chassis: tuple[str, ...]) -> None:
    rows = []
    for i, name in enumerate(chassis):
        rows.append(nb.insert("Gateway_Chassis", name=f"{lrp.name}-{name}", chassis_name=name,
                              priority=len(chassis) - i, external_ids=nb.tags("gateway-chassis")))
    try:
        old = list(lrp.gateway_chassis)
    except AttributeError:  # a row inserted in this transaction has no value to read yet
        old = []
    lrp.gateway_chassis = rows
    for row in old:
        row.delete()


def ensure_uplink(nb: Nb, names: Names, spec: UplinkSpec) -> None:
    """Create or update the uplink switch and its localnet port; move every router's
    gateway to the given chassis."""
    check_uplink(spec)
    ls = uplink_row(nb)
    if ls is None:
        ls = nb.insert("Logical_Switch", name=names.uplink_switch,
                       external_ids={**nb.tags("uplink"), SPEC: codec.dump(spec)})
        localnet = nb.insert("Logical_Switch_Port", name=names.uplink_localnet, type="localnet",
                             addresses=["unknown"], options={"network_name": spec.physical_network},
                             external_ids=nb.tags("uplink"))
        ls.ports = [localnet]
        return
    old = codec.uplink(ls.external_ids[SPEC])
    if old.cidr != spec.cidr and nb.owned("Logical_Switch", "network"):
        raise Conflict("the uplink subnet cannot change while networks use it")
    ls.setkey("external_ids", SPEC, codec.dump(spec))
    for port in ls.ports:
        if port.type == "localnet":
            port.setkey("options", "network_name", spec.physical_network)
    if old.gateway_chassis != spec.gateway_chassis:
        for lrp in nb.owned("Logical_Router_Port", "router-uplink"):
            set_gateway_chassis(nb, lrp, spec.gateway_chassis)


# ---------------------------------------------------------------- reading networks

def network_rows(nb: Nb) -> dict[str, Any]:
    return {row.external_ids[NAME]: row for row in nb.owned("Logical_Switch", "network")}


def network_row(nb: Nb, name: str) -> Any:
    row = nb.one_owned("Logical_Switch", "network", **{NAME: name})
    if row is None:
        raise NotFound(f"network {name!r} not found")
    return row


def spec_of(row: Any) -> NetworkSpec:
    return codec.network(row.external_ids[SPEC])


def instance_ports(ls: Any, nb: Nb | None = None) -> list[Any]:
    """The instance ports of switch `ls` (read through `nb`, when given: faster in a read)."""
    get = nb.value if nb is not None else getattr
    # (a port deleted earlier in the same transaction reads back as None)
    return [p for p in get(ls, "ports") if p is not None and get(p, "external_ids").get(KIND) == "port"]


def used_uplink_addresses(nb: Nb) -> dict[str, str]:
    """Uplink address -> what holds it (a network's router or a forward)."""
    used: dict[str, str] = {}
    for name, row in network_rows(nb).items():
        addr = spec_of(row).uplink_address
        if addr:
            used[addr] = f"network {name}"
    for lr in nb.owned("Logical_Router", "router"):
        for key in lr.external_ids:
            if key.startswith(FORWARD_KEY):
                used[key[len(FORWARD_KEY):]] = f"a forward of network {lr.external_ids[NETWORK]}"
    return used


# ---------------------------------------------------------------- validation

def check_network(nb: Nb, spec: NetworkSpec, replacing: str | None = None) -> NetworkSpec:
    """Validate `spec` against the uplink and the other networks; fill in the uplink address."""
    check_name("network", spec.name)
    v4 = addressing.gateway_v4(spec.ipv4_address)
    v6 = addressing.gateway_v6(spec.ipv6_address) if spec.ipv6_address else None
    if spec.ipv6_mode not in ("slaac", "dhcpv6-stateful"):
        raise InvalidArgument(f"ipv6 mode {spec.ipv6_mode!r} is not slaac or dhcpv6-stateful")
    if not 1280 <= spec.mtu <= 9000:
        raise InvalidArgument(f"MTU {spec.mtu} is outside 1280-9000")
    if not 60 <= spec.lease_time <= 7 * 86400:
        raise InvalidArgument(f"lease time {spec.lease_time}s is outside 60s-7 days")
    if not spec.dns_domain or not all(p and p.replace("-", "").isalnum() for p in spec.dns_domain.split(".")):
        raise InvalidArgument(f"DNS domain {spec.dns_domain!r} is not a domain name")
    for d in spec.dns_servers:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise InvalidArgument(f"DNS server {d!r} is not an IP address") from None

    up = uplink_spec(nb)
    up_net = ipaddress.IPv4Network(up.cidr)
    taken: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = [("the uplink", up_net)]
    for name, row in network_rows(nb).items():
        if name == replacing:
            continue
        other = spec_of(row)
        taken.append((f"network {name}", ipaddress.IPv4Interface(other.ipv4_address).network))
        if other.ipv6_address:
            taken.append((f"network {name}", ipaddress.IPv6Interface(other.ipv6_address).network))
    for net in [v4.network] + ([v6.network] if v6 else []):
        hit = addressing.overlap(net, taken)
        if hit:
            raise InvalidArgument(f"subnet {net} overlaps the subnet of {hit}")

    used = used_uplink_addresses(nb)
    if spec.uplink_address:
        addr = addressing.host_address(spec.uplink_address, up_net, "uplink address")
        holder = used.get(addr)
        if holder and holder != f"network {spec.name}":
            raise AlreadyExists(f"uplink address {addr} is already used by {holder}")
        if addr == up.gateway:
            raise InvalidArgument(f"uplink address {addr} is the uplink gateway")
    else:
        addr = addressing.pick_from_range(up.ip_range[0], up.ip_range[1], set(used) | {up.gateway})
    return dataclasses.replace(spec, uplink_address=addr)


# ---------------------------------------------------------------- writing

def _dhcp_options(spec: NetworkSpec, up: UplinkSpec, router_mac: str) -> dict[str, str]:
    gw = str(ipaddress.IPv4Interface(spec.ipv4_address).ip)
    dns4 = [d for d in (spec.dns_servers or up.dns_servers) if ipaddress.ip_address(d).version == 4] or [gw]
    return {
        "router": gw, "server_id": gw, "server_mac": router_mac,
        "lease_time": str(spec.lease_time), "mtu": str(spec.mtu),
        "dns_server": "{" + ", ".join(dns4) + "}",
        "domain_name": f'"{spec.dns_domain}"',
    }


def _dhcpv6_options(spec: NetworkSpec, up: UplinkSpec, router_mac: str) -> dict[str, str]:
    opts = {"server_id": router_mac}
    dns6 = [d for d in (spec.dns_servers or up.dns_servers) if ipaddress.ip_address(d).version == 6]
    if dns6:
        opts["dns_server"] = "{" + ", ".join(dns6) + "}"
    return opts


def _ra_configs(spec: NetworkSpec) -> dict[str, str]:
    return {"address_mode": "slaac" if spec.ipv6_mode == "slaac" else "dhcpv6_stateful",
            "send_periodic": "true", "max_interval": "60", "min_interval": "20", "mtu": str(spec.mtu)}


def create_network(nb: Nb, names: Names, spec: NetworkSpec) -> NetworkSpec:
    """All rows of one network, in the caller's transaction. `spec` must be checked."""
    assert spec.uplink_address
    up = uplink_spec(nb)
    up_ls = uplink_row(nb)
    assert up_ls is not None
    n = spec.name
    v4 = ipaddress.IPv4Interface(spec.ipv4_address)
    v6 = ipaddress.IPv6Interface(spec.ipv6_address) if spec.ipv6_address else None
    up_net = ipaddress.IPv4Network(up.cidr)
    tag = {NETWORK: n}
    int_mac, ext_mac = addressing.random_mac(), addressing.random_mac()

    other_config = {"subnet": str(v4.network), "exclude_ips": str(v4.ip)}
    if v6:
        other_config["ipv6_prefix"] = str(v6.network.network_address)
    ls = nb.insert("Logical_Switch", name=names.switch(n), other_config=other_config,
                   external_ids={**nb.tags("network", spec.revision, **tag), NAME: n, SPEC: codec.dump(spec)})

    nb.insert("DHCP_Options", cidr=str(v4.network), options=_dhcp_options(spec, up, int_mac),
                      external_ids=nb.tags("dhcp", spec.revision, **tag))
    if v6 and spec.ipv6_mode == "dhcpv6-stateful":
        nb.insert("DHCP_Options", cidr=str(v6.network), options=_dhcpv6_options(spec, up, int_mac),
                  external_ids=nb.tags("dhcp", spec.revision, **tag))
    dns = nb.insert("DNS", records={}, external_ids=nb.tags("dns", spec.revision, **tag))
    ls.dns_records = [dns]

    lrp_int = nb.insert("Logical_Router_Port", name=names.router_port_internal(n), mac=int_mac,
                        networks=[str(v4)] + ([str(v6)] if v6 else []),
                        external_ids=nb.tags("router-internal", spec.revision, **tag))
    if v6:
        lrp_int.ipv6_ra_configs = _ra_configs(spec)
    lrp_ext = nb.insert("Logical_Router_Port", name=names.router_port_uplink(n), mac=ext_mac,
                        networks=[f"{spec.uplink_address}/{up_net.prefixlen}"],
                        external_ids=nb.tags("router-uplink", spec.revision, **tag))
    set_gateway_chassis(nb, lrp_ext, up.gateway_chassis)
    snat = nb.insert("NAT", type="snat", external_ip=spec.uplink_address, logical_ip=str(v4.network),
                     external_ids=nb.tags("snat", spec.revision, **tag))
    route = nb.insert("Logical_Router_Static_Route", ip_prefix="0.0.0.0/0", nexthop=up.gateway,
                      external_ids=nb.tags("route", spec.revision, **tag))
    nb.insert("Logical_Router", name=names.router(n), ports=[lrp_int, lrp_ext], nat=[snat],
              static_routes=[route], external_ids=nb.tags("router", spec.revision, **tag))

    ls.ports = [nb.insert("Logical_Switch_Port", name=names.switch_router_port(n), type="router",
                          addresses=["router"], options={"router-port": lrp_int.name},
                          external_ids=nb.tags("router-port", spec.revision, **tag))]
    up_ls.addvalue("ports", nb.insert(
        "Logical_Switch_Port", name=names.uplink_router_port(n), type="router", addresses=["router"],
        options={"router-port": lrp_ext.name}, external_ids=nb.tags("uplink-port", spec.revision, **tag)))
    return spec


def update_network_in_place(nb: Nb, spec: NetworkSpec) -> NetworkSpec:
    """Apply a change that keeps the addressing (DNS, lease time, MTU, description)."""
    ls = network_row(nb, spec.name)
    up = uplink_spec(nb)
    lr = nb.one_owned("Logical_Router", "router", **{NETWORK: spec.name})
    lrp_int = nb.one_owned("Logical_Router_Port", "router-internal", **{NETWORK: spec.name})
    assert lr is not None and lrp_int is not None, f"network {spec.name} lost its router"
    rev = str(spec.revision)
    for dhcp in nb.owned("DHCP_Options", "dhcp", **{NETWORK: spec.name}):
        if ipaddress.ip_network(dhcp.cidr).version == 4:
            dhcp.options = _dhcp_options(spec, up, lrp_int.mac)
        else:
            dhcp.options = _dhcpv6_options(spec, up, lrp_int.mac)
    if spec.ipv6_address:
        lrp_int.ipv6_ra_configs = _ra_configs(spec)
    for row in (ls, lr, lrp_int):
        row.setkey("external_ids", "microcloud:revision", rev)
    ls.setkey("external_ids", SPEC, codec.dump(spec))
    return spec


def delete_network(nb: Nb, name: str, force: bool = False) -> None:
    """Remove every row of network `name`; refuses while instance ports remain unless forced."""
    ls = network_row(nb, name)
    ports = instance_ports(ls)
    if ports and not force:
        raise InUse(f"network {name!r} still has {len(ports)} port(s): delete them first")
    tag = {NETWORK: name}
    up_ls = uplink_row(nb)
    for row in nb.owned("Logical_Switch_Port", "uplink-port", **tag):
        if up_ls is not None:
            up_ls.delvalue("ports", row)
        row.delete()
    for table, kind in (("Logical_Router", "router"), ("DHCP_Options", "dhcp"), ("DNS", "dns"),
                        ("Load_Balancer", "forward")):
        for row in nb.owned(table, kind, **tag):
            row.delete()
    ls.delete()
