"""Typed values the compute driver takes and returns (no libvirt here).

A `DomainSpec` is everything needed to build one VM's libvirt domain; the services layer
fills it from the database (instance row, RBD clone, OVN port, seed image).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

# Our libvirt <metadata> element: owner, instance and project, so orphans can be found.
METADATA_NS = "https://microcloud.dev/xmlns/domain/1"
METADATA_PREFIX = "microcloud"

DEFAULT_PROJECT = "default"


def domain_name(project: str, instance: str) -> str:
    """The libvirt domain name of an instance: names never contain '_', so it is unambiguous."""
    return instance if project == DEFAULT_PROJECT else f"{project}_{instance}"


@dataclass(frozen=True)
class CephMonitor:
    host: str
    port: int


@dataclass(frozen=True)
class RbdImage:
    """An RBD image reached over the network by QEMU itself (no host kernel mapping)."""

    pool: str
    image: str
    monitors: tuple[CephMonitor, ...]
    user: str  # cephx user without "client.", e.g. "admin"
    secret_uuid: str  # the libvirt secret holding that user's key


class DiskBus(enum.StrEnum):
    VIRTIO = "virtio"
    IDE = "ide"
    SCSI = "scsi"


@dataclass(frozen=True)
class Disk:
    source: RbdImage
    # Guest device name ("vdb"); None lets the driver choose the next free one.
    target: str | None = None
    readonly: bool = False
    bus: DiskBus = DiskBus.VIRTIO


class NicKind(enum.StrEnum):
    """How a NIC reaches OVS `bridge` (see domain_xml.nic_element)."""

    OVS = "ovs"  # a TAP libvirt makes and plugs into the bridge itself (<virtualport type='openvswitch'>)
    # macvtap on `host_dev`, a veth end in libvirtd's namespace whose peer is the bridge's port
    # (a libvirtd outside the member's namespace: drivers/compute/host_nic.py)
    DIRECT = "direct"


@dataclass(frozen=True)
class Nic:
    """A NIC plugged into OVS `bridge` as the port of OVN logical switch port `port_id`."""

    mac: str
    port_id: str  # a UUID: libvirt rejects other interfaceids (it is OVS external_ids:iface-id)
    bridge: str = "br-int"
    kind: NicKind = NicKind.OVS
    host_dev: str = ""  # DIRECT: the host device the macvtap sits on


@dataclass(frozen=True)
class DomainSpec:
    instance: str
    uuid: str
    vcpus: int
    memory_mib: int
    root: RbdImage
    project: str = DEFAULT_PROJECT
    # NoCloud seed (ISO labelled cidata) kept in RBD so the instance starts on any member.
    seed: RbdImage | None = None
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    # File the serial console is logged to (on the member running the instance).
    console_log: Path | None = None
    # Head-room for live changes; None means "same as vcpus / memory_mib".
    max_vcpus: int | None = None
    max_memory_mib: int | None = None

    @property
    def name(self) -> str:
        return domain_name(self.project, self.instance)


class PowerState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    FROZEN = "frozen"
    STOPPING = "stopping"
    ERROR = "error"


@dataclass(frozen=True)
class DomainStatus:
    name: str
    uuid: str
    instance: str
    project: str
    state: PowerState
    vcpus: int
    memory_kib: int  # current memory (balloon) of a running domain, configured otherwise
    max_memory_kib: int
    cpu_time_ns: int
    virt_type: str  # "kvm" or "qemu" (TCG) as the domain is defined


class EventKind(enum.StrEnum):
    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"
    PMSUSPENDED = "pmsuspended"
    CRASHED = "crashed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class LifecycleEvent:
    name: str  # libvirt domain name
    uuid: str
    kind: EventKind
    detail: int  # libvirt's detail code for the kind (e.g. STOPPED_SHUTDOWN vs STOPPED_DESTROYED)


# Not a libvirt event: the driver's connection to libvirtd was lost and is open again, so
# events were missed and a consumer re-reads what it keeps (drivers/compute/events.py).
RESYNC = LifecycleEvent(name="", uuid="", kind=EventKind.UNKNOWN, detail=-1)


def is_resync(ev: LifecycleEvent) -> bool:
    return ev.kind is EventKind.UNKNOWN and not ev.name and not ev.uuid


@dataclass(frozen=True)
class LimitsChange:
    """Where a limits update took effect."""

    live: bool  # applied to the running domain now
    next_start: bool  # recorded in the persistent definition (always True on success)


@dataclass
class ParsedDomain:
    """What we read back from a domain's XML."""

    name: str
    uuid: str
    virt_type: str
    vcpus: int
    max_vcpus: int
    memory_kib: int
    max_memory_kib: int
    owner: str | None
    instance: str | None
    project: str | None
    root: RbdImage | None = None  # the disk with boot order 1
    seed: RbdImage | None = None  # the read-only cdrom
    disks: list[Disk] = field(default_factory=list)  # the other (custom volume) disks
    nics: list[Nic] = field(default_factory=list)
    console_log: Path | None = None
