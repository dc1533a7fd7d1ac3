"""Checks of an InitPlan against this machine (disks, interfaces, files), before any change."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Protocol

from microcloudd.api.init import InitPlan
from microcloudd.init import disks as disk_discovery

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.I)
MIN_FILE_OSD = 1 << 30
HOST_LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")


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
    if plan.compute.libvirt not in ("private", "host"):
        p.at("compute.libvirt", f"{plan.compute.libvirt!r}: use private (our own libvirtd) or host")
    elif plan.compute.libvirt == "host" and not HOST_LIBVIRT_SOCKET.exists():
        p.at("compute.libvirt", f"host: no libvirtd answers on {HOST_LIBVIRT_SOCKET}")


def _check_storage(plan: InitPlan, p: Reporter, sys_block: Path) -> None:
    st = plan.storage
    if not _NAME.match(st.pool):
        p.at("storage.pool", f"{st.pool!r} is not a valid pool name")
    if st.ceph is not None:
        if st.disks or st.file_osd_size:
            p.at("storage.ceph", "an external Ceph cluster excludes disks and file_osd_size")
        for key in ("conf", "keyring"):
            file = Path(getattr(st.ceph, key))
            if not file.is_file():
                p.at(f"storage.ceph.{key}", f"{file}: file not found")
        return
    if not st.disks and not st.file_osd_size:
        p.at("storage", "give disks, file_osd_size or an external ceph cluster")
    if st.file_osd_size and st.file_osd_size < MIN_FILE_OSD:
        p.at("storage.file_osd_size", f"{st.file_osd_size} bytes is too small (at least 1GiB)")
    found = disk_discovery.by_path(disk_discovery.discover(sys_block)) if st.disks else {}
    seen: set[str] = set()
    for i, path in enumerate(st.disks):
        key = f"storage.disks[{i}]"
        disk = found.get(path)
        if disk is None:
            p.at(key, f"{path}: no such disk (see `microcloud init --list-disks`)")
        elif disk.in_use:
            p.at(key, f"{path}: disk in use: {disk.in_use}")
        elif disk.read_only:
            p.at(key, f"{path}: disk is read-only")
        elif disk.path in seen:
            p.at(key, f"{path}: listed twice")
        else:
            seen.add(disk.path)
            # components/ceph formats file-backed OSDs only so far (see the issue 7 report).
            p.at(key, f"{path}: OSDs on block devices are not supported yet; use storage.file_osd_size")


def _check_network(plan: InitPlan, p: Reporter) -> None:
    net = plan.network
    if not _NAME.match(net.name):
        p.at("network.name", f"{net.name!r} is not a valid network name")
    if net.uplink != "nat" and not Path("/sys/class/net", net.uplink).exists():
        p.at("network.uplink", f"{net.uplink}: no such network interface (or use nat)")
    elif net.uplink != "nat":
        p.at("network.uplink", f"{net.uplink}: physical uplinks are not supported yet; use nat")
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
