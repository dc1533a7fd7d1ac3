"""The host NAT uplink of this member (drivers/network/host.py's HostNatUplink), named after
the state dir so two microclouds on one host never share it.

OVN routers reach the outside through a localnet port on physical network "uplink", mapped
to the OVS bridge br-uplink in the member's namespace; a veth joins br-uplink to the host,
whose end holds the uplink gateway address, and the host masquerades the uplink subnet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microcloudd.components import ovs
from microcloudd.drivers.network.base import UplinkSpec
from microcloudd.stack.layout import Layout

if TYPE_CHECKING:
    from microcloudd.drivers.network.host import HostNatUplink


def spec(lay: Layout, chassis: str) -> UplinkSpec:
    net = lay.uplink_net
    hosts = list(net.hosts())
    return UplinkSpec(cidr=str(net), gateway=str(hosts[0]), ip_range=(str(hosts[9]), str(hosts[-1])),
                      physical_network="uplink", gateway_chassis=(chassis,))


def host_nat(lay: Layout) -> HostNatUplink:
    # pyroute2 (~9 MB) only when the uplink is wired, not when the daemon starts.
    from microcloudd.drivers.network.host import HostNatUplink

    gateway = f"{next(lay.uplink_net.hosts())}/{lay.uplink_net.prefixlen}"
    return HostNatUplink(gateway=gateway, physical_network="uplink", bridge=lay.uplink_bridge,
                         name=f"mc{lay.tag}u")


async def ensure(lay: Layout, cfg: ovs.ChassisConfig) -> None:
    await host_nat(lay).apply(cfg)


async def remove(lay: Layout, cfg: ovs.ChassisConfig) -> None:
    """The host end and the nftables table (for `down.sh --purge`; OVS may be stopped)."""
    await host_nat(lay).remove(cfg)
