"""Instances as the API shows them, built from the database replica (no backend call) and, for
state, one libvirt stats call (plus one info read per running domain: drivers/compute/libvirt)
and one OVN port listing per network, whatever the count."""

from __future__ import annotations

import platform
import weakref
from typing import Any

import msgspec

from microcloudd.api import instances as api
from microcloudd.api.errors import MicrocloudError
from microcloudd.db.database import Database
from microcloudd.db.records import Instance, InstanceSnapshot, Profile
from microcloudd.drivers.compute.types import DomainStatus, PowerState
from microcloudd.drivers.network.base import PortInfo
from microcloudd.services import instance_config as ic
from microcloudd.services import instance_launch as launch
from microcloudd.services import instance_spec as isp
from microcloudd.services import profile_expand as pe
from microcloudd.services.cloud import Cloud

STATUS_CODES = {"Running": 103, "Stopped": 102, "Frozen": 110, "Error": 112, "Pending": 105,
                "Stopping": 107, "Starting": 106}
_POWER = {PowerState.RUNNING: "Running", PowerState.STOPPED: "Stopped", PowerState.FROZEN: "Frozen",
          PowerState.STOPPING: "Stopping", PowerState.ERROR: "Error"}
ARCH = platform.machine()


def url(name: str) -> str:
    return f"/1.0/instances/{name}"


def recorded_status(rec: Instance) -> str:
    """What the database says, kept current by our actions and libvirt's events."""
    if rec.stage == launch.CREATING:
        return "Pending"
    if rec.stage == launch.DELETING:
        return "Stopping"
    return rec.status if rec.status in STATUS_CODES else "Error"


def user_config(rec: Instance) -> dict[str, str]:
    return dict(rec.config)


def instance(rec: Instance, expanded: Instance, status: str | None = None,
             cls: type[api.Instance] = api.Instance, **extra: Any) -> Any:
    """The API object of row `rec`; `expanded` is it with its profiles applied (profile_expand)."""
    status = status or recorded_status(rec)
    return cls(
        name=rec.name, type=rec.type, status=status, status_code=STATUS_CODES[status], architecture=ARCH,
        config=rec.config, devices=rec.devices, expanded_config=expanded.config,
        expanded_devices=expanded.devices,
        profiles=list(rec.profiles), description=rec.description, created_at=rec.created_at,
        location=rec.location or "none", **extra,
    )


def snapshot(s: InstanceSnapshot) -> api.InstanceSnapshot:
    return api.InstanceSnapshot(name=s.name, created_at=s.created_at, config=s.config, devices=s.devices,
                                expanded_config=s.config, expanded_devices=s.devices,
                                description=s.description,
                                stateful=s.stateful, architecture=ARCH)


def state(rec: Instance, dom: DomainStatus | None, ports: dict[str, PortInfo],
          virt: str) -> api.InstanceState:
    """`rec` expanded: its NICs include its profiles' ones."""
    status = _POWER[dom.state] if dom is not None and rec.stage == launch.CREATED else recorded_status(rec)
    net: dict[str, api.NetworkState] = {}
    for dev in ic.nic_devices(rec.devices):
        port = ports.get(rec.config.get(f"volatile.{dev}.port", ""))
        addrs = []
        if port is not None and port.ipv4:
            addrs.append(api.NetworkAddress(family="inet", address=port.ipv4, netmask=""))
        if port is not None and port.ipv6:
            addrs.append(api.NetworkAddress(family="inet6", address=port.ipv6, netmask=""))
        net[dev] = api.NetworkState(addresses=addrs, hwaddr=isp.mac(rec, dev),
                                    state="up" if status == "Running" else "down")
    mem = api.MemoryState()
    cpu = api.CpuState()
    if dom is not None and status in ("Running", "Frozen"):
        mem = api.MemoryState(usage=dom.memory_kib * 1024, total=dom.max_memory_kib * 1024)
        cpu = api.CpuState(usage=dom.cpu_time_ns)
    return api.InstanceState(status=status, status_code=STATUS_CODES[status], cpu=cpu, memory=mem,
                             network=net or None, virtualization=dom.virt_type if dom else virt)


# Up to this many instances are looked up by name (one round trip each, plus one stats call);
# more are read with one stats call over every domain of the connection.
BY_NAME = 16


async def domains(cloud: Cloud, names: list[str] | None = None) -> dict[str, DomainStatus]:
    """Our domains on this member (those of `names`, if given), by instance name."""
    if cloud.compute is None:
        return {}
    wanted = names if names is not None and len(names) <= BY_NAME else None
    return {d.instance or d.name: d for d in await cloud.compute.list_owned(wanted)}


async def ports(cloud: Cloud, recs: list[Instance]) -> dict[str, PortInfo]:
    """The OVN ports of these (expanded) instances, by port id: one NB read per network in use."""
    if cloud.network is None:
        return {}
    networks = {d["network"] for r in recs for d in ic.nic_devices(r.devices).values()}
    out: dict[str, PortInfo] = {}
    for net in sorted(networks):
        try:
            out.update({p.id: p for p in await cloud.network.list_ports(net)})
        except MicrocloudError:
            continue  # a network that vanished shows no addresses rather than failing the listing
    return out


def expand_all(cloud: Cloud, recs: list[Instance]) -> list[Instance]:
    """Each row expanded, the profiles read once for all of them."""
    profiles = pe.all_profiles(cloud)
    return [pe.expanded(cloud, r, profiles) for r in recs]


def instances(cloud: Cloud, recs: list[Instance], cls: type[api.Instance] = api.Instance) -> list[Any]:
    return [instance(r, x, cls=cls) for r, x in zip(recs, expand_all(cloud, recs), strict=True)]


# recursion=1 per database: instance name -> (row, its profiles, the instance's JSON). An API
# instance is a function of its row and profiles alone (the status included), and records are
# immutable and replaced on every change, so a cached entry is valid while both compare equal.
_Encoded = tuple[Instance, tuple[Profile, ...], msgspec.Raw]
_listed: weakref.WeakKeyDictionary[Database, dict[str, _Encoded]] = weakref.WeakKeyDictionary()
_encode = msgspec.json.Encoder().encode


def listing(cloud: Cloud, recs: list[Instance]) -> list[msgspec.Raw]:
    """`instances(cloud, recs)` as JSON: each instance expanded and encoded once per version of its
    row and profiles (listing 500 unchanged instances then costs a dictionary walk)."""
    db = cloud.need_db()
    profiles = pe.all_profiles(cloud)
    before = _listed.get(db, {})
    now: dict[str, _Encoded] = {}
    for rec in recs:
        applied = tuple(profiles[n] for n in rec.profiles if n in profiles)
        hit = before.get(rec.name)
        if hit is None or not (hit[0] is rec or hit[0] == rec) or hit[1] != applied:
            hit = (rec, applied, msgspec.Raw(_encode(instance(rec, pe.expanded(cloud, rec, profiles)))))
        now[rec.name] = hit
    _listed[db] = now  # what this listing showed: deleted instances drop out
    return [now[r.name][2] for r in recs]


async def full(cloud: Cloud, recs: list[Instance]) -> list[api.InstanceFull]:
    expanded = expand_all(cloud, recs)
    doms = await domains(cloud, [r.name for r in recs])
    port_map = await ports(cloud, expanded)
    virt = cloud.compute.virt_type if cloud.compute is not None else ""
    snaps: dict[str, list[api.InstanceSnapshot]] = {r.name: [] for r in recs}
    for s in cloud.need_db().all(InstanceSnapshot):  # one pass, not one per instance
        if s.instance in snaps:
            snaps[s.instance].append(snapshot(s))
    out = []
    for rec, x in zip(recs, expanded, strict=True):
        st = state(x, doms.get(rec.name), port_map, virt)
        out.append(instance(rec, x, st.status, api.InstanceFull, state=st, snapshots=snaps[rec.name],
                            backups=[]))
    return out


def matches(rec: Instance, flt: str) -> bool:
    """LXD's `filter=`: `key eq value` terms joined by `and` (name, status, type, location,
    config keys), or a bare name prefix."""
    flt = flt.strip()
    if not flt:
        return True
    terms = [t.strip() for t in flt.split(" and ")]
    for term in terms:
        parts = term.split()
        if len(parts) == 1:
            if not rec.name.startswith(parts[0]):
                return False
            continue
        if len(parts) != 3 or parts[1] not in ("eq", "ne"):
            return False
        key, op, value = parts
        actual = {"name": rec.name, "status": recorded_status(rec), "type": rec.type,
                  "location": rec.location}.get(key, rec.config.get(key.removeprefix("config.")))
        if (str(actual).lower() == value.lower()) != (op == "eq"):
            return False
    return True
