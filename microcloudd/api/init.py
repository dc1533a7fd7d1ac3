"""`microcloud init`: turn this machine into a working single-member cloud.

The CLI sends a request (a preseed YAML text, or `auto`); the daemon validates it into an
InitPlan (errors name the preseed line and key, before anything changes) and runs the init
state machine as an operation whose metadata reports each step as it progresses.
"""

from __future__ import annotations

import msgspec

from microcloudd.api.declare import Op


class Disk(msgspec.Struct, kw_only=True):
    """A block device (or partition) found under /sys/block, for choosing Ceph disks."""

    path: str  # /dev/vdb, /dev/vdb1
    size: int  # bytes
    model: str = ""
    type: str = "disk"  # disk, partition
    in_use: str = ""  # why it cannot be used ("mounted at /", "held by dm-0", "swap"...), or ""
    contents: str = ""  # what `wipe: true` would erase ("ext4 file system", "gpt partition table"), or ""
    read_only: bool = False


class CephExternal(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A Ceph cluster someone else runs: its ceph.conf and a keyring for `user`."""

    conf: str
    keyring: str
    user: str = "admin"


class StoragePlan(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pool: str = "remote"
    disks: list[str] = []  # whole disks or partitions for Ceph OSDs (BlueStore on the raw device)
    wipe: bool = False  # erase file systems / partition tables found on `disks` (never a mounted one)
    file_osd_size: int = 0  # bytes of a file-backed OSD under the state dir (0: none)
    ceph: CephExternal | None = None  # use this cluster instead of running our own


class NetworkPlan(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str = "default"
    uplink: str = "nat"  # "nat": the host NAT uplink; else a host interface name (a physical uplink)
    # A physical uplink's IPv4 network (LXD's ipv4.gateway, ipv4.ovn.ranges, dns.nameservers):
    uplink_gateway: str = ""  # the upstream router's address/prefix, "192.0.2.1/24"
    uplink_range: str = ""  # addresses OVN routers may take on it, "192.0.2.100-192.0.2.199"
    uplink_dns: list[str] = []  # name servers handed to instances on the networks
    subnet: str = ""  # the default network's gateway address/prefix, "10.123.45.1/24"; "" picks one


class ComputePlan(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    libvirt: str = "private"  # "private": our own libvirtd; "host": a libvirtd the host runs
    libvirt_uri: str = ""  # with "host": its URI, a local one ("" : qemu:///system)


class InitPlan(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What init will do, validated. Kept in the state dir so a re-run continues it."""

    member: str
    address: str = ""  # this member's cluster address ("" : chosen by the daemon)
    storage: StoragePlan = msgspec.field(default_factory=StoragePlan)
    network: NetworkPlan = msgspec.field(default_factory=NetworkPlan)
    compute: ComputePlan = msgspec.field(default_factory=ComputePlan)


class InitRequest(msgspec.Struct, kw_only=True):
    auto: bool = False  # no questions: the --auto plan
    preseed: str = ""  # YAML text (see doc/preseed.md)
    source: str = "preseed"  # file name shown in error messages
    dry_run: bool = False  # validate only; the operation's result carries the plan


class InitStep(msgspec.Struct, kw_only=True):
    name: str
    description: str
    state: str = "pending"  # pending, running, done, failed
    message: str = ""


class InitState(msgspec.Struct, kw_only=True):
    initialized: bool
    plan: InitPlan | None = None
    steps: list[InitStep] = []
    failed_step: str = ""
    error: str = ""
    stack: str = ""  # the running stack: stopped, starting, running, failed: <why>


OPS = (
    Op("GET", "/1.0/init", "init_get", "Init progress and this member's plan", result=InitState),
    Op("POST", "/1.0/init", "init_run", "Initialise this member (or continue an interrupted init)",
       body=InitRequest, kind="async"),
    Op("GET", "/1.0/init/disks", "init_disks", "Block devices Ceph could use", result=list[Disk]),
)
