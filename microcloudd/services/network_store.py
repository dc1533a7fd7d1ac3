"""What the networks services keep in the cluster database beside the Network, NetworkACL and
NetworkForward tables: instance ports and the uplink.

The schema has no table for ports or the uplink yet, so both live in the Config table under
keys of their own (`network-port:<uuid>` -> JSON, `network.uplink` -> JSON). A port's id is
derived from (network, instance, device), so attaching the same NIC twice names the same
OVN port and a retried attach is idempotent without reading anything first.

Also here: the lock that serialises changes to OVN with the reconciler's passes, so a pass
never sees a network half-way through being created and removes it as an orphan.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from microcloudd.db.records import Config
from microcloudd.drivers.network import codec
from microcloudd.drivers.network.base import UplinkSpec

if TYPE_CHECKING:
    from microcloudd.db.database import Database
    from microcloudd.services.cloud import Cloud

PORT_PREFIX = "network-port:"
UPLINK_KEY = "network.uplink"
_PORT_NAMESPACE = uuid.UUID("5b0c53f0-3c4e-4f7a-9a55-6d1c2a8f0e11")


@dataclass(frozen=True)
class PortRecord:
    """An instance NIC's port as it should exist in OVN."""

    id: str
    network: str
    instance: str
    device: str
    mac: str
    ipv4: str | None = None  # static address; None: OVN allocates one
    hostname: str | None = None  # DNS record in the network's domain
    acls: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.instance}/{self.device}"

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def load(cls, text: str) -> PortRecord:
        d = json.loads(text)
        d["acls"] = tuple(d.get("acls") or ())
        return cls(**d)


def port_id(network: str, instance: str, device: str) -> str:
    return str(uuid.uuid5(_PORT_NAMESPACE, f"{network}\0{instance}\0{device}"))


def ports(db: Database, *, network: str | None = None, instance: str | None = None) -> list[PortRecord]:
    out = []
    for row in db.find(Config, where=lambda c: c.key.startswith(PORT_PREFIX)):
        rec = PortRecord.load(row.value)
        if (network is None or rec.network == network) and (instance is None or rec.instance == instance):
            out.append(rec)
    return sorted(out, key=lambda p: (p.network, p.instance, p.device))


def port(db: Database, pid: str) -> PortRecord | None:
    row = db.get_or_none(Config, PORT_PREFIX + pid)
    return PortRecord.load(row.value) if row is not None else None


async def put_port(db: Database, rec: PortRecord) -> None:
    key = PORT_PREFIX + rec.id
    if db.get_or_none(Config, key) is None:
        await db.insert(Config(key=key, value=rec.dump()), may_exist=True)
    await db.update(Config, key, value=rec.dump())


async def drop_port(db: Database, pid: str) -> None:
    await db.delete(Config, PORT_PREFIX + pid, if_exists=True)


def uplink(db: Database) -> UplinkSpec | None:
    row = db.get_or_none(Config, UPLINK_KEY)
    return codec.uplink(row.value) if row is not None else None


async def put_uplink(db: Database, spec: UplinkSpec) -> None:
    value = codec.dump(spec)
    if db.get_or_none(Config, UPLINK_KEY) is None:
        await db.insert(Config(key=UPLINK_KEY, value=value), may_exist=True)
    await db.update(Config, UPLINK_KEY, value=value)


# Cloud is an unhashable dataclass: key its lock by identity, dropped with the Cloud.
_locks: dict[int, asyncio.Lock] = {}


def lock(cloud: Cloud) -> asyncio.Lock:
    key = id(cloud)
    found = _locks.get(key)
    if found is None:
        found = _locks[key] = asyncio.Lock()
        weakref.finalize(cloud, _locks.pop, key, None)
    return found
