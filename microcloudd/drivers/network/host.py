"""The host side of networking, with iproute2, ethtool and nft: the uplink, and namespace "ports".

Uplink, one of:
- PhysicalUplink: a given NIC becomes a port of a provider bridge on OVS, mapped to the
  uplink's physical network name (OVN's localnet port sends traffic out through it);
- HostNatUplink: for a machine with a single NIC, a veth pair: one end (with the uplink
  gateway address) stays on the host, the other joins the provider bridge; forwarding on and
  an nftables masquerade rule so the uplink subnet reaches whatever the host reaches.
Both can work inside given network namespaces (tests build the "host" as a namespace), and
the OVS side lives in the namespace of ovs-vswitchd (ChassisConfig.netns).

NamespacePort binds a network namespace to an OVN logical switch port: a veth into the
namespace, the outer end an OVS port whose external_ids:iface-id is the port's UUID.

Every public operation is async (the blocking subprocess work runs in a thread) and
idempotent; errors are microcloudd.api.errors. The `ip` command rather than a netlink library:
these run a handful of times per member start, and the daemon keeps ~8 MB less resident.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microcloudd.api.errors import Internal, InvalidArgument, NotFound, Unavailable
from microcloudd.components import ovs

_IFNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$")


def _check_ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise InvalidArgument(f"interface name {name!r} must be 1-15 letters, digits, '-', '_' or '.'")
    return name


def _run(argv: list[str], ns: str | None = None, stdin: str | None = None) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + argv
    try:
        done = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        raise Unavailable(f"{argv[0]} is not installed") from e
    if done.returncode != 0:
        raise Internal(f"{' '.join(argv[:3])} failed: {done.stderr.strip()}")
    return done.stdout


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def run_ip(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ip [-n ns] args...`; a missing namespace is NotFound, a failure (if `check`) Internal
    (also stack/netns's runner)."""
    if ns is not None and not netns_exists(ns):
        raise NotFound(f"network namespace {ns!r} not found")
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        raise Unavailable("the `ip` command (iproute2) is not installed") from e
    if check and done.returncode != 0:
        raise Internal(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def _link(ns: str | None, ifname: str) -> dict[str, Any] | None:
    """The link `ifname` in `ns` as `ip -json` shows it, or None."""
    done = run_ip(ns, "-json", "link", "show", "dev", ifname, check=False)
    if done.returncode != 0:
        return None
    links = json.loads(done.stdout or "[]")
    return links[0] if links else None


def _addresses(ns: str | None, ifname: str) -> list[tuple[str, int]]:
    """The (address, prefix length) pairs of `ifname`, IPv4 and IPv6."""
    shown = json.loads(run_ip(ns, "-json", "addr", "show", "dev", ifname).stdout or "[]")
    return [(a["local"], a["prefixlen"]) for link in shown for a in link.get("addr_info", [])]


def _netns_target(ns: str | None) -> str:
    """What `ip link ... netns X` takes for `ns`: its name, or our own pid for the current one."""
    return ns if ns is not None else str(os.getpid())


async def create_namespace(name: str) -> None:
    """A network namespace with loopback up (kept if it exists)."""
    await asyncio.to_thread(ensure_netns, name)


async def delete_namespace(name: str) -> None:
    await asyncio.to_thread(remove_netns, name)


def ensure_netns(name: str) -> None:
    if not netns_exists(name):
        run_ip(None, "netns", "add", name)
    run_ip(name, "link", "set", "dev", "lo", "up")


def remove_netns(name: str) -> None:
    if netns_exists(name):
        run_ip(None, "netns", "del", name, check=False)


def _delete_link(ns: str | None, ifname: str) -> None:
    with contextlib.suppress(NotFound):
        if _link(ns, ifname) is not None:
            run_ip(ns, "link", "del", "dev", ifname, check=False)


def _veth(ns_a: str | None, name_a: str, ns_b: str | None, name_b: str) -> None:
    """A veth pair name_a (in ns_a) <-> name_b (in ns_b), both up; kept if it exists."""
    if _link(ns_a, name_a) is not None:
        return
    peer = ["peer", "name", name_b] + (["netns", _netns_target(ns_b)] if ns_b != ns_a else [])
    run_ip(ns_a, "link", "add", name_a, "type", "veth", *peer)
    run_ip(ns_a, "link", "set", "dev", name_a, "up")
    run_ip(ns_b, "link", "set", "dev", name_b, "up")


def _tx_checksum_off(ns: str | None, ifname: str) -> None:
    # The userspace datapath reads veth frames with partial (offloaded) TCP/UDP checksums and
    # forwards them unfixed: the receiver drops them. ICMP works, TCP does not, unless off.
    _run(["ethtool", "-K", ifname, "tx", "off"], ns)


def masquerade(table: str, match: str, ns: str | None = None) -> None:
    """IPv4 forwarding on in `ns`, and nftables table `table` holding one postrouting rule that
    masquerades what `match`es. The table is replaced atomically: re-applying never duplicates
    the rule."""
    _run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns)
    rules = (
        f"table ip {table} {{}}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    {match} masquerade\n"
        "  }\n"
        "}\n"
    )
    _run(["nft", "-f", "-"], ns, stdin=rules)


def delete_nft_table(table: str, ns: str | None = None) -> None:
    """Remove nftables table `table` if it is there (and nft is installed)."""
    with contextlib.suppress(Internal, Unavailable):
        _run(["nft", "delete", "table", "ip", table], ns)


def _ovs_add_port(cfg: ovs.ChassisConfig, bridge: str, ifname: str, *sets: str) -> None:
    args = ["--may-exist", "add-port", bridge, ifname]
    if sets:
        args += ["--", "set", "Interface", ifname, *sets]
    ovs.vsctl(cfg, *args)


# ------------------------------------------------------------------ namespace ports

@dataclass(frozen=True)
class NamespacePort:
    netns: str  # the namespace playing the instance
    ifname: str  # its NIC inside that namespace
    outer_ifname: str  # the veth end on br-int (in ovs-vswitchd's namespace)
    port_id: str  # the OVN logical switch port (UUID)
    mac: str


async def bind_namespace_port(chassis: ovs.ChassisConfig, port_id: str, mac: str, ns: str,
                              ifname: str = "eth0", outer_ifname: str | None = None) -> NamespacePort:
    """Plug namespace `ns` (created if missing) into the chassis' integration bridge as OVN
    port `port_id` with MAC `mac`. The caller configures addresses (or runs a DHCP client)."""
    outer = _check_ifname(outer_ifname or f"mcp{port_id.replace('-', '')[:10]}")
    _check_ifname(ifname)

    def bind() -> NamespacePort:
        ensure_netns(ns)
        _veth(chassis.netns, outer, ns, ifname)
        run_ip(ns, "link", "set", "dev", ifname, "down")
        run_ip(ns, "link", "set", "dev", ifname, "address", mac)
        run_ip(ns, "link", "set", "dev", ifname, "up")
        _tx_checksum_off(ns, ifname)
        _ovs_add_port(chassis, chassis.bridge, outer, f"external_ids:iface-id={port_id}",
                      f"external_ids:attached-mac={mac}")
        return NamespacePort(ns, ifname, outer, port_id, mac)

    return await asyncio.to_thread(bind)


async def unbind_namespace_port(
    chassis: ovs.ChassisConfig, port: NamespacePort, remove_ns: bool = True
) -> None:
    def unbind() -> None:
        with contextlib.suppress(Internal, Unavailable):
            ovs.vsctl(chassis, "--if-exists", "del-port", chassis.bridge, port.outer_ifname)
        _delete_link(chassis.netns, port.outer_ifname)
        if remove_ns:
            remove_netns(port.netns)

    await asyncio.to_thread(unbind)


# ------------------------------------------------------------------ uplinks

@dataclass(frozen=True)
class PhysicalUplink:
    """A NIC given at init, moved into a provider bridge mapped to `physical_network`.

    With the userspace datapath, ovs-vswitchd reads a port through an AF_PACKET socket in
    its own network namespace, so a NIC still in the host's (`host_netns`) is moved into
    the chassis' first: once at init, and again after a reboot (when a namespace goes, its
    physical NICs come back to the host). Deleting the namespace gives the NIC back."""

    interface: str
    physical_network: str = "uplink"
    bridge: str = "br-uplink"
    host_netns: str | None = None  # where the NIC is before it is moved (None: the current one)

    async def apply(self, chassis: ovs.ChassisConfig) -> None:
        _check_ifname(self.interface)

        def apply() -> None:
            self._move_into(chassis.netns)
            run_ip(chassis.netns, "link", "set", "dev", self.interface, "up")
            ovs.add_bridge(chassis, self.bridge)
            _ovs_add_port(chassis, self.bridge, self.interface)
            ovs.set_bridge_mappings(chassis, {**chassis.bridge_mappings, self.physical_network: self.bridge})

        await asyncio.to_thread(apply)

    def _move_into(self, target: str | None) -> None:
        if target == self.host_netns:
            if _link(target, self.interface) is None:
                raise NotFound(f"uplink interface {self.interface!r} not found")
            return
        if _link(target, self.interface) is not None:
            return  # moved by an earlier run
        link = _link(self.host_netns, self.interface)
        if link is None:
            raise NotFound(f"uplink interface {self.interface!r} not found on the host nor in "
                           f"namespace {target}")
        if link.get("master"):
            raise InvalidArgument(f"uplink interface {self.interface!r} became a bridge or bond port; "
                                  "not taking it")
        used = [a for a, _ in _addresses(self.host_netns, self.interface)
                if not ipaddress.ip_address(a).is_link_local]
        if used:
            raise InvalidArgument(f"uplink interface {self.interface!r} has address {', '.join(used)} "
                                  "now, so the host uses it; not taking it")
        run_ip(self.host_netns, "link", "set", "dev", self.interface, "netns", _netns_target(target))

    async def remove(self, chassis: ovs.ChassisConfig) -> None:
        await asyncio.to_thread(ovs.vsctl, chassis, "--if-exists", "del-br", self.bridge)


@dataclass(frozen=True)
class HostNatUplink:
    """The uplink of a single-NIC machine: a veth whose host end holds `gateway` (the uplink
    gateway, e.g. "192.0.2.1/24"), the other end on the provider bridge, plus masquerade."""

    gateway: str
    physical_network: str = "uplink"
    bridge: str = "br-uplink"
    name: str = "mcuplink"  # host end; the OVS end is name + "-o"
    netns: str | None = None  # the "host" namespace (None: the current one)

    @property
    def ovs_end(self) -> str:
        return f"{self.name}-o"

    @property
    def nft_table(self) -> str:
        return "microcloud_" + re.sub(r"[^a-zA-Z0-9_]", "_", self.name)

    def _check(self) -> ipaddress.IPv4Interface:
        _check_ifname(self.name)
        _check_ifname(self.ovs_end)
        try:
            gw = ipaddress.IPv4Interface(self.gateway)
        except ValueError:
            raise InvalidArgument(f"uplink gateway {self.gateway!r} is not an IPv4 address/prefix") from None
        if gw.network.prefixlen >= 31 or gw.ip == gw.network.network_address:
            raise InvalidArgument(f"uplink gateway {self.gateway!r} needs a subnet with room for routers")
        return gw

    async def apply(self, chassis: ovs.ChassisConfig) -> None:
        gw = self._check()

        def apply() -> None:
            _veth(self.netns, self.name, chassis.netns, self.ovs_end)
            if (str(gw.ip), gw.network.prefixlen) not in _addresses(self.netns, self.name):
                run_ip(self.netns, "addr", "add", f"{gw.ip}/{gw.network.prefixlen}", "dev", self.name)
            _tx_checksum_off(self.netns, self.name)
            _tx_checksum_off(chassis.netns, self.ovs_end)
            ovs.add_bridge(chassis, self.bridge)
            _ovs_add_port(chassis, self.bridge, self.ovs_end)
            ovs.set_bridge_mappings(chassis, {**chassis.bridge_mappings, self.physical_network: self.bridge})
            masquerade(self.nft_table, f'ip saddr {gw.network} oifname != "{self.name}"', self.netns)

        await asyncio.to_thread(apply)

    async def remove(self, chassis: ovs.ChassisConfig) -> None:
        def remove() -> None:
            with contextlib.suppress(Internal, Unavailable):
                ovs.vsctl(chassis, "--if-exists", "del-port", self.bridge, self.ovs_end)
            _delete_link(self.netns, self.name)
            delete_nft_table(self.nft_table, self.netns)

        await asyncio.to_thread(remove)
