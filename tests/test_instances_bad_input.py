"""Bad requests fail up front with a clear 4xx and leave nothing anywhere: not in libvirt,
not in RBD, not in the OVN NB database, not in our database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from microcloudd.db.records import Instance
from microcloudd.services.cloud import Cloud
from tests.fixtures.cloud import ApiServer, add_network, leftovers

NOTHING: dict[str, list[str]] = {"domains": [], "volumes": [], "ports": []}


@pytest.fixture
async def http(cloud_daemon: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(cloud_daemon.socket_path)),
                                     base_url="http://localhost") as s:
        yield s


async def post(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post("/1.0/instances", json=body) as r:
        env: dict[str, Any] = await r.json()
        assert env["type"] != "error" or r.status == env["error_code"]
        return env


def vm(name: str = "bad1", **over: Any) -> dict[str, Any]:
    return {"name": name, "source": {"type": "image", "alias": "test"}, **over}


BAD_CREATES: list[tuple[dict[str, Any], int, str]] = [
    (vm(source={"type": "image", "alias": "nope"}), 404, "Image alias 'nope' not found"),
    (vm(source={"type": "image", "fingerprint": "abcdef"}), 404, "not found"),
    (vm(source={"type": "image"}), 400, "alias or fingerprint"),
    (vm(source={"type": "copy", "alias": "test"}), 400, "Unsupported instance source"),
    (vm("-bad"), 400, "Invalid instance name"),
    (vm("a" * 60), 400, "Invalid instance name"),
    (vm("x-cidata"), 400, "reserved"),
    (vm(type="container"), 400, "virtual machines"),
    (vm(config={"limits.cpu": "0"}), 400, "at least 1"),
    (vm(config={"limits.cpu": "100000"}), 400, "more than this host's"),
    (vm(config={"limits.cpu": "two"}), 400, "whole number"),
    (vm(config={"limits.memory": "1MiB"}), 400, "below the 64MiB"),
    (vm(config={"limits.memory": "64PiB"}), 400, "more than this host's"),
    (vm(config={"limits.memory": "lots"}), 400, "invalid size"),
    (vm(config={"volatile.uuid": "x"}), 400, "set by microcloud"),
    (vm(config={"raw.qemu": "-x"}), 400, "unknown config key"),
    (vm(devices={"eth0": {"type": "nic", "network": "nonet"}}), 404, "Network 'nonet'"),
    (vm(devices={"eth0": {"type": "nic"}}), 400, "needs `network`"),
    (vm(devices={"eth0": {"type": "nic", "network": "net0", "hwaddr": "01:00:00:00:00:01"}}), 400,
     "multicast"),
    (vm(devices={"d": {"type": "disk", "source": "novol"}}), 404, "not found"),
    (vm(devices={"u": {"type": "usb"}}), 400, "type must be one of"),
    (vm(devices={"root": {"type": "disk", "path": "/", "size": "1MiB"}}), 400, "smaller than the image"),
    (vm(devices={"root": {"type": "disk", "path": "/", "pool": "elsewhere"}}), 400, "must be in pool"),
]


async def test_bad_create_is_refused_up_front_and_leaves_nothing(http: aiohttp.ClientSession,
                                                                 cloud: Cloud) -> None:
    # One cloud for every case (setting one up costs a second); each case checked on its own.
    for body, code, words in BAD_CREATES:
        env = await post(http, body)
        assert env["type"] == "error" and env["error_code"] == code, (body, env)
        assert words in env["error"], (body, env["error"])
        assert cloud.db is not None and cloud.db.all(Instance) == []
        assert cloud.operations.list() == []  # refused before any operation started
    assert await leftovers(cloud) == NOTHING


async def test_bad_json_and_duplicates(http: aiohttp.ClientSession, cloud: Cloud) -> None:
    async with http.post("/1.0/instances", data=b"{not json") as r:
        assert r.status == 400
    env = await post(http, vm("dup1"))
    assert env["type"] == "async"
    async with http.get(f"/1.0/operations/{env['metadata']['id']}/wait") as r:
        assert (await r.json())["metadata"]["status"] == "Success"
    before = await leftovers(cloud)
    env = await post(http, vm("dup1"))
    assert env["error_code"] == 409 and env["error"] == "Instance 'dup1' already exists"
    assert await leftovers(cloud) == before


async def test_failure_midway_is_reverted(http: aiohttp.ClientSession, cloud: Cloud) -> None:
    """A launch whose domain step fails (someone else's libvirt domain has the name) removes
    the clone, the seed, the port and the row it had made."""
    from microcloudd.drivers.compute.libvirt import LibvirtDriver
    from tests.fixtures.libvirt import TEST_URI, make_spec

    other = await LibvirtDriver.connect(TEST_URI, owner="someone-else")
    try:
        await other.define(make_spec("clash1"))
        env = await post(http, vm("clash1"))
        async with http.get(f"/1.0/operations/{env['metadata']['id']}/wait") as r:
            op = (await r.json())["metadata"]
        assert op["status"] == "Failure" and "is not ours" in op["err"], op
        assert cloud.db is not None and cloud.db.all(Instance) == []
        assert await leftovers(cloud) == NOTHING
        assert await other.exists("clash1")  # theirs is untouched
    finally:
        await other.undefine("clash1", force=True)
        await other.close()


async def test_wrong_state_requests(http: aiohttp.ClientSession, cloud: Cloud) -> None:
    env = await post(http, vm("st1"))
    async with http.get(f"/1.0/operations/{env['metadata']['id']}/wait") as r:
        assert (await r.json())["metadata"]["status"] == "Success"
    for action, words in (("stop", "already stopped"), ("freeze", "not running"), ("unfreeze", "not frozen"),
                          ("restart", "already stopped"), ("dance", "Unknown action")):
        async with http.put("/1.0/instances/st1/state", json={"action": action}) as r:
            body = await r.json()
            assert r.status in (400, 409) and words in body["error"], body
    async with http.put("/1.0/instances/nope/state", json={"action": "start"}) as r:
        assert r.status == 404
    async with http.delete("/1.0/instances/nope") as r:
        assert r.status == 404 and (await r.json())["error"] == "Instance not found"
    async with http.patch("/1.0/instances/st1", json={"config": {"limits.cpu": "0"}}) as r:
        assert r.status == 400
    async with http.patch("/1.0/instances/st1", json={"devices": {"root": {"type": "disk", "path": "/",
                                                                           "pool": "other"}}}) as r:
        assert r.status == 400
    async with http.post("/1.0/instances/st1/snapshots", json={"name": "bad name"}) as r:
        assert r.status == 400
    async with http.put("/1.0/instances/st1", json={"restore": "nosnap"}) as r:
        assert r.status == 404


async def test_a_launch_on_a_full_network_fails_and_leaves_nothing(http: aiohttp.ClientSession,
                                                                   cloud: Cloud) -> None:
    """A /29 has addresses for 5 NICs: the 6th launch fails (it used to succeed with a NIC OVN
    could give no address) and leaves nothing of itself."""
    assert cloud.db is not None and cloud.network is not None
    await add_network(cloud.db, cloud.network, "tiny", "10.67.0.1/29")
    nic = {"eth0": {"type": "nic", "network": "tiny"}}
    for i in range(5):
        env = await post(http, vm(f"full{i}", devices=nic))
        async with http.get(f"/1.0/operations/{env['metadata']['id']}/wait") as r:
            assert (await r.json())["metadata"]["status"] == "Success"
    before = await leftovers(cloud)
    env = await post(http, vm("full5", devices=nic))
    async with http.get(f"/1.0/operations/{env['metadata']['id']}/wait") as r:
        op = (await r.json())["metadata"]
    assert op["status"] == "Failure" and "network tiny has no free IPv4 address" in op["err"], op
    assert await leftovers(cloud) == before
    assert "full5" not in {i.name for i in cloud.db.all(Instance)}
