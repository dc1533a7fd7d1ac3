"""This member's uplink: where the OVN routers of its networks reach the outside.

OVN routers reach it through a localnet port on physical network "uplink", mapped to the OVS
bridge br-uplink in the member's namespace. What br-uplink holds, by the plan's
network.uplink:
- "nat" (drivers/network/host.py's HostNatUplink, named after the state dir so two
  microclouds on one host never share it): a veth to the host, whose end holds the uplink
  gateway address, and the host masquerades the uplink subnet (100.64.x.0/24);
- an interface name (PhysicalUplink): that NIC, moved into the namespace, wired to the
  site's upstream router; the uplink network is the plan's uplink_gateway/uplink_range.
"""

from __future__ import annotations

import ipaddress

from microcloudd.api.init import NetworkPlan
from microcloudd.components import ovs
from microcloudd.drivers.network.base import UplinkSpec
from microcloudd.drivers.network.host import HostNatUplink, PhysicalUplink
from microcloudd.stack import netns
from microcloudd.stack.layout import Layout

PHYSICAL_NETWORK = "uplink"


def spec(lay: Layout, chassis: str, net: NetworkPlan | None = None) -> UplinkSpec:
    if net is not None and net.uplink != "nat":
        gw = ipaddress.IPv4Interface(net.uplink_gateway)
        lo, hi = (a.strip() for a in net.uplink_range.split("-", 1))
        return UplinkSpec(cidr=str(gw.network), gateway=str(gw.ip), ip_range=(lo, hi),
                          physical_network=PHYSICAL_NETWORK, gateway_chassis=(chassis,),
                          dns_servers=tuple(net.uplink_dns))
    hosts = list(lay.uplink_net.hosts())
    return UplinkSpec(cidr=str(lay.uplink_net), gateway=str(hosts[0]),
                      ip_range=(str(hosts[9]), str(hosts[-1])), physical_network=PHYSICAL_NETWORK,
                      gateway_chassis=(chassis,))


def host_nat(lay: Layout) -> HostNatUplink:
    gateway = f"{next(lay.uplink_net.hosts())}/{lay.uplink_net.prefixlen}"
    return HostNatUplink(gateway=gateway, physical_network=PHYSICAL_NETWORK, bridge=lay.uplink_bridge,
                         name=f"mc{lay.tag}u")


async def ensure(lay: Layout, cfg: ovs.ChassisConfig, net: NetworkPlan | None = None) -> None:
    if net is not None and net.uplink != "nat":
        await PhysicalUplink(net.uplink, PHYSICAL_NETWORK, lay.uplink_bridge).apply(cfg)
    else:
        netns.note_forwarding(lay)  # the host NAT turns forwarding on
        await host_nat(lay).apply(cfg)


async def remove(lay: Layout, cfg: ovs.ChassisConfig) -> None:
    """The host end and the nftables table of a NAT uplink (for `down.sh --purge`; OVS may be
    stopped). A physical uplink's NIC goes back to the host when the namespace is deleted."""
    await host_nat(lay).remove(cfg)
