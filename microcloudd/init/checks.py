"""Checks of an InitPlan against this machine (disks, interfaces, files), before any change."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Protocol

from microcloudd.api.errors import MicrocloudError
from microcloudd.api.init import CephExternal, InitPlan
from microcloudd.components import ceph
from microcloudd.init import disks as disk_discovery
from microcloudd.init import host_libvirt, interfaces

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.I)
MIN_FILE_OSD = 1 << 30
EXTERNAL_CEPH_TIMEOUT = 10.0  # seconds for an external cluster's monitor to answer


class Reporter(Protocol):
    def at(self, key: str, message: str) -> None: ...


def check_plan(plan: InitPlan, p: Reporter, sys_block: Path = disk_discovery.SYS_BLOCK) -> None:
    if not _NAME.match(plan.member):
        p.at("member", f"{plan.member!r} is not a valid member name (letters, digits, dashes; max 63)")
    if plan.address:
        try:
            ipaddress.ip_address(plan.address)
        except ValueError:
            p.at("address", f"{plan.address!r} is not an IP address")
    _check_storage(plan, p, sys_block)
    _check_network(plan, p)
    _check_compute(plan, p)


def _check_compute(plan: InitPlan, p: Reporter) -> None:
    c = plan.compute
    if c.libvirt == "host":
        why = host_libvirt.problem(c.libvirt_uri)
        if why:
            p.at("compute.libvirt_uri" if c.libvirt_uri else "compute.libvirt", why)
    elif c.libvirt != "private":
        p.at("compute.libvirt", f"{c.libvirt!r}: use private (our own libvirtd) or host (a libvirtd "
                                "the host runs)")
    elif c.libvirt_uri:
        p.at("compute.libvirt_uri", "only with libvirt: host (a private libvirtd's URI is ours to choose)")


def _check_storage(plan: InitPlan, p: Reporter, sys_block: Path) -> None:
    st = plan.storage
    if not _NAME.match(st.pool):
        p.at("storage.pool", f"{st.pool!r} is not a valid pool name")
    if st.ceph is not None:
        if st.disks or st.file_osd_size:
            p.at("storage.ceph", "an external Ceph cluster excludes disks and file_osd_size")
        missing = False
        for key in ("conf", "keyring"):
            file = Path(getattr(st.ceph, key))
            if not file.is_file():
                p.at(f"storage.ceph.{key}", f"{file}: file not found")
                missing = True
        if not missing:
            _check_external_ceph(st.ceph, p, guests_in_namespace=plan.compute.libvirt == "private")
        return
    if not st.disks and not st.file_osd_size:
        p.at("storage", "give disks, file_osd_size or an external ceph cluster")
    elif st.disks and st.file_osd_size:
        p.at("storage.file_osd_size", "give disks or file_osd_size, not both")
    if st.file_osd_size and st.file_osd_size < MIN_FILE_OSD:
        p.at("storage.file_osd_size", f"{st.file_osd_size} bytes is too small (at least 1GiB)")
    seen: set[str] = set()
    for i, path in enumerate(st.disks):
        key = f"storage.disks[{i}]"
        why = disk_discovery.problem(path, wipe=st.wipe, sys_block=sys_block)
        real = str(Path(path).resolve())
        if why:
            p.at(key, why)
        elif real in seen:
            p.at(key, f"{path}: listed twice")
        seen.add(real)
    if st.wipe and not st.disks:
        p.at("storage.wipe", "wipe applies to storage.disks, and none are given")


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_external_ceph(ext: CephExternal, p: Reporter, *, guests_in_namespace: bool) -> None:
    """The cluster answers with this conf, keyring and user (a connection, nothing written),
    at an address the guests' QEMU can reach too."""
    try:
        access = ceph.external(Path(ext.conf), Path(ext.keyring), ext.user)
    except MicrocloudError as e:
        p.at("storage.ceph", str(e))
        return
    if guests_in_namespace and _loopback(access.mon_host):
        # Our libvirtd (so QEMU) runs in the member's network namespace, with its own loopback.
        p.at("storage.ceph.conf", f"{ext.conf}: the monitor address {access.mon_host} is a loopback "
                                  "address, which the guests (in microcloud's network namespace) cannot "
                                  "reach; list the monitors by a network address in `mon host`")
    why = ceph.check_external(access, EXTERNAL_CEPH_TIMEOUT)
    if why:
        p.at("storage.ceph", f"cannot use this Ceph cluster: {why}")


def _check_network(plan: InitPlan, p: Reporter) -> None:
    net = plan.network
    if not _NAME.match(net.name):
        p.at("network.name", f"{net.name!r} is not a valid network name")
    uplink_net = _check_uplink(plan, p)
    if net.subnet:
        try:
            iface = ipaddress.ip_interface(net.subnet)
        except ValueError:
            p.at("network.subnet", f"{net.subnet!r} is not an address/prefix such as 10.10.10.1/24")
            return
        if iface.version != 4 or not 8 <= iface.network.prefixlen <= 29:
            p.at("network.subnet", f"{net.subnet}: use an IPv4 address/prefix with a prefix of 8 to 29")
        elif iface.ip in (iface.network.network_address, iface.network.broadcast_address):
            p.at("network.subnet", f"{net.subnet}: give the gateway address, e.g. "
                                   f"{next(iface.network.hosts())}/{iface.network.prefixlen}")
        elif uplink_net is not None and iface.network.overlaps(uplink_net):
            p.at("network.subnet", f"{net.subnet} overlaps the uplink network {uplink_net}")


def _check_uplink(plan: InitPlan, p: Reporter) -> ipaddress.IPv4Network | None:
    """A physical uplink: a free host interface and its IPv4 network. The uplink network, if valid."""
    net = plan.network
    if net.uplink == "nat":
        for key in ("uplink_gateway", "uplink_range", "uplink_dns"):
            if getattr(net, key):
                p.at(f"network.{key}", "only for a physical uplink (network.uplink: an interface name)")
        return None
    why = interfaces.problem(net.uplink)
    if why:
        p.at("network.uplink", why)
    if not net.uplink_gateway:
        p.at("network.uplink_gateway", "a physical uplink needs uplink_gateway: its upstream router's "
                                       "address/prefix, e.g. 192.0.2.1/24")
        return None
    try:
        gw = ipaddress.IPv4Interface(net.uplink_gateway)
    except ValueError:
        p.at("network.uplink_gateway", f"{net.uplink_gateway!r} is not an IPv4 address/prefix such as "
                                       "192.0.2.1/24")
        return None
    if gw.network.prefixlen > 29 or gw.ip in (gw.network.network_address, gw.network.broadcast_address):
        p.at("network.uplink_gateway", f"{net.uplink_gateway}: give the router's address in a subnet of "
                                       "/29 or larger")
        return None
    _check_range(net.uplink_range, gw, p)
    for i, server in enumerate(net.uplink_dns):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            p.at(f"network.uplink_dns[{i}]", f"{server!r} is not an IP address")
    return gw.network


def _check_range(text: str, gw: ipaddress.IPv4Interface, p: Reporter) -> None:
    key = "network.uplink_range"
    if not text:
        p.at(key, "a physical uplink needs uplink_range: the addresses our routers may take on "
                  f"{gw.network}, e.g. {gw.network.network_address + 100}-"
                  f"{gw.network.network_address + 199}")
        return
    try:
        lo, hi = (ipaddress.IPv4Address(a.strip()) for a in text.split("-", 1))
    except ValueError:
        p.at(key, f"{text!r} is not a range such as 192.0.2.100-192.0.2.199")
        return
    hosts = (gw.network.network_address, gw.network.broadcast_address)
    if lo not in gw.network or hi not in gw.network or lo in hosts or hi in hosts:
        p.at(key, f"{text}: both ends must be host addresses in {gw.network}")
    elif lo > hi:
        p.at(key, f"{text}: the first address is after the last")
    elif lo <= gw.ip <= hi:
        p.at(key, f"{text}: contains the gateway {gw.ip}")
