"""The typed database layer against a real ovsdb-server: CRUD, uniqueness, references,
transactions, idempotent retries."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from microcloudd.api.errors import AlreadyExists, Conflict, InUse, InvalidArgument, NotFound
from microcloudd.db.database import Database
from microcloudd.db.records import (
    ALL_RECORDS,
    Config,
    Image,
    ImageAlias,
    Instance,
    InstanceSnapshot,
    Member,
    Network,
    NetworkACL,
    NetworkForward,
    Operation,
    Profile,
    Record,
    StoragePool,
    Token,
    Volume,
    VolumeSnapshot,
)
from microcloudd.db.schema import SCHEMA_PATH, build_schema, shipped_version

# One sample per table plus a change to apply to it; parents are created first.
PARENTS: list[Record] = [
    Instance(name="parent-vm"),
    Image(fingerprint="f" * 64),
    Volume(pool="default", name="parent-vol"),
    Network(name="parent-net"),
]
SAMPLES: list[tuple[Record, dict[str, Any]]] = [
    (Config(key="core.https_address", value=":9443"), {"value": "10.0.0.1:9443"}),
    (Member(name="m1", address="10.0.0.1:9443", fingerprint="ab", roles=["database-voter"],
            heartbeat=1.5), {"status": "Offline", "roles": ["database-voter", "ovn-central"]}),
    (Token(name="m2", secret_hash="sha256:00", expires_at=1e9), {"expires_at": 2e9}),
    (Instance(name="vm1", uuid="8f0c", config={"limits.cpu": "2"},
              devices={"root": {"type": "disk", "pool": "default"}}, profiles=["z", "default"],
              image="f" * 64, location="m1", created_at="2024-01-01T00:00:00Z", stage="creating"),
     {"stage": "created", "status": "Running", "devices": {}}),
    (InstanceSnapshot(instance="parent-vm", name="snap0", devices={"a": {"b": "c"}}), {"description": "x"}),
    (Image(fingerprint="a" * 64, filename="deb.qcow2", size=1 << 33, format="qcow2",
           properties={"os": "debian"}), {"public": True}),
    (ImageAlias(name="debian", image="f" * 64), {"description": "the default"}),
    (StoragePool(name="default", config={"ceph.osd.pool_name": "mc"}), {"status": "Errored"}),
    (Volume(pool="default", name="data", size=10 << 30, used_by=["vm1"]), {"size": 20 << 30, "used_by": []}),
    (VolumeSnapshot(volume=("default", "custom", "parent-vol"), name="s1"), {"description": "y"}),
    (Network(name="net1", config={"ipv4.address": "10.1.0.1/24"}), {"status": "Pending"}),
    (NetworkACL(name="web", ingress=[{"action": "allow", "destination_port": "80"}]),
     {"egress": [{"action": "drop"}]}),
    (NetworkForward(network="parent-net", listen_address="192.0.2.1",
                    ports=[{"protocol": "tcp", "listen_port": "80", "target_address": "10.1.0.5"}]),
     {"description": "web"}),
    (Profile(name="default", devices={"eth0": {"type": "nic", "network": "net1"}}), {"config": {"a": "b"}}),
    (Operation(id="0b1c", class_="task", resources={"instances": ["/1.0/instances/vm1"]},
               metadata={"progress": {"percent": 5}}), {"status": "Success", "status_code": 200}),
]


async def _with_parents(db: Database) -> None:
    async with db.transaction() as txn:
        for p in PARENTS:
            txn.insert(p)


def test_schema_file_matches_records() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == build_schema(shipped_version())
    assert {t for t in build_schema("1.0.0")["tables"]} == {r.__table__ for r in ALL_RECORDS}
    assert {type(s).__table__ for s, _ in SAMPLES} == {r.__table__ for r in ALL_RECORDS}


async def test_crud_every_table(microcloud_db: Database) -> None:
    db = microcloud_db
    await _with_parents(db)
    for record, changes in SAMPLES:
        cls = type(record)
        stored = await db.insert(record)
        assert stored == record, cls
        assert db.get(cls, record.row_key()) == record
        assert record in db.all(cls)
        updated = await db.update(cls, record.row_key(), **changes)
        assert updated == msgspec.structs.replace(record, **changes)
        assert db.get(cls, record.row_key()) == updated
        with pytest.raises(AlreadyExists):
            await db.insert(record)
        assert await db.insert(record, may_exist=True) == updated  # may_exist: keeps the row
        await db.delete(cls, record.row_key())
        with pytest.raises(NotFound):
            db.get(cls, record.row_key())
        with pytest.raises(NotFound):
            await db.delete(cls, record.row_key())
        await db.delete(cls, record.row_key(), if_exists=True)
        with pytest.raises(NotFound):
            await db.update(cls, record.row_key(), description="gone")


async def test_find_and_ordered_json(microcloud_db: Database) -> None:
    db = microcloud_db
    async with db.transaction() as txn:
        for i in range(5):
            txn.insert(Instance(name=f"vm{i}", location="m1" if i % 2 else "m2", profiles=["b", "a"]))
    assert sorted(i.name for i in db.find(Instance, location="m1")) == ["vm1", "vm3"]
    assert [i.name for i in db.find(Instance, where=lambda i: i.name.endswith("4"))] == ["vm4"]
    assert db.get(Instance, "vm0").profiles == ["b", "a"]  # JSON columns keep order


async def test_replica_records_share_repeated_strings(microcloud_db: Database) -> None:
    """Rows decoded from the server share their short repeated strings (config keys, statuses,
    device values): 500 instances do not hold 500 copies of each (bench.instances_daemon)."""
    db = microcloud_db
    fp, long_value = "e" * 64, "x" * 200
    async with db.transaction() as txn:
        for i in range(2):
            txn.insert(Instance(name=f"vm{i}", image=fp, status="Stopped", location="m1",
                                config={"volatile.eth0.hwaddr": f"00:16:3e:00:00:0{i}",
                                        "user.doc": long_value},
                                devices={"eth0": {"type": "nic", "network": "default"}}))
    a, b = db.get(Instance, "vm0"), db.get(Instance, "vm1")
    assert a.image is b.image and a.location is b.location and a.status is b.status
    ka, kb = sorted(a.config), sorted(b.config)
    assert all(x is y for x, y in zip(ka, kb, strict=True))
    assert a.devices["eth0"]["network"] is b.devices["eth0"]["network"]
    assert a.config["volatile.eth0.hwaddr"] != b.config["volatile.eth0.hwaddr"]  # values as they were
    assert a.config["user.doc"] == long_value
    await db.update(Instance, "vm1", config={**b.config, "limits.cpu": "2"})
    c = db.get(Instance, "vm1")
    key = next(k for k in c.config if k == "user.doc")
    assert c.config["limits.cpu"] == "2" and key is next(k for k in a.config if k == "user.doc")


async def test_unique_index_beyond_key(microcloud_db: Database) -> None:
    db = microcloud_db
    await db.insert(Member(name="m1", address="10.0.0.1:9443"))
    with pytest.raises(AlreadyExists, match="address"):
        await db.insert(Member(name="m2", address="10.0.0.1:9443"))
    assert [m.name for m in db.all(Member)] == ["m1"]


async def test_bad_input_leaves_nothing(microcloud_db: Database) -> None:
    db = microcloud_db
    with pytest.raises(InvalidArgument):
        await db.insert(Instance(name="vm1", config={"a": 1}))  # type: ignore[dict-item]
    assert db.all(Instance) == []
    await db.insert(Instance(name="vm0"))
    with pytest.raises(InvalidArgument, match="no field"):
        await db.update(Instance, "vm0", colour="red")
    with pytest.raises(InvalidArgument):
        await db.update(Instance, "vm0", config="not a map")
    assert db.get(Instance, "vm0") == Instance(name="vm0")
    await db.delete(Instance, "vm0")
    # A transaction whose second change fails commits nothing.
    with pytest.raises(NotFound):
        async with db.transaction() as txn:
            txn.insert(Instance(name="vm2"))
            txn.insert(ImageAlias(name="nope", image="missing"))
    assert db.get_or_none(Instance, "vm2") is None
    with pytest.raises(AlreadyExists):
        async with db.transaction() as txn:
            txn.insert(Instance(name="vm3"))
            txn.insert(Instance(name="vm3", description="twice"))
    assert db.all(Instance) == []
    # An exception inside the block commits nothing either.
    with pytest.raises(RuntimeError):
        async with db.transaction() as txn:
            txn.insert(Instance(name="vm4"))
            raise RuntimeError("changed my mind")
    assert db.all(Instance) == []


async def test_references(microcloud_db: Database) -> None:
    db = microcloud_db
    fp = "c" * 64
    with pytest.raises(NotFound, match="Image"):
        await db.insert(ImageAlias(name="deb", image=fp))
    async with db.transaction() as txn:  # parent and child in one transaction
        txn.insert(Image(fingerprint=fp))
        txn.insert(ImageAlias(name="deb", image=fp))
    assert db.get(ImageAlias, "deb").image == fp
    with pytest.raises(InUse, match="ImageAlias"):
        await db.delete(Image, fp)
    assert db.get(Image, fp).fingerprint == fp
    async with db.transaction() as txn:  # child then parent in one transaction
        txn.delete(ImageAlias, "deb")
        txn.delete(Image, fp)
    assert db.all(Image) == [] and db.all(ImageAlias) == []

    await db.insert(Volume(pool="p", name="v"))
    snap = await db.insert(VolumeSnapshot(volume=("p", "custom", "v"), name="s"))
    assert db.get(VolumeSnapshot, (("p", "custom", "v"), "s")) == snap
    with pytest.raises(InUse):
        await db.delete(Volume, ("p", "custom", "v"))
    # Re-pointing a reference: the child follows a renamed parent.
    await db.update(Volume, ("p", "custom", "v"), name="v2")
    assert db.get(VolumeSnapshot, (("p", "custom", "v2"), "s")).volume == ("p", "custom", "v2")


async def test_compare_and_set(microcloud_db: Database) -> None:
    db = microcloud_db
    await db.insert(Instance(name="vm1", stage="creating"))
    await db.update(Instance, "vm1", expect={"stage": "creating"}, stage="created")
    with pytest.raises(Conflict, match="stage"):
        await db.update(Instance, "vm1", expect={"stage": "creating"}, stage="deleting")
    assert db.get(Instance, "vm1").stage == "created"


async def test_ambiguous_retry_neither_duplicates_nor_fails(microcloud_db: Database) -> None:
    """Re-committing the very same logical write (what a retry after a lost reply does)."""
    db = microcloud_db
    txn = db.transaction()
    txn.insert(Instance(name="vm1"))
    txn.update(Instance, "vm1", description="set")
    await txn.commit()
    await txn.commit()  # as if the first reply had been lost
    assert [i.name for i in db.all(Instance)] == ["vm1"]
    dtxn = db.transaction()
    dtxn.delete(Instance, "vm1")
    await dtxn.commit()
    for c in dtxn.commands:
        c.retrying = True  # type: ignore[attr-defined]
    await dtxn.commit()  # the delete landed already: not an error
    # A different logical insert of the same name is still refused.
    await db.insert(Instance(name="vm1"))
    with pytest.raises(AlreadyExists):
        await db.insert(Instance(name="vm1"))


async def test_concurrent_inserts_one_winner(microcloud_db: Database) -> None:
    db = microcloud_db
    results = await asyncio.gather(*(db.insert(Instance(name="race", description=str(i))) for i in range(8)),
                                   return_exceptions=True)
    assert sum(isinstance(r, Instance) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, Instance))
    assert len(db.all(Instance)) == 1


async def test_change_notifications(microcloud_db: Database) -> None:
    db = microcloud_db
    sub = db.subscribe(Instance)
    other = db.subscribe(Network)
    await db.insert(Instance(name="vm1"))
    await db.update(Instance, "vm1", status="Running")
    await db.delete(Instance, "vm1")
    ins, upd, dele = (await sub.get(5), await sub.get(5), await sub.get(5))
    assert (ins.op, ins.old, ins.new) == ("insert", None, Instance(name="vm1"))
    assert upd.op == "update" and upd.old and upd.new
    assert (upd.old.status, upd.new.status) == ("Stopped", "Running")
    assert (dele.op, dele.new, dele.record.name) == ("delete", None, "vm1")
    with pytest.raises(TimeoutError):
        await other.get(0.2)
    sub.close()
    assert [c async for c in sub] == []


async def test_changes_from_another_client(microcloud_db: Database, microcloud_db_server: Any) -> None:
    """A write by another connection reaches this one's replica and subscribers."""
    other = await Database.connect(microcloud_db_server.remote)
    try:
        async with microcloud_db.subscribe(Network) as sub:
            await other.insert(Network(name="n1"))
            change = await sub.get(5)
        assert change.op == "insert" and microcloud_db.get(Network, "n1").name == "n1"
    finally:
        await other.close()
