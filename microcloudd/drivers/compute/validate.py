"""Checks made before libvirt is touched, so bad input fails clearly and creates nothing."""

from __future__ import annotations

import re
import uuid as uuidlib

from microcloudd.api.errors import InvalidArgument
from microcloudd.api.names import check_name
from microcloudd.drivers.compute.types import Disk, DomainSpec, Nic, NicKind, RbdImage

MIN_MEMORY_MIB = 32
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB: QEMU's pc machine ceiling is far above any member
MAX_VCPUS = 255  # the i440fx "pc" machine's limit

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TARGET = re.compile(r"^(vd|sd|hd)[a-z]{1,2}$")
_RBD_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # a Linux interface name


def check_uuid(what: str, value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument(f"{what} must be a UUID, not {value!r}") from None


def check_vcpus(vcpus: int, max_vcpus: int | None = None) -> None:
    if not isinstance(vcpus, int) or isinstance(vcpus, bool) or not 1 <= vcpus <= MAX_VCPUS:
        raise InvalidArgument(f"limits.cpu must be a whole number from 1 to {MAX_VCPUS}, not {vcpus!r}")
    if max_vcpus is not None and not vcpus <= max_vcpus <= MAX_VCPUS:
        raise InvalidArgument(f"the vCPU maximum {max_vcpus!r} must be between {vcpus} and {MAX_VCPUS}")


def check_memory(memory_mib: int, max_memory_mib: int | None = None) -> None:
    if (not isinstance(memory_mib, int) or isinstance(memory_mib, bool)
            or not MIN_MEMORY_MIB <= memory_mib <= MAX_MEMORY_MIB):
        raise InvalidArgument(
            f"limits.memory must be from {MIN_MEMORY_MIB} MiB to {MAX_MEMORY_MIB // (1024 * 1024)} TiB, "
            f"not {memory_mib!r} MiB")
    if max_memory_mib is not None and not memory_mib <= max_memory_mib <= MAX_MEMORY_MIB:
        raise InvalidArgument(f"the memory maximum {max_memory_mib!r} MiB must be between {memory_mib} MiB "
                              f"and {MAX_MEMORY_MIB} MiB")


def check_rbd(what: str, img: RbdImage) -> None:
    for part, value in (("pool", img.pool), ("image", img.image), ("ceph user", img.user)):
        if not isinstance(value, str) or not _RBD_NAME.match(value):
            raise InvalidArgument(f"{what}: invalid RBD {part} name {value!r}")
    if not img.monitors:
        raise InvalidArgument(f"{what}: at least one Ceph monitor address is needed")
    for mon in img.monitors:
        if not mon.host or not 0 < mon.port < 65536:
            raise InvalidArgument(f"{what}: invalid Ceph monitor address {mon.host}:{mon.port}")
    check_uuid(f"{what}: the ceph secret", img.secret_uuid)


def check_disk(disk: Disk) -> None:
    check_rbd("disk", disk.source)
    if disk.target is not None and not _TARGET.match(disk.target):
        raise InvalidArgument(f"invalid disk device name {disk.target!r} (expected e.g. 'vdb')")


def check_nic(nic: Nic) -> None:
    if not isinstance(nic.mac, str) or not _MAC.match(nic.mac):
        raise InvalidArgument(f"invalid MAC address {nic.mac!r} (expected lower-case aa:bb:cc:dd:ee:ff)")
    if int(nic.mac[:2], 16) & 1:
        raise InvalidArgument(f"MAC address {nic.mac} is a multicast address")
    # libvirt's openvswitch virtualport only accepts a UUID as interfaceid.
    check_uuid("the NIC's OVN port id", nic.port_id)
    if nic.kind is NicKind.DIRECT:
        if not _IFNAME.match(nic.host_dev):
            raise InvalidArgument(f"invalid host device name {nic.host_dev!r} for a direct NIC")
    elif not nic.bridge or "/" in nic.bridge or len(nic.bridge) > 15:
        raise InvalidArgument(f"invalid bridge name {nic.bridge!r}")


def check_spec(spec: DomainSpec) -> None:
    check_name("instance", spec.instance)
    check_name("project", spec.project)
    check_uuid("the instance UUID", spec.uuid)
    check_vcpus(spec.vcpus, spec.max_vcpus)
    check_memory(spec.memory_mib, spec.max_memory_mib)
    check_rbd("root disk", spec.root)
    if spec.seed is not None:
        check_rbd("cloud-init seed", spec.seed)
    targets: set[str] = set()
    for disk in spec.disks:
        check_disk(disk)
        if disk.target is not None:
            if disk.target in targets or disk.target == "vda":
                raise InvalidArgument(f"disk device name {disk.target!r} is used twice")
            targets.add(disk.target)
    macs: set[str] = set()
    for nic in spec.nics:
        check_nic(nic)
        if nic.mac in macs:
            raise InvalidArgument(f"MAC address {nic.mac} is used by two NICs")
        macs.add(nic.mac)
    if spec.console_log is not None and not spec.console_log.is_absolute():
        raise InvalidArgument(f"the console log path must be absolute, not {str(spec.console_log)!r}")
