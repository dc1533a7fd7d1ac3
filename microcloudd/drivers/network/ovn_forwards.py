"""Forwards: a listen address on the uplink sent to addresses on a network. The default
target is a 1:1 dnat_and_snat NAT; port rules are OVN load balancers on the router."""

from __future__ import annotations

import ipaddress
from typing import Any

from microcloudd.api.errors import AlreadyExists, InvalidArgument, NotFound
from microcloudd.drivers.network import addressing, codec
from microcloudd.drivers.network.base import ForwardSpec
from microcloudd.drivers.network.ovn_names import Names
from microcloudd.drivers.network.ovn_network import (
    FORWARD_KEY,
    network_row,
    spec_of,
    uplink_spec,
    used_uplink_addresses,
)
from microcloudd.drivers.network.ovn_txn import NETWORK, Nb

LISTEN = "microcloud:listen"


def _router(nb: Nb, network: str) -> Any:
    lr = nb.one_owned("Logical_Router", "router", **{NETWORK: network})
    if lr is None:
        raise NotFound(f"network {network!r} not found")
    return lr


def check_forward(nb: Nb, network: str, spec: ForwardSpec) -> dict[str, dict[str, str]]:
    """Validate; return the load balancer VIPs per protocol."""
    net = spec_of(network_row(nb, network))
    subnet = ipaddress.IPv4Interface(net.ipv4_address).network
    up = uplink_spec(nb)
    listen = addressing.host_address(spec.listen_address, ipaddress.IPv4Network(up.cidr), "listen address")
    if listen != spec.listen_address:
        raise InvalidArgument(f"listen address {spec.listen_address!r} is not in canonical form ({listen})")
    if listen == up.gateway:
        raise InvalidArgument(f"listen address {listen} is the uplink gateway")
    if spec.target_address:
        addressing.host_address(spec.target_address, subnet, "forward target address")
    if not spec.target_address and not spec.ports:
        raise InvalidArgument("a forward needs a target address or port rules")
    vips: dict[str, dict[str, str]] = {}
    for rule in spec.ports:
        if rule.protocol not in ("tcp", "udp"):
            raise InvalidArgument(f"forward protocol {rule.protocol!r} is not tcp or udp")
        target = addressing.host_address(rule.target_address, subnet, "forward target address")
        lports = addressing.port_list(rule.listen_port, "listen port")
        tports = addressing.port_list(rule.target_port, "target port") if rule.target_port else lports
        if len(tports) == 1 and len(lports) > 1:
            tports = tports * len(lports)
        if len(tports) != len(lports):
            raise InvalidArgument(f"forward target ports {rule.target_port!r} do not match listen ports "
                                  f"{rule.listen_port!r}")
        for lp, tp in zip(lports, tports, strict=True):
            key = f"{listen}:{lp}"
            if key in vips.get(rule.protocol, {}):
                raise InvalidArgument(f"forward listen port {rule.protocol}/{lp} appears twice")
            vips.setdefault(rule.protocol, {})[key] = f"{target}:{tp}"
    return vips


def create_forward(nb: Nb, names: Names, network: str, spec: ForwardSpec, may_exist: bool) -> ForwardSpec:
    vips = check_forward(nb, network, spec)
    lr = _router(nb, network)
    key = FORWARD_KEY + spec.listen_address
    if key in lr.external_ids:
        if may_exist:
            return codec.forward(lr.external_ids[key])
        raise AlreadyExists(f"network {network} already has a forward on {spec.listen_address}")
    holder = used_uplink_addresses(nb).get(spec.listen_address)
    if holder:
        raise AlreadyExists(f"listen address {spec.listen_address} is already used by {holder}")
    tags = nb.tags("forward", spec.revision, **{NETWORK: network, LISTEN: spec.listen_address})
    if spec.target_address:
        lr.addvalue("nat", nb.insert("NAT", type="dnat_and_snat", external_ip=spec.listen_address,
                                     logical_ip=spec.target_address, external_ids=tags))
    for proto, proto_vips in sorted(vips.items()):
        lr.addvalue("load_balancer", nb.insert(
            "Load_Balancer", name=names.forward_lb(network, spec.listen_address, proto), protocol=[proto],
            vips=proto_vips, external_ids=tags))
    lr.setkey("external_ids", key, codec.dump(spec))
    return spec


def delete_forward(nb: Nb, network: str, listen: str, if_exists: bool) -> None:
    lr = _router(nb, network)
    key = FORWARD_KEY + listen
    if key not in lr.external_ids:
        if if_exists:
            return
        raise NotFound(f"network {network} has no forward on {listen}")
    for nat in nb.owned("NAT", "forward", **{NETWORK: network, LISTEN: listen}):
        lr.delvalue("nat", nat)
    for lb in nb.owned("Load_Balancer", "forward", **{NETWORK: network, LISTEN: listen}):
        lr.delvalue("load_balancer", lb)
        lb.delete()
    lr.delkey("external_ids", key)


def list_forwards(nb: Nb, network: str) -> list[ForwardSpec]:
    lr = _router(nb, network)
    return sorted((codec.forward(v) for k, v in lr.external_ids.items() if k.startswith(FORWARD_KEY)),
                  key=lambda f: ipaddress.ip_address(f.listen_address))
