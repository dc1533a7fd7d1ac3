"""The uplink the networks' routers attach to, inside the member's namespace (blocking).

OVN routers reach the outside through a localnet port on physical network "uplink", mapped
to the OVS bridge br-uplink. Its internal interface holds the uplink's gateway address, and
the namespace forwards from there to the host over the veth link (stack.netns). NAT on the
host side (from the link to the host's own uplink) is drivers/network/host.py's job.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time

from microcloudd.api.errors import Internal
from microcloudd.components import ovs
from microcloudd.drivers.network.base import UplinkSpec
from microcloudd.stack.layout import Layout


def _in_ns(lay: Layout, *argv: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", lay.netns, *argv], capture_output=True, text=True,
                          timeout=20)
    if done.returncode != 0:
        raise Internal(f"{' '.join(argv[:4])} in {lay.netns} failed: {done.stderr.strip()}")


def spec(lay: Layout, chassis: str) -> UplinkSpec:
    net = lay.uplink_net
    hosts = list(net.hosts())
    return UplinkSpec(cidr=str(net), gateway=str(hosts[0]), ip_range=(str(hosts[9]), str(hosts[-1])),
                      physical_network="uplink", gateway_chassis=(chassis,))


def ensure(lay: Layout, cfg: ovs.ChassisConfig) -> None:
    """br-uplink with the gateway address on its internal interface; forwarding on; the
    uplink's traffic leaves the namespace SNATed to the link address."""
    ovs.add_bridge(cfg, lay.uplink_bridge)
    gw = ipaddress.IPv4Interface(f"{next(lay.uplink_net.hosts())}/{lay.uplink_net.prefixlen}")
    # ovs-vswitchd creates the netdev bridge's TAP device asynchronously.
    deadline = time.monotonic() + 10
    while True:
        probe = subprocess.run(["ip", "-n", lay.netns, "link", "show", lay.uplink_bridge],
                               capture_output=True, timeout=10)
        if probe.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    _in_ns(lay, "ip", "addr", "replace", str(gw), "dev", lay.uplink_bridge)
    _in_ns(lay, "ip", "link", "set", lay.uplink_bridge, "up")
    _in_ns(lay, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    rules = (f"table ip microcloud\ndelete table ip microcloud\n"
             f"table ip microcloud {{\n chain post {{ type nat hook postrouting priority 100;\n"
             f"  ip saddr {lay.uplink_net} oifname \"{lay.ns_link}\" masquerade\n }}\n}}\n")
    done = subprocess.run(["ip", "netns", "exec", lay.netns, "nft", "-f", "-"], input=rules,
                          capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise Internal(f"nft in {lay.netns} failed: {done.stderr.strip()}")
