"""Pools through the RBD driver on real Ceph: create (rbd application, owner tag, replicas
following the OSD host count), quota, info, idempotency, refusals."""

from __future__ import annotations

import json
import uuid

import pytest

from microcloudd.api.errors import AlreadyExists, Conflict, InUse, InvalidArgument, NotFound
from microcloudd.drivers.storage.rbd import RBDDriver
from microcloudd.drivers.storage.rbd_pools import replicas_for
from tests.fixtures.ceph import CephCluster

MiB = 1 << 20


def test_replicas_follow_host_count() -> None:
    assert [replicas_for(n) for n in (0, 1, 2, 3, 7)] == [(1, 1), (1, 1), (2, 1), (3, 2), (3, 2)]


async def test_pool_lifecycle(rbd_driver: RBDDriver, ceph: CephCluster) -> None:
    name = "p-" + uuid.uuid4().hex[:8]
    try:
        info = await rbd_driver.create_pool(name, quota_bytes=64 * MiB)
        assert (info.name, info.driver, info.replicas, info.owner) == (name, "ceph", 1, "test-owner")
        assert info.quota_bytes == 64 * MiB and info.total_bytes > 0
        apps = json.loads(ceph.command("osd pool application get", pool=name, format="json"))
        assert apps["rbd"]["microcloud.owner"] == "test-owner"
        assert name in await rbd_driver.list_pools()
        assert (await rbd_driver.create_pool(name, may_exist=True)).name == name
        with pytest.raises(AlreadyExists, match=f"Storage pool '{name}' already exists"):
            await rbd_driver.create_pool(name)
        await rbd_driver.set_pool_quota(name, max_bytes=0, max_objects=100)
        info = await rbd_driver.pool_info(name)
        assert (info.quota_bytes, info.quota_objects) == (0, 100)

        await rbd_driver.create_volume(name, "v", MiB)
        with pytest.raises(InUse, match=r"still holds 1 volume\(s\)"):
            await rbd_driver.delete_pool(name)
        await rbd_driver.delete_volume(name, "v")
        await rbd_driver.delete_pool(name)
        await rbd_driver.delete_pool(name, if_exists=True)
        with pytest.raises(NotFound, match=f"Storage pool '{name}' not found"):
            await rbd_driver.pool_info(name)
    finally:
        ceph.delete_pool(name)


async def test_pool_bad_input(rbd_driver: RBDDriver, rbd_pool: str, ceph: CephCluster) -> None:
    with pytest.raises(InvalidArgument, match="Invalid storage pool name 'bad_pool'"):
        await rbd_driver.create_pool("bad_pool")
    assert "bad_pool" not in json.loads(ceph.command("osd pool ls", format="json"))
    with pytest.raises(NotFound, match="Storage pool 'nope' not found"):
        await rbd_driver.delete_pool("nope")
    with pytest.raises(NotFound):
        await rbd_driver.set_pool_quota("nope", max_bytes=1)
    # a pool someone else made is never deleted by us
    with pytest.raises(Conflict, match="was not created by this microcloud"):
        await rbd_driver.delete_pool(rbd_pool)
    assert rbd_pool in json.loads(ceph.command("osd pool ls", format="json"))
