"""Where each part of this member's stack lives: directories, the network namespace and the
addresses of the link between it and the host. All derived from the state dir, so two
microclouds on one host (tests, benchmarks) never share a name, a namespace or an address.

Why a namespace: ovs-vswitchd's userspace datapath creates TAP devices (br-int, ovs-netdev,
guest NICs) that must not clash with the host's or another microcloud's. libvirtd (so QEMU)
runs there too; a veth pair links it to the host, where Ceph listens on the host end, so
QEMU's librbd and our daemon reach the same monitor address.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

CEPH_BASE_PORT = 3300  # msgr v2 = 3300 as usual; v1 3301, daemons 3302-3399
NETNS_PREFIX = "microcloud-"  # every member's namespace: microcloud-<tag>
NB_RAFT_PORT = 6643
SB_RAFT_PORT = 6645


@dataclass(frozen=True)
class Layout:
    state_dir: Path

    @property
    def tag(self) -> str:
        return hashlib.sha256(str(self.state_dir.absolute()).encode()).hexdigest()[:8]

    @property
    def _n(self) -> int:
        return int(self.tag, 16)

    # -- directories -------------------------------------------------------------------
    @property
    def ovn_dir(self) -> Path:
        return self.state_dir / "ovn"

    @property
    def ovs_dir(self) -> Path:
        return self.state_dir / "ovs"

    @property
    def ceph_dir(self) -> Path:
        return self.state_dir / "ceph"

    @property
    def libvirt_dir(self) -> Path:
        return self.state_dir / "libvirt"

    @property
    def init_dir(self) -> Path:
        return self.state_dir / "init"

    @property
    def forwarding_note(self) -> Path:
        """The host's IPv4 forwarding setting before this member first turned it on."""
        return self.state_dir / "ip_forward.before"

    @property
    def ceph_client_note(self) -> Path:
        """The address of the daemon's Ceph client while connected (see RBDDriver.fence_file);
        in the state dir itself, as the Ceph in use may be another machine's."""
        return self.state_dir / "ceph-client.addr"

    @property
    def guest_ceph_conf(self) -> Path:
        """The ceph.conf QEMU's RBD client reads (stack/guest_ceph.py): QEMU opens it itself,
        so it must be the same path in libvirtd's mount namespace and readable by a host
        libvirtd's unprivileged QEMU."""
        return self.state_dir / "guest" / "ceph.conf"

    # -- the namespace and its link to the host ----------------------------------------
    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.tag}"

    @property
    def host_link(self) -> str:  # interface names: at most 15 characters
        return f"mc{self.tag}h"

    @property
    def ns_link(self) -> str:
        return f"mc{self.tag}n"

    @property
    def link_net(self) -> ipaddress.IPv4Network:
        """A /30 in 169.254.0.0/16 (link-local: never routed off this host)."""
        block = 4 * ((self._n % 16000) + 64)  # skip 169.254.0.x
        return ipaddress.IPv4Network((int(ipaddress.IPv4Address("169.254.0.0")) + block, 30))

    @property
    def host_ip(self) -> str:
        return str(self.link_net.network_address + 1)

    @property
    def ns_ip(self) -> str:
        return str(self.link_net.network_address + 2)

    # -- the uplink the networks' routers attach to, inside the namespace ---------------
    @property
    def uplink_net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"100.64.{self._n % 250}.0/24")  # shared address space

    @property
    def uplink_bridge(self) -> str:
        return "br-uplink"

    def default_subnet(self) -> str:
        """The default network's gateway/prefix when the plan gives none: 10.X.Y.1/24."""
        x, y = (self._n >> 8) % 250 + 1, self._n % 250 + 1
        return f"10.{x}.{y}.1/24"
