"""libvirt domain XML built from typed values (ElementTree, never string pasting), and read back.

The VM: machine `pc`, `type='kvm'` with /dev/kvm else `qemu` (TCG); root disk and custom
volumes are RBD images QEMU opens itself over the network (cephx secret in libvirt); the
NoCloud seed is an RBD read-only cdrom; NICs are OVS `br-int` ports named by their OVN port
UUID (plugged by libvirt, or, for a libvirtd outside the member's namespace, macvtap on a veth
whose peer is the port: NicKind.DIRECT); the serial console is a pty (for an interactive
console stream) logged to a file.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from microcloudd.api.errors import InvalidArgument
from microcloudd.drivers.compute.types import (
    METADATA_NS,
    METADATA_PREFIX,
    CephMonitor,
    Disk,
    DiskBus,
    DomainSpec,
    Nic,
    NicKind,
    ParsedDomain,
    RbdImage,
)

ET.register_namespace(METADATA_PREFIX, METADATA_NS)

ROOT_TARGET = "vda"
SEED_TARGET = "hdc"  # IDE cdrom: every guest kernel and firmware reads it


def _cpu_has_virt_extensions() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M))


def host_virt_type() -> str:
    """KVM when the host has /dev/kvm and a CPU with VT-x/AMD-V, else QEMU's TCG emulation
    (slow, but it runs). Some nested hypervisors expose /dev/kvm without the CPU flags and
    then fail guests with "emulation failure": the flags are the better witness.
    MICROCLOUD_VIRT_TYPE=kvm|qemu overrides the guess."""
    forced = os.environ.get("MICROCLOUD_VIRT_TYPE")
    if forced in ("kvm", "qemu"):
        return forced
    return "kvm" if os.path.exists("/dev/kvm") and _cpu_has_virt_extensions() else "qemu"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def guest_ceph_conf(mount_timeout: int = 30, op_timeout: int = 60, mon_host: str = "") -> str:
    """A ceph.conf for QEMU's RBD client (`<config file=...>` of every RBD disk, see
    `set_rbd_config`): without it librados waits client_mount_timeout (300 s) for a monitor that
    does not answer, and the guest start (virDomainCreate) blocks that long. With a config file
    QEMU reads no other ceph.conf. The monitors QEMU uses are the disk's <host> elements (libvirt
    passes them as mon_host, over the file's); `mon_host` ("IP:PORT[,IP:PORT...]") is written
    too, so the file names the cluster it is for."""
    lines = ["[global]"]
    if mon_host:
        if any(c in mon_host for c in "\n\r#;"):  # one line, no comment
            raise InvalidArgument(f"invalid Ceph monitor address list {mon_host!r}")
        lines.append(f"mon_host = {mon_host}")
    return "\n".join([
        *lines,
        f"client_mount_timeout = {int(mount_timeout)}",
        f"rados_mon_op_timeout = {int(op_timeout)}",
        "",
    ])


def set_rbd_config(root: ET.Element, conf: Path) -> bool:
    """Give every RBD disk source under `root` (a domain or one disk) `<config file=conf>`;
    True if anything changed."""
    changed = False
    for src in root.iter("source"):
        if src.get("protocol") != "rbd":
            continue
        el = src.find("config")
        if el is None:
            el = _sub(src, "config")
        if el.get("file") != str(conf):
            el.attrib = {"file": str(conf)}
            changed = True
    return changed


def rbd_disk_element(img: RbdImage, target: str, *, bus: DiskBus = DiskBus.VIRTIO, device: str = "disk",
                     readonly: bool = False, boot_order: int | None = None,
                     ceph_conf: Path | None = None) -> ET.Element:
    disk = ET.Element("disk", {"type": "network", "device": device})
    drv = {"name": "qemu", "type": "raw"}
    if device == "disk":
        drv.update(cache="writeback", discard="unmap")
    _sub(disk, "driver", **drv)
    src = _sub(disk, "source", protocol="rbd", name=f"{img.pool}/{img.image}")
    for mon in img.monitors:
        _sub(src, "host", name=mon.host, port=str(mon.port))
    if ceph_conf is not None:
        _sub(src, "config", file=str(ceph_conf))
    auth = _sub(disk, "auth", username=img.user)
    _sub(auth, "secret", type="ceph", uuid=img.secret_uuid)
    _sub(disk, "target", dev=target, bus=str(bus))
    if boot_order is not None:
        _sub(disk, "boot", order=str(boot_order))
    if readonly:
        _sub(disk, "readonly")
    return disk


def disk_element(disk: Disk, target: str, ceph_conf: Path | None = None) -> ET.Element:
    return rbd_disk_element(disk.source, target, bus=disk.bus, readonly=disk.readonly, ceph_conf=ceph_conf)


NIC_ALIAS_PREFIX = "ua-"  # libvirt keeps user aliases ("ua-...") in the persistent definition


def nic_element(nic: Nic) -> ET.Element:
    if nic.kind is NicKind.DIRECT:
        # macvtap in passthrough mode: the guest owns the veth end, whose peer is the OVS port
        # with iface-id = port_id; the port id rides along in the device's alias.
        iface = ET.Element("interface", {"type": "direct"})
        _sub(iface, "mac", address=nic.mac)
        _sub(iface, "source", dev=nic.host_dev, mode="passthrough")
    else:
        iface = ET.Element("interface", {"type": "bridge"})
        _sub(iface, "mac", address=nic.mac)
        _sub(iface, "source", bridge=nic.bridge)
        vport = _sub(iface, "virtualport", type="openvswitch")
        _sub(vport, "parameters", interfaceid=nic.port_id)
    _sub(iface, "model", type="virtio")
    # With OVS's userspace datapath, guest TX checksum offload leaves TCP segments with partial
    # checksums that the receiver drops: the guest computes its own checksums instead.
    drv = _sub(iface, "driver", name="qemu")
    _sub(drv, "host", csum="off")
    if nic.kind is NicKind.DIRECT:
        _sub(iface, "alias", name=NIC_ALIAS_PREFIX + nic.port_id)
    return iface


def metadata_element(owner: str, instance: str, project: str) -> ET.Element:
    el = ET.Element(f"{{{METADATA_NS}}}instance")
    _sub(el, f"{{{METADATA_NS}}}owner", owner)
    _sub(el, f"{{{METADATA_NS}}}name", instance)
    _sub(el, f"{{{METADATA_NS}}}project", project)
    return el


def _console_elements(devices: ET.Element, log: Path | None) -> None:
    for kind in ("serial", "console"):
        el = _sub(devices, kind, type="pty")
        if log is not None and kind == "serial":
            _sub(el, "log", file=str(log), append="on")
        if kind == "serial":
            _sub(el, "target", port="0")
        else:
            _sub(el, "target", type="serial", port="0")


def next_disk_target(used: set[str], prefix: str = "vd") -> str:
    for c in "bcdefghijklmnopqrstuvwxyz":
        if prefix + c not in used:
            return prefix + c
    raise InvalidArgument("no free disk device name left (vdb..vdz are all in use)")


def build_domain_xml(spec: DomainSpec, owner: str, virt_type: str | None = None,
                     ceph_conf: Path | None = None) -> str:
    """The persistent definition of `spec`. Call validate.check_spec first. `ceph_conf`: the
    config file of QEMU's RBD client (see guest_ceph_conf)."""
    dom = ET.Element("domain", {"type": virt_type or host_virt_type()})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    md = _sub(dom, "metadata")
    md.append(metadata_element(owner, spec.instance, spec.project))
    max_mem = spec.max_memory_mib or spec.memory_mib
    _sub(dom, "memory", str(max_mem), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mib), unit="MiB")
    max_vcpus = spec.max_vcpus or spec.vcpus
    _sub(dom, "vcpu", str(max_vcpus), placement="static", current=str(spec.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    feats = _sub(dom, "features")
    _sub(feats, "acpi")  # the ACPI power button is how a graceful shutdown reaches the guest
    _sub(feats, "apic")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    dev = _sub(dom, "devices")
    dev.append(rbd_disk_element(spec.root, ROOT_TARGET, boot_order=1, ceph_conf=ceph_conf))
    used = {ROOT_TARGET}
    for disk in spec.disks:
        target = disk.target or next_disk_target(used | {d.target for d in spec.disks if d.target})
        used.add(target)
        dev.append(disk_element(disk, target, ceph_conf))
    if spec.seed is not None:
        dev.append(rbd_disk_element(spec.seed, SEED_TARGET, bus=DiskBus.IDE, device="cdrom", readonly=True,
                                    ceph_conf=ceph_conf))
    for nic in spec.nics:
        dev.append(nic_element(nic))
    _console_elements(dev, spec.console_log)
    video = _sub(dev, "video")
    _sub(video, "model", type="none")
    _sub(dev, "memballoon", model="virtio")  # live memory changes go through the balloon
    return ET.tostring(dom, encoding="unicode")


def to_xml(el: ET.Element) -> str:
    return ET.tostring(el, encoding="unicode")


# ---- reading back -------------------------------------------------------------------------

def _kib(el: ET.Element | None) -> int:
    if el is None or not el.text:
        return 0
    unit = (el.get("unit") or "KiB").lower()
    factor = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024,
              "mib": 1024, "mb": 1e6 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1e9 / 1024}.get(unit, 1)
    return int(int(el.text) * factor)


def parse_rbd(disk: ET.Element) -> RbdImage | None:
    src = disk.find("source")
    if disk.get("type") != "network" or src is None or src.get("protocol") != "rbd":
        return None
    pool, _, image = (src.get("name") or "").partition("/")
    auth = disk.find("auth")
    secret = auth.find("secret") if auth is not None else None
    return RbdImage(
        pool=pool,
        image=image,
        monitors=tuple(CephMonitor(h.get("name", ""), int(h.get("port", "0"))) for h in src.findall("host")),
        user=auth.get("username", "") if auth is not None else "",
        secret_uuid=secret.get("uuid", "") if secret is not None else "",
    )


def parse_nic(iface: ET.Element) -> Nic | None:
    mac = iface.find("mac")
    src = iface.find("source")
    if mac is None:
        return None
    if iface.get("type") == "direct":
        alias = iface.find("alias")
        port = (alias.get("name") or "") if alias is not None else ""
        if src is None or not port.startswith(NIC_ALIAS_PREFIX):
            return None
        return Nic(mac=mac.get("address", ""), port_id=port.removeprefix(NIC_ALIAS_PREFIX), bridge="",
                   kind=NicKind.DIRECT, host_dev=src.get("dev", ""))
    params = iface.find("virtualport/parameters")
    if params is None or iface.get("type") != "bridge":
        return None
    return Nic(mac=mac.get("address", ""), port_id=params.get("interfaceid", ""),
               bridge=src.get("bridge", "") if src is not None else "")


def parse_domain_xml(xml: str) -> ParsedDomain:
    root = ET.fromstring(xml)
    md = root.find(f"metadata/{{{METADATA_NS}}}instance")

    def mdtext(tag: str) -> str | None:
        el = md.find(f"{{{METADATA_NS}}}{tag}") if md is not None else None
        return el.text if el is not None else None

    vcpu = root.find("vcpu")
    max_vcpus = int(vcpu.text or 0) if vcpu is not None else 0
    log_el = root.find("devices/serial/log")
    parsed = ParsedDomain(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        virt_type=root.get("type", ""),
        vcpus=int(vcpu.get("current", max_vcpus)) if vcpu is not None else 0,
        max_vcpus=max_vcpus,
        memory_kib=_kib(root.find("currentMemory")) or _kib(root.find("memory")),
        max_memory_kib=_kib(root.find("memory")),
        owner=mdtext("owner"),
        instance=mdtext("name"),
        project=mdtext("project"),
        console_log=Path(log_el.get("file", "")) if log_el is not None else None,
    )
    for disk in root.findall("devices/disk"):
        img = parse_rbd(disk)
        target = disk.find("target")
        if img is None or target is None:
            continue
        if disk.get("device") == "cdrom":
            parsed.seed = img
        elif disk.find("boot[@order='1']") is not None or target.get("dev") == ROOT_TARGET:
            parsed.root = img
        else:
            parsed.disks.append(Disk(source=img, target=target.get("dev"),
                                     readonly=disk.find("readonly") is not None,
                                     bus=DiskBus(target.get("bus", "virtio"))))
    for iface in root.findall("devices/interface"):
        nic = parse_nic(iface)
        if nic is not None:
            parsed.nics.append(nic)
    return parsed
