"""GET /1.0/instances?recursion=1 and =2 with many instances: each instance encoded once per
version of its row and profiles (instance_view.listing) and the same as built afresh; the
state listing (one libvirt stats call for all) agrees with one instance at a time."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec

from microcloudd.db.database import Database
from microcloudd.db.records import Instance, InstanceSnapshot, Profile
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.events import EventBus
from microcloudd.services import instance_launch as launch
from microcloudd.services import instance_view as view
from microcloudd.services import instances
from microcloudd.services.cloud import Cloud
from tests.fixtures.libvirt import make_spec

N = 150


def rows_cloud(db: Database, compute: LibvirtDriver | None, tmp_path: Path) -> Cloud:
    from microcloudd.operations import OperationManager

    events = EventBus(location="m1")
    return Cloud(tmp_path / "state", "m1", events, OperationManager(events, location="m1"), db=db,
                 compute=compute, settings={"storage.pool": "vms"})


def row(i: int, **over: Any) -> Instance:
    fields: dict[str, Any] = dict(
        name=f"i{i:04d}", uuid=str(uuid.uuid4()), location="m1", stage=launch.CREATED,
        status="Running" if i % 3 == 0 else "Stopped", profiles=["default", "big"] if i % 2 else ["default"],
        config={"volatile.uuid": str(uuid.uuid4()), "user.n": str(i)},
        devices={"data": {"type": "disk", "path": "/data", "pool": "vms", "source": f"v{i}"}},
        created_at="2026-11-22T00:00:00Z")
    fields.update(over)
    return Instance(**fields)


def fresh(cloud: Cloud) -> list[Any]:
    """recursion=1 built afresh, as JSON values."""
    recs = sorted(cloud.need_db().all(Instance), key=lambda r: r.name)
    return msgspec.json.decode(msgspec.json.encode(view.instances(cloud, recs)))


async def listed(cloud: Cloud, recursion: int = 1, flt: str = "") -> list[Any]:
    return msgspec.json.decode(msgspec.json.encode(await instances.list_instances(cloud, recursion, flt)))


async def test_recursion_1_follows_every_change_of_rows_and_profiles(microcloud_db: Database,
                                                                       tmp_path: Path) -> None:
    cloud, db = rows_cloud(microcloud_db, None, tmp_path), microcloud_db
    await db.insert(Profile(name="big", config={"limits.cpu": "4"}))
    for i in range(N):
        await db.insert(row(i))
    first = await listed(cloud)
    assert len(first) == N and first == fresh(cloud)
    assert first[1]["expanded_config"]["limits.cpu"] == "4"
    assert "limits.cpu" not in first[0]["expanded_config"]
    assert await listed(cloud) == first  # unchanged: the same

    await db.update(Instance, "i0001", config={**db.get(Instance, "i0001").config, "user.x": "y"})
    await db.update(Instance, "i0002", stage=launch.DELETING)
    await db.update(Profile, "big", config={"limits.cpu": "8"})
    await db.insert(Profile(name="default", devices={"root": {"type": "disk", "path": "/", "pool": "other"}}))
    await db.delete(Instance, "i0003")
    await db.insert(row(N))
    now = await listed(cloud)
    assert now == fresh(cloud) and len(now) == N
    by = {i["name"]: i for i in now}
    assert by["i0001"]["config"]["user.x"] == "y" and by["i0001"]["expanded_config"]["limits.cpu"] == "8"
    assert by["i0002"]["status"] == "Stopping" and "i0003" not in by and f"i{N:04d}" in by
    assert all(i["expanded_devices"]["root"]["pool"] == "other" for i in now)
    # a filtered listing, then the whole one again
    assert [i["name"] for i in await listed(cloud, 1, "i001")] == [f"i{i:04d}" for i in range(10, 20)]
    assert await listed(cloud) == fresh(cloud)


async def test_recursion_2_of_many_agrees_with_each_instance_alone(
        microcloud_db: Database, compute: LibvirtDriver, tmp_path: Path) -> None:
    cloud, db = rows_cloud(microcloud_db, compute, tmp_path), microcloud_db
    recs = [row(i) for i in range(40)]
    for r in recs:
        await db.insert(r)
        await compute.define(make_spec(r.name, uuid=r.uuid, memory_mib=256 + int(r.name[1:]) % 4 * 128))
        if r.status == "Running":
            await compute.start(r.name)
    await db.insert(InstanceSnapshot(instance="i0005", name="snap0"))
    await db.insert(InstanceSnapshot(instance="i0005", name="snap1"))
    await compute.freeze("i0003")
    full = {i["name"]: i for i in await listed(cloud, 2)}
    assert len(full) == 40
    for name, got in full.items():
        alone = msgspec.json.decode(msgspec.json.encode(await instances.get(cloud, name, 2)))
        got["state"]["cpu"] = alone["state"]["cpu"] = None  # CPU time moves on between the reads
        assert got == alone
        st = await compute.state(name)
        assert got["state"]["memory"]["total"] == (st.max_memory_kib * 1024 if st.state != "stopped" else 0)
    assert full["i0003"]["status"] == "Frozen" and full["i0006"]["status"] == "Running"
    assert full["i0001"]["status"] == "Stopped"
    assert [s["name"] for s in full["i0005"]["snapshots"]] == ["snap0", "snap1"]
    # an instance whose domain went away behind our back shows what the database says
    await compute.undefine("i0004")
    assert (await listed(cloud, 2, "i0004"))[0]["status"] == "Stopped"
