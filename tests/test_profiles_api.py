"""Profiles through the REST API on real backends (real database, Ceph, OVN NB, libvirt's
test:///): CRUD and recursion, expansion order and override, a launch that takes its root
disk and a NIC from a non-default profile, edits that reach the instances using a profile,
refused requests that change nothing, the real CLI and pylxd."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from microcloudd.api.errors import MicrocloudError
from microcloudd.db.records import Instance, Profile
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_reconciler import InstanceReconciler
from tests.fixtures.cloud import NETWORK, SERVER, add_network, domain_xml, leftovers

CLI = str(Path(sys.executable).parent / "microcloud")
MiB = 1 << 20


@pytest.fixture
async def socket_path(cloud: Cloud) -> AsyncIterator[Path]:
    """The server, profiles and instances API over `cloud` on a real Unix socket (the handlers
    and app builder the daemon uses)."""
    from microcloudd import hostinfo
    from microcloudd.api import instances, profiles, server
    from microcloudd.rest import envelope, openapi
    from microcloudd.rest.app import build_app
    from microcloudd.rest.handlers import instances as instance_handlers
    from microcloudd.rest.handlers import profiles as profile_handlers
    from microcloudd.rest.handlers.server import ServerHandlers

    async def status() -> Any:
        raise MicrocloudError("not in this test server")

    ops = (*server.OPS, *profiles.OPS, *instances.OPS)
    srv = ServerHandlers(hostinfo.server_info(SERVER), status, envelope.encode(openapi.build(ops, "test")),
                         cloud.operations, cloud.events)
    app = build_app(ops, [srv, profile_handlers.make(cloud), instance_handlers.make(cloud)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    sock = Path(tempfile.mkdtemp(prefix="mc-prof-")) / "unix.socket"
    await web.UnixSite(runner, str(sock)).start()
    try:
        yield sock
    finally:
        await cloud.operations.shutdown()
        await srv.close_event_streams()
        await runner.cleanup()
        shutil.rmtree(sock.parent, ignore_errors=True)


class Api:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.s = session

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        async with self.s.request(method, path, json=body) as r:
            env: dict[str, Any] = await r.json()
            status = r.status
        if env["type"] == "async":
            async with self.s.get(f"/1.0/operations/{env['metadata']['id']}/wait?timeout=60") as r:
                env = await r.json()
            assert env["metadata"]["status"] == "Success", env["metadata"]["err"]
        return status, env

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        _, env = await self.call(method, path, body)
        assert env["type"] in ("sync", "async"), env
        return env["metadata"]

    async def refused(self, method: str, path: str, body: Any, status: int, *needles: str) -> str:
        got, env = await self.call(method, path, body)
        assert (got, env["type"], env["error_code"]) == (status, "error", status), env
        for n in needles:
            assert n in env["error"], env["error"]
        return str(env["error"])


@pytest.fixture
async def api(socket_path: Path) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)),
                                     base_url="http://localhost") as s:
        yield Api(s)


def interface_ids(root: ET.Element) -> set[str | None]:
    return {p.get("interfaceid") for p in root.findall("devices/interface/virtualport/parameters")}


def vm(name: str, profiles: list[str] | None = None, **over: Any) -> dict[str, Any]:
    body = {"name": name, "source": {"type": "image", "alias": "test"}, **over}
    if profiles is not None:
        body["profiles"] = profiles
    return body


async def test_profile_crud_and_recursion(api: Api, cloud: Cloud) -> None:
    pool, db = cloud.settings["storage.pool"], cloud.need_db()
    assert await api.ok("GET", "/1.0/profiles") == ["/1.0/profiles/default"]
    default = await api.ok("GET", "/1.0/profiles/default")
    assert default["devices"] == {"root": {"type": "disk", "path": "/", "pool": pool},
                                  "eth0": {"type": "nic", "network": NETWORK, "name": "eth0"}}
    assert default["used_by"] == [] and default["config"] == {}

    await api.ok("POST", "/1.0/profiles", {"name": "small", "description": "small VMs",
                                           "config": {"limits.cpu": "1", "limits.memory": "256MiB"}})
    listed = await api.ok("GET", "/1.0/profiles?recursion=1")
    assert [p["name"] for p in listed] == ["default", "small"]
    assert set(listed[1]) == {"name", "description", "config", "devices", "used_by"}
    assert listed[1]["config"] == {"limits.cpu": "1", "limits.memory": "256MiB"}
    assert sorted(await api.ok("GET", "/1.0/profiles")) == ["/1.0/profiles/default", "/1.0/profiles/small"]

    await api.ok("PUT", "/1.0/profiles/small", {"description": "put", "config": {"user.a": "1"},
                                                "devices": {"eth1": {"type": "nic", "network": NETWORK}}})
    small = db.get(Profile, "small")
    assert (small.description, small.config, small.devices) == (
        "put", {"user.a": "1"}, {"eth1": {"type": "nic", "network": NETWORK}})
    await api.ok("PATCH", "/1.0/profiles/small", {"config": {"limits.memory": "512MiB", "user.a": ""}})
    small = db.get(Profile, "small")
    assert small.config == {"limits.memory": "512MiB"} and small.description == "put"
    assert "eth1" in small.devices

    await api.ok("POST", "/1.0/profiles/small", {"name": "tiny"})
    assert db.get_or_none(Profile, "small") is None and db.get(Profile, "tiny").config == small.config
    await api.refused("GET", "/1.0/profiles/small", None, 404, "Profile 'small' not found")
    await api.ok("DELETE", "/1.0/profiles/tiny")
    assert [p.name for p in db.all(Profile)] == []  # the default is still the built-in one
    # editing the built-in default writes it
    await api.ok("PATCH", "/1.0/profiles/default", {"description": "mine"})
    assert db.get(Profile, "default").devices == default["devices"]


async def test_launch_takes_root_disk_and_nic_from_profiles_in_order(api: Api, cloud: Cloud) -> None:
    pool, db, storage, network = (cloud.settings["storage.pool"], cloud.need_db(), cloud.need_storage(),
                                  cloud.need_network())
    await add_network(db, network, "net1", "10.43.0.1/24")
    await api.ok("POST", "/1.0/profiles", {"name": "big", "config": {"limits.cpu": "1",
                                                                     "limits.memory": "384MiB"},
                                           "devices": {"root": {"type": "disk", "path": "/", "pool": pool,
                                                                "size": "32MiB"},
                                                       "data": {"type": "nic", "network": "net1",
                                                                "name": "data"}}})
    # default then big: big's root (with its size) replaces default's; the own config overrides big's
    await api.ok("POST", "/1.0/instances", vm("p1", ["default", "big"], config={"limits.memory": "256MiB"}))
    inst = await api.ok("GET", "/1.0/instances/p1")
    assert inst["profiles"] == ["default", "big"] and inst["devices"] == {}
    assert inst["expanded_devices"] == {
        "root": {"type": "disk", "path": "/", "pool": pool, "size": "32MiB"},
        "eth0": {"type": "nic", "network": NETWORK, "name": "eth0"},
        "data": {"type": "nic", "network": "net1", "name": "data"}}
    assert inst["config"]["limits.memory"] == "256MiB" and "limits.cpu" not in inst["config"]
    assert inst["expanded_config"]["limits.memory"] == "256MiB"
    assert inst["expanded_config"]["limits.cpu"] == "1"
    rec = db.get(Instance, "p1")
    assert rec.devices == {} and rec.profiles == ["default", "big"]

    assert (await storage.volume_info(pool, "p1", type=VolumeType.VM)).size == 32 * MiB
    root = domain_xml("p1")
    assert int(root.findtext("memory") or 0) == 256 * 1024  # KiB
    ports = {dev: inst["config"][f"volatile.{dev}.port"] for dev in ("eth0", "data")}
    assert interface_ids(root) == set(ports.values())
    assert [p.name for p in await network.list_ports("net1")] == ["p1/data"]
    assert [p.id for p in await network.list_ports(NETWORK)] == [ports["eth0"]]

    # the other order: default's root (no size: the image's) wins over big's
    await api.ok("POST", "/1.0/instances", vm("p2", ["big", "default"]))
    inst2 = await api.ok("GET", "/1.0/instances/p2")
    assert inst2["expanded_devices"]["root"] == {"type": "disk", "path": "/", "pool": pool}
    assert (await storage.volume_info(pool, "p2", type=VolumeType.VM)).size == 8 * MiB  # the image's
    assert int(domain_xml("p2").findtext("memory") or 0) == 384 * 1024

    # no profiles: only the own devices
    await api.ok("POST", "/1.0/instances", vm("p3", [], devices={"root": {"type": "disk", "path": "/",
                                                                         "pool": pool}}))
    assert (await api.ok("GET", "/1.0/instances/p3"))["expanded_devices"] == {
        "root": {"type": "disk", "path": "/", "pool": pool}}
    assert domain_xml("p3").findall("devices/interface") == []

    # recursion=2 shows the profiles' NICs in the state; the reconciler keeps their ports
    full = {i["name"]: i for i in await api.ok("GET", "/1.0/instances?recursion=2")}
    assert set(full["p1"]["state"]["network"]) == {"eth0", "data"}
    report = await InstanceReconciler(cloud).run_once()
    assert report.orphans == [] and report.errors == []
    assert sorted((await leftovers(cloud))["ports"]) == ["p1/data", "p1/eth0", "p2/data", "p2/eth0"]
    assert (await api.ok("GET", "/1.0/profiles/big"))["used_by"] == ["/1.0/instances/p1", "/1.0/instances/p2"]

    # renaming a profile renames it in its users; their expansion is unchanged
    await api.ok("POST", "/1.0/profiles/big", {"name": "large"})
    assert db.get(Instance, "p1").profiles == ["default", "large"]
    assert (await api.ok("GET", "/1.0/instances/p1"))["expanded_devices"] == inst["expanded_devices"]


async def test_profile_edits_reach_the_instances_using_it(api: Api, cloud: Cloud) -> None:
    db, network = cloud.need_db(), cloud.need_network()
    await api.ok("POST", "/1.0/profiles", {"name": "lim", "config": {"limits.memory": "256MiB"}})
    await api.ok("POST", "/1.0/instances", vm("e1", ["default", "lim"]))
    await api.ok("POST", "/1.0/instances", vm("e2", ["default", "lim"], start=True))
    assert int(domain_xml("e1").findtext("memory") or 0) == 256 * 1024

    # limits: in the persistent definition, so they hold from the next start
    await api.ok("PATCH", "/1.0/profiles/lim", {"config": {"limits.memory": "512MiB"}})
    for name in ("e1", "e2"):
        assert int(domain_xml(name).findtext("memory") or 0) == 512 * 1024
        assert "limits.memory" not in db.get(Instance, name).config  # the profile's, not copied in

    # a NIC added to the profile: ids recorded in each instance's config, port and interface made
    await api.ok("PATCH", "/1.0/profiles/lim", {"devices": {"eth9": {"type": "nic", "network": NETWORK}}})
    for name in ("e1", "e2"):
        cfg = db.get(Instance, name).config
        assert cfg["volatile.eth9.hwaddr"] and cfg["volatile.eth9.port"]
        assert cfg["volatile.eth9.port"] in interface_ids(domain_xml(name))
    assert sorted(p.name for p in await network.list_ports(NETWORK)) == ["e1/eth0", "e1/eth9", "e2/eth0",
                                                                         "e2/eth9"]
    # and removed again
    await api.ok("PUT", "/1.0/profiles/lim", {"config": {"limits.memory": "512MiB"}})
    assert sorted(p.name for p in await network.list_ports(NETWORK)) == ["e1/eth0", "e2/eth0"]
    assert "volatile.eth9.port" not in db.get(Instance, "e1").config
    assert len(domain_xml("e1").findall("devices/interface")) == 1

    # an instance's own key still beats the profile's
    await api.ok("PATCH", "/1.0/instances/e1", {"config": {"limits.memory": "320MiB"}})
    assert int(domain_xml("e1").findtext("memory") or 0) == 320 * 1024
    # and switching an instance's profiles re-expands it
    await api.ok("PATCH", "/1.0/instances/e2", {"profiles": ["default"]})
    assert int(domain_xml("e2").findtext("memory") or 0) == 1024 * 1024  # the 1GiB default
    assert db.get(Instance, "e2").profiles == ["default"]


async def test_bad_input_is_refused_and_changes_nothing(api: Api, cloud: Cloud) -> None:
    pool, db = cloud.settings["storage.pool"], cloud.need_db()
    await api.ok("POST", "/1.0/profiles", {"name": "used", "config": {"limits.memory": "256MiB"},
                                           "devices": {"root": {"type": "disk", "path": "/", "pool": pool}}})
    await api.ok("POST", "/1.0/profiles", {"name": "spare"})
    await api.ok("POST", "/1.0/instances", vm("u1", ["used"]))
    before = (db.all(Profile), db.all(Instance), await leftovers(cloud), ET.tostring(domain_xml("u1")))

    bad_profiles = [
        ({"name": "x", "devices": {"u": {"type": "usb"}}}, 400, "type must be one of"),
        ({"name": "x", "devices": {"n": {"type": "nic"}}}, 400, "needs `network`"),
        ({"name": "x", "devices": {"n": {"type": "nic", "network": "nonet"}}}, 404, "Network 'nonet'"),
        ({"name": "x", "devices": {"r": {"type": "disk", "path": "/"}}}, 400, "needs `pool`"),
        ({"name": "x", "devices": {"r": {"type": "disk", "path": "/", "pool": "nopool"}}}, 404,
         "Storage pool 'nopool'"),
        ({"name": "x", "devices": {"d": {"type": "disk", "path": "/data"}}}, 400, "needs `source`"),
        ({"name": "x", "config": {"limits.cpu": "0"}}, 400, "at least 1"),
        ({"name": "x", "config": {"security.privileged": "true"}}, 400, "unknown config key"),
        ({"name": "x", "config": {"volatile.x": "1"}}, 400, "set by microcloud"),
        ({"name": "-x"}, 400, "Invalid profile name"),
        ({"name": "used"}, 409, "already exists"),
        ({"name": "default"}, 409, "already exists"),
    ]
    for body, status, needle in bad_profiles:
        await api.refused("POST", "/1.0/profiles", body, status, needle)

    await api.refused("POST", "/1.0/instances", vm("n1", ["default", "nope"]), 404,
                      "Profile 'nope' not found")
    await api.refused("POST", "/1.0/instances", vm("n1", ["used", "used"]), 400, "Duplicate profile")
    await api.refused("POST", "/1.0/instances", vm("n1", []), 400, "no root disk", "profiles (none)")
    await api.refused("POST", "/1.0/instances", vm("n1", ["spare"]), 400, "no root disk", "(spare)")

    await api.refused("DELETE", "/1.0/profiles/default", None, 403, "The 'default' profile cannot be deleted")
    await api.refused("POST", "/1.0/profiles/default", {"name": "other"}, 403,
                      "The 'default' profile cannot be renamed")
    await api.refused("DELETE", "/1.0/profiles/used", None, 409, "Profile is currently in use")
    await api.refused("POST", "/1.0/profiles/used", {"name": "spare"}, 409, "Name 'spare' already in use")
    await api.refused("POST", "/1.0/profiles/used", {"name": "bad_name"}, 400, "Invalid profile name")
    await api.refused("PATCH", "/1.0/profiles/nope", {"config": {}}, 404, "Profile 'nope' not found")
    await api.refused("DELETE", "/1.0/profiles/nope", None, 404, "Profile 'nope' not found")

    # edits that are bad in themselves, or would break u1, which takes its root disk from "used"
    await api.refused("PATCH", "/1.0/profiles/used", {"config": {"limits.cpu": "100000"}}, 400,
                      "more than this host's")
    await api.refused("PUT", "/1.0/profiles/used", {"config": {}}, 400, "Instance 'u1'", "no root disk")
    await add_network(db, cloud.need_network(), "net2", "10.44.0.1/24")
    await api.refused("PATCH", "/1.0/profiles/used", {"devices": {"root": {"type": "disk", "path": "/",
                                                                          "pool": "other"}}},
                      404, "Storage pool 'other'")
    await api.refused("PATCH", "/1.0/instances/u1", {"profiles": ["spare"]}, 400, "no root disk")
    await api.refused("PATCH", "/1.0/instances/u1", {"profiles": ["nope"]}, 404, "Profile 'nope' not found")
    # a NIC of a profile cannot change network in place under its users
    await api.ok("PATCH", "/1.0/profiles/used", {"devices": {"eth0": {"type": "nic", "network": NETWORK}}})
    mid = (db.all(Profile), db.all(Instance), await leftovers(cloud))
    await api.refused("PATCH", "/1.0/profiles/used",
                      {"devices": {"eth0": {"type": "nic", "network": "net2"}}}, 400, "Instance 'u1'",
                      "cannot be changed in place")
    assert (db.all(Profile), db.all(Instance), await leftovers(cloud)) == mid
    root = {"type": "disk", "path": "/", "pool": pool}
    await api.ok("PUT", "/1.0/profiles/used", {"config": {"limits.memory": "256MiB"},
                                               "devices": {"root": root}})

    after = (db.all(Profile), db.all(Instance), await leftovers(cloud), ET.tostring(domain_xml("u1")))
    assert after[0] == before[0] and after[2] == before[2] and after[3] == before[3]
    assert [(i.name, i.devices, i.profiles) for i in after[1]] == [(i.name, i.devices, i.profiles)
                                                                   for i in before[1]]


async def test_cli_profiles_and_launch_with_profile(socket_path: Path, cloud: Cloud) -> None:
    pool = cloud.settings["storage.pool"]
    env = {**os.environ, "MICROCLOUD_DIR": str(socket_path.parent)}

    async def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(subprocess.run, [CLI, *args], env=env, capture_output=True, text=True,
                                       input=stdin, timeout=120)

    async def ok(*args: str, stdin: str = "") -> str:
        r = await cli(*args, stdin=stdin)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    async def error(*args: str) -> str:
        r = await cli(*args)
        assert r.returncode == 1 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, (args, r)
        return r.stderr.strip()

    await ok("profile", "create", "web", "limits.memory=256MiB", "--description", "web servers")
    await ok("profile", "device", "add", "web", "root", "disk", "path=/", f"pool={pool}", "size=16MiB")
    await ok("profile", "device", "add", "web", "eth0", "nic", f"network={NETWORK}", "name=eth0")
    assert await error("profile", "device", "add", "web", "eth0", "nic", f"network={NETWORK}") == \
        "Error: Device eth0 already exists in profile web"
    await ok("launch", "test", "c1", "-p", "web")
    inst = json.loads(await ok("info", "c1", "--format", "json"))
    assert inst["profiles"] == ["web"] and inst["expanded_devices"]["root"]["size"] == "16MiB"
    assert "Profiles: web" in await ok("info", "c1")
    shown = json.loads(await ok("profile", "show", "web", "--format", "json"))
    assert shown["used_by"] == ["/1.0/instances/c1"] and shown["description"] == "web servers"
    listed = json.loads(await ok("profile", "list", "--format", "json"))
    assert [(p["name"], len(p["used_by"])) for p in listed] == [("default", 0), ("web", 1)]
    assert "| web " in await ok("profile", "list")

    assert await error("profile", "delete", "web") == "Error: Profile is currently in use"
    assert await error("profile", "delete", "default") == "Error: The 'default' profile cannot be deleted"
    assert await error("launch", "test", "c2", "-p", "nope") == "Error: Profile 'nope' not found"
    assert "no root disk" in await error("create", "test", "c3", "--no-profiles")
    assert cloud.need_db().get_or_none(Instance, "c2") is None

    await ok("profile", "set", "web", "limits.cpu=1", "user.tier=front")
    await ok("profile", "unset", "web", "user.tier")
    assert cloud.need_db().get(Profile, "web").config == {"limits.memory": "256MiB", "limits.cpu": "1"}
    await ok("profile", "copy", "web", "web2")
    await ok("profile", "rename", "web2", "web3")
    await ok("profile", "device", "remove", "web3", "eth0")
    assert set(cloud.need_db().get(Profile, "web3").devices) == {"root"}
    edited = (await ok("profile", "show", "web3")).replace("limits.cpu: '1'", "limits.cpu: '2'")
    await ok("profile", "edit", "web3", stdin=edited)
    assert cloud.need_db().get(Profile, "web3").config["limits.cpu"] == "2"
    await ok("profile", "rename", "web", "site")
    assert cloud.need_db().get(Instance, "c1").profiles == ["site"]
    await ok("delete", "--force", "c1")
    await ok("profile", "delete", "site")
    assert sorted(p.name for p in cloud.need_db().all(Profile)) == ["web3"]
    assert await leftovers(cloud) == {"domains": [], "volumes": [], "ports": []}


async def test_pylxd_reads_profiles(socket_path: Path, cloud: Cloud) -> None:
    import pylxd

    def lxd() -> tuple[Any, ...]:
        client = pylxd.Client(endpoint=str(socket_path))
        default = client.profiles.get("default")
        made = client.profiles.create("py1", config={"limits.cpu": "1"}, description="from pylxd")
        names = sorted(p.name for p in client.profiles.all())
        made.delete()
        return default.name, default.devices, made.config, names, client.profiles.exists("py1")

    name, devices, config, names, exists = await asyncio.to_thread(lxd)
    assert name == "default" and devices["eth0"]["network"] == NETWORK
    assert devices["root"]["pool"] == cloud.settings["storage.pool"]
    assert config == {"limits.cpu": "1"} and names == ["default", "py1"] and exists is False
