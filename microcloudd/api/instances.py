"""The instances API (LXD 1.0 shape): virtual machines, their state, console, log and snapshots."""

from __future__ import annotations

from typing import Any

import msgspec

from microcloudd.api.declare import Op, Query, Recursion

Devices = dict[str, dict[str, str]]


class InstanceSource(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a new instance's root disk comes from: an image, by alias or fingerprint."""

    type: str = "image"
    alias: str = ""
    fingerprint: str = ""
    # LXD clients send these too; a remote image server is not supported (one cluster, local images).
    server: str = ""
    protocol: str = ""
    mode: str = ""


class InstancesPost(msgspec.Struct, kw_only=True):
    name: str = ""
    type: str = "virtual-machine"
    source: InstanceSource = msgspec.field(default_factory=InstanceSource)
    config: dict[str, str] = {}
    devices: Devices = {}
    profiles: list[str] | None = None
    description: str = ""
    start: bool = False
    ephemeral: bool = False
    stateful: bool = False
    architecture: str = ""
    instance_type: str = ""


class InstancePut(msgspec.Struct, kw_only=True):
    """PUT replaces config/devices/description; PATCH (same type) merges the given keys."""

    config: dict[str, str] | None = None
    devices: Devices | None = None
    profiles: list[str] | None = None
    description: str | None = None
    architecture: str = ""
    ephemeral: bool = False
    stateful: bool = False


class Instance(msgspec.Struct, kw_only=True):
    name: str
    type: str = "virtual-machine"
    status: str
    status_code: int
    architecture: str
    config: dict[str, str]
    devices: Devices
    expanded_config: dict[str, str]
    expanded_devices: Devices
    profiles: list[str]
    description: str = ""
    created_at: str
    last_used_at: str = "1970-01-01T00:00:00Z"
    location: str
    stateful: bool = False
    ephemeral: bool = False
    project: str = "default"


class CpuState(msgspec.Struct):
    usage: int = 0  # nanoseconds of CPU time


class MemoryState(msgspec.Struct):
    usage: int = 0  # bytes
    usage_peak: int = 0
    total: int = 0
    swap_usage: int = 0
    swap_usage_peak: int = 0


class NetworkAddress(msgspec.Struct):
    family: str
    address: str
    netmask: str
    scope: str = "global"


class NetworkState(msgspec.Struct, kw_only=True):
    addresses: list[NetworkAddress] = []
    hwaddr: str = ""
    host_name: str = ""
    mtu: int = 0
    state: str = "up"
    type: str = "broadcast"
    counters: dict[str, int] = {}


class DiskState(msgspec.Struct):
    usage: int = 0
    total: int = 0


class InstanceState(msgspec.Struct, kw_only=True):
    status: str
    status_code: int
    cpu: CpuState = msgspec.field(default_factory=CpuState)
    memory: MemoryState = msgspec.field(default_factory=MemoryState)
    network: dict[str, NetworkState] | None = None
    disk: dict[str, DiskState] = {}
    pid: int = 0
    processes: int = 0
    # Ours: how guests run on this member ("kvm", or "qemu" = TCG software emulation).
    virtualization: str = ""


class InstanceSnapshot(msgspec.Struct, kw_only=True):
    name: str
    created_at: str
    config: dict[str, str] = {}
    devices: Devices = {}
    expanded_config: dict[str, str] = {}
    expanded_devices: Devices = {}
    profiles: list[str] = []
    description: str = ""
    stateful: bool = False
    architecture: str = ""
    ephemeral: bool = False
    expires_at: str = "0001-01-01T00:00:00Z"
    last_used_at: str = "1970-01-01T00:00:00Z"
    size: int = -1


class InstanceFull(Instance, kw_only=True):
    """`recursion=2`: the instance with its state and snapshots."""

    state: InstanceState | None = None
    snapshots: list[InstanceSnapshot] | None = None
    backups: list[Any] | None = None


class StatePut(msgspec.Struct, kw_only=True):
    action: str  # start, stop, restart, freeze, unfreeze
    timeout: int = -1  # seconds to wait for a clean stop/restart; -1: the default (30 s)
    force: bool = False
    stateful: bool = False


class SnapshotsPost(msgspec.Struct, kw_only=True):
    name: str = ""  # empty: snap0, snap1, ...
    stateful: bool = False
    expires_at: str | None = None


class InstanceRestore(InstancePut, kw_only=True):
    restore: str = ""  # PUT /1.0/instances/{name} {"restore": "snap0"} restores a snapshot


class ConsoleQuery(Query):
    max_bytes: int = 1 << 20  # how much of the log's end a plain GET returns


class ConsolePost(msgspec.Struct, kw_only=True):
    """LXD's console request: the operation's fds "0" (data) and "control" are websockets."""

    type: str = "console"  # "vga" is LXD's other kind; we have no graphics
    width: int = 0
    height: int = 0
    force: bool = False


OPS = (
    Op("GET", "/1.0/instances", "instances_list", "List instances", result=list[Any], query=Recursion),
    Op("POST", "/1.0/instances", "instances_create", "Create (and optionally start) an instance",
       body=InstancesPost, kind="async"),
    Op("GET", "/1.0/instances/{name}", "instance_get", "Show an instance", result=InstanceFull,
       query=Recursion),
    Op("PUT", "/1.0/instances/{name}", "instance_put",
       "Replace an instance's configuration (or restore a snapshot)", body=InstanceRestore, kind="async"),
    Op("PATCH", "/1.0/instances/{name}", "instance_patch", "Change some of an instance's configuration",
       body=InstancePut),
    Op("DELETE", "/1.0/instances/{name}", "instance_delete", "Delete a stopped instance", kind="async"),
    Op("GET", "/1.0/instances/{name}/state", "instance_state", "An instance's run-time state",
       result=InstanceState),
    Op("PUT", "/1.0/instances/{name}/state", "instance_state_put",
       "Start, stop, restart, freeze or unfreeze an instance", body=StatePut, kind="async"),
    # As LXD, a plain GET returns the console log; a websocket upgrade attaches to the console.
    Op("GET", "/1.0/instances/{name}/console", "instance_console",
       "The serial console's log, or (websocket upgrade) the console itself, bytes both ways",
       query=ConsoleQuery, kind="raw"),
    Op("POST", "/1.0/instances/{name}/console", "instance_console_post",
       "Attach to the serial console: a websocket operation (metadata.fds: \"0\" data, \"control\")",
       body=ConsolePost, kind="async"),
    Op("GET", "/1.0/instances/{name}/snapshots", "instance_snapshots_list", "List an instance's snapshots",
       result=list[Any], query=Recursion),
    Op("POST", "/1.0/instances/{name}/snapshots", "instance_snapshots_create",
       "Snapshot an instance's disks", body=SnapshotsPost, kind="async"),
    Op("GET", "/1.0/instances/{name}/snapshots/{snapshot}", "instance_snapshot_get", "Show a snapshot",
       result=InstanceSnapshot),
    Op("DELETE", "/1.0/instances/{name}/snapshots/{snapshot}", "instance_snapshot_delete",
       "Delete a snapshot", kind="async"),
)
