"""Instances through the REST API on real backends (test:/// libvirt, real Ceph, real OVN NB,
real database): launch, the domain XML it defines, state actions, update, snapshots, delete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from microcloudd.db.records import Instance
from microcloudd.services.cloud import Cloud
from tests.fixtures.cloud import NETWORK, ApiServer, domain_xml, leftovers


class Api:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.s = session

    async def call(self, method: str, path: str, body: Any = None, wait: bool = True) -> dict[str, Any]:
        async with self.s.request(method, path, json=body) as r:
            env: dict[str, Any] = await r.json()
        if env["type"] == "async" and wait:
            async with self.s.get(f"/1.0/operations/{env['metadata']['id']}/wait?timeout=60") as r:
                env = await r.json()
            op = env["metadata"]
            assert op["status"] == "Success", op["err"]
        return env

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        env = await self.call(method, path, body)
        assert env["type"] in ("sync", "async"), env
        return env["metadata"]


@pytest.fixture
async def api(cloud_daemon: ApiServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(cloud_daemon.socket_path)),
                                     base_url="http://localhost") as s:
        yield Api(s)


async def test_launch_defines_rbd_disk_ovs_port_and_seed(api: Api, cloud: Cloud) -> None:
    sub = cloud.events.subscribe(["lifecycle"])
    await api.ok("POST", "/1.0/instances", {"name": "web1", "source": {"type": "image", "alias": "test"},
                                            "config": {"limits.cpu": "1", "limits.memory": "256MiB"},
                                            "start": True})
    inst = await api.ok("GET", "/1.0/instances/web1")
    assert inst["status"] == "Running" and inst["type"] == "virtual-machine" and inst["location"] == "m1"
    # As LXD: root and eth0 come from the default profile; the instance's own devices are none.
    assert inst["devices"] == {} and inst["profiles"] == ["default"]
    assert inst["expanded_devices"]["root"] == {"type": "disk", "path": "/",
                                                "pool": cloud.settings["storage.pool"]}
    assert inst["expanded_devices"]["eth0"]["network"] == NETWORK
    port_id = inst["config"]["volatile.eth0.port"]

    root = domain_xml("web1")
    assert root.findtext("vcpu") == "1"
    disks = root.findall("devices/disk")
    rbd = {d.find("source").get("name"): d for d in disks}  # type: ignore[union-attr]
    pool = cloud.settings["storage.pool"]
    assert set(rbd) == {f"{pool}/vm_web1", f"{pool}/vm_web1-cidata"}
    assert rbd[f"{pool}/vm_web1-cidata"].get("device") == "cdrom"
    src = rbd[f"{pool}/vm_web1"].find("source")
    assert src is not None and src.get("protocol") == "rbd"
    auth = rbd[f"{pool}/vm_web1"].find("auth/secret")
    assert auth is not None and auth.get("uuid") == cloud.settings["ceph.secret_uuid"]
    nic = root.find("devices/interface")
    assert nic is not None and nic.get("type") == "bridge"
    vp = nic.find("virtualport/parameters")
    assert vp is not None and vp.get("interfaceid") == port_id
    mac = nic.find("mac")
    assert mac is not None and mac.get("address") == inst["config"]["volatile.eth0.hwaddr"]

    assert cloud.network is not None
    ports = await cloud.network.list_ports(NETWORK)
    assert [(p.id, p.name, p.mac) for p in ports] == [(port_id, "web1/eth0",
                                                       inst["config"]["volatile.eth0.hwaddr"])]
    assert cloud.storage is not None
    root_vol = await cloud.storage.volume_info(pool, "web1", type="virtual-machine")  # type: ignore[arg-type]
    assert root_vol.parent.endswith("@mc_base")

    actions = []
    async with asyncio.timeout(5):
        while "instance-created" not in actions or "instance-started" not in actions:
            actions.append((await sub.queue.get()).metadata["action"])  # type: ignore[union-attr]
    sub.close()


async def test_state_actions_update_snapshots_and_delete(api: Api, cloud: Cloud) -> None:
    await api.ok("POST", "/1.0/instances", {"name": "vm2", "source": {"alias": "test"}})
    assert (await api.ok("GET", "/1.0/instances/vm2/state"))["status"] == "Stopped"
    await api.ok("PUT", "/1.0/instances/vm2/state", {"action": "start"})
    st = await api.ok("GET", "/1.0/instances/vm2/state")
    assert st["status"] == "Running" and st["status_code"] == 103 and st["memory"]["usage"] > 0
    for action, want in (("freeze", "Frozen"), ("unfreeze", "Running"), ("restart", "Running")):
        await api.ok("PUT", "/1.0/instances/vm2/state", {"action": action})
        assert (await api.ok("GET", "/1.0/instances/vm2/state"))["status"] == want
    env = await api.call("PUT", "/1.0/instances/vm2/state", {"action": "start"})
    assert env["error_code"] == 409 and "already running" in env["error"]

    # deleting a running instance is refused (LXD's behaviour); nothing changes
    env = await api.call("DELETE", "/1.0/instances/vm2")
    assert env["error_code"] == 409 and env["error"] == "Instance is running"
    assert (await api.ok("GET", "/1.0/instances/vm2/state"))["status"] == "Running"

    # limits: live where libvirt can, always at next start
    await api.ok("PATCH", "/1.0/instances/vm2", {"config": {"limits.memory": "512MiB"}})
    inst = await api.ok("GET", "/1.0/instances/vm2")
    assert inst["config"]["limits.memory"] == "512MiB"
    assert domain_xml("vm2").find("currentMemory").text == str(512 * 1024)  # type: ignore[union-attr]

    await api.ok("PUT", "/1.0/instances/vm2/state", {"action": "stop", "force": True})
    assert (await api.ok("GET", "/1.0/instances/vm2"))["status"] == "Stopped"

    # snapshots
    await api.ok("POST", "/1.0/instances/vm2/snapshots", {"name": "s1"})
    await api.ok("POST", "/1.0/instances/vm2/snapshots", {})
    assert await api.ok("GET", "/1.0/instances/vm2/snapshots") == [
        "/1.0/instances/vm2/snapshots/s1", "/1.0/instances/vm2/snapshots/snap0"]
    assert cloud.storage is not None
    pool = cloud.settings["storage.pool"]
    snaps = await cloud.storage.list_snapshots(pool, "vm2", type="virtual-machine")  # type: ignore[arg-type]
    assert {s.name for s in snaps} >= {"s1", "snap0"}
    await api.ok("PATCH", "/1.0/instances/vm2", {"config": {"limits.memory": "1GiB"}})
    await api.ok("PUT", "/1.0/instances/vm2", {"restore": "s1"})
    assert (await api.ok("GET", "/1.0/instances/vm2"))["config"]["limits.memory"] == "512MiB"
    await api.ok("DELETE", "/1.0/instances/vm2/snapshots/snap0")
    assert await api.ok("GET", "/1.0/instances/vm2/snapshots") == ["/1.0/instances/vm2/snapshots/s1"]
    full = await api.ok("GET", "/1.0/instances?recursion=2")
    assert [s["name"] for s in full[0]["snapshots"]] == ["s1"]

    await api.ok("DELETE", "/1.0/instances/vm2")
    assert (await api.call("GET", "/1.0/instances/vm2"))["error_code"] == 404
    assert await leftovers(cloud) == {"domains": [], "volumes": [], "ports": []}
    assert cloud.db is not None and cloud.db.all(Instance) == []


async def test_list_recursion_and_filter(api: Api, cloud: Cloud) -> None:
    for name in ("a1", "a2", "b1"):
        await api.ok("POST", "/1.0/instances", {"name": name, "source": {"alias": "test"},
                                                "start": name == "a2"})
    assert await api.ok("GET", "/1.0/instances") == ["/1.0/instances/a1", "/1.0/instances/a2",
                                                     "/1.0/instances/b1"]
    one = await api.ok("GET", "/1.0/instances?recursion=1")
    assert [(i["name"], i["status"]) for i in one] == [("a1", "Stopped"), ("a2", "Running"), ("b1",
                                                                                              "Stopped")]
    assert "state" not in one[0]
    two = await api.ok("GET", "/1.0/instances?recursion=2")
    assert [i["state"]["status"] for i in two] == ["Stopped", "Running", "Stopped"]
    assert two[1]["state"]["network"]["eth0"]["hwaddr"] == two[1]["config"]["volatile.eth0.hwaddr"]
    assert [i["name"] for i in await api.ok("GET",
                                            "/1.0/instances?recursion=1&filter=status eq Running")] == ["a2"]
    assert await api.ok("GET", "/1.0/instances?filter=a") == ["/1.0/instances/a1", "/1.0/instances/a2"]


async def test_nic_and_volume_devices_added_and_removed(api: Api, cloud: Cloud) -> None:
    assert cloud.storage is not None and cloud.network is not None
    pool = cloud.settings["storage.pool"]
    await cloud.storage.create_volume(pool, "data1", 16 << 20)
    from tests.fixtures.cloud import add_network

    assert cloud.db is not None
    await add_network(cloud.db, cloud.network, "net1", "10.43.0.1/24")
    await api.ok("POST", "/1.0/instances", {"name": "dev1", "source": {"alias": "test"}, "start": True})
    await api.ok("PATCH", "/1.0/instances/dev1", {"devices": {
        "eth1": {"type": "nic", "network": "net1"},
        "data": {"type": "disk", "source": "data1", "pool": pool}}})
    inst = await api.ok("GET", "/1.0/instances/dev1")
    root = domain_xml("dev1")
    ids = {p.get("interfaceid") for p in root.findall("devices/interface/virtualport/parameters")}
    assert ids == {inst["config"]["volatile.eth0.port"], inst["config"]["volatile.eth1.port"]}
    assert any(s.get("name") == f"{pool}/custom_data1" for s in root.findall("devices/disk/source"))
    assert (await cloud.storage.volume_info(pool, "data1")).attached_to == ("dev1",)
    assert [p.name for p in await cloud.network.list_ports("net1")] == ["dev1/eth1"]

    # the volume cannot be attached twice
    await api.ok("POST", "/1.0/instances", {"name": "dev2", "source": {"alias": "test"}})
    env = await api.call("PATCH", "/1.0/instances/dev2", {"devices": {"d": {"type": "disk",
                                                                            "source": "data1"}}})
    assert env["error_code"] == 409 and "attached to dev1" in env["error"]

    devices = {k: v for k, v in inst["devices"].items() if k not in ("eth1", "data")}
    await api.ok("PUT", "/1.0/instances/dev1", {"config": {}, "devices": devices})
    root = domain_xml("dev1")
    assert len(root.findall("devices/interface")) == 1
    assert not any(s.get("name") == f"{pool}/custom_data1" for s in root.findall("devices/disk/source"))
    assert (await cloud.storage.volume_info(pool, "data1")).attached_to == ()
    assert await cloud.network.list_ports("net1") == []
