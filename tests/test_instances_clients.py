"""The main instance commands through the real `microcloud` CLI, and pylxd launching,
starting, stopping and deleting a virtual machine through the Unix socket."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from microcloudd.db.records import Instance
from microcloudd.services.cloud import Cloud
from tests.fixtures.cloud import ApiServer, leftovers

CLI = str(Path(sys.executable).parent / "microcloud")


async def cli(server: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MICROCLOUD_DIR": str(server.socket_path.parent)}
    return await asyncio.to_thread(subprocess.run, [CLI, *args], env=env, capture_output=True, text=True,
                                   timeout=120)


async def ok(server: ApiServer, *args: str) -> str:
    r = await cli(server, *args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


async def test_cli_lifecycle(cloud_daemon: ApiServer, cloud: Cloud) -> None:
    await ok(cloud_daemon, "launch", "test", "c1", "--cpu", "1", "--memory", "256MiB", "-c", "user.role=web")
    await ok(cloud_daemon, "create", "test", "c2")
    table = await ok(cloud_daemon, "list")
    assert [c.strip() for c in table.splitlines()[1].split("|")[1:6]] == ["NAME", "STATUS", "IPV4", "TYPE",
                                                                          "LOCATION"]
    assert "(eth0)" in table  # OVN's dynamic address of c1's NIC
    assert "| c1   | RUNNING |" in table and "| c2   | STOPPED |" in table and "VIRTUAL-MACHINE" in table
    listed = json.loads(await ok(cloud_daemon, "list", "--format", "json"))
    assert [i["name"] for i in listed] == ["c1", "c2"]
    assert "Status: Running" in await ok(cloud_daemon, "info", "c1")
    assert (await ok(cloud_daemon, "config", "get", "c1", "user.role")).strip() == "web"
    await ok(cloud_daemon, "config", "set", "c2", "limits.cpu=1", "limits.memory=512MiB")
    assert "limits.memory: 512MiB" in await ok(cloud_daemon, "config", "show", "c2")

    r = await cli(cloud_daemon, "config", "set", "c2", "limits.cpu=0")
    assert r.returncode == 1 and r.stderr.strip() == "Error: limits.cpu must be at least 1"
    r = await cli(cloud_daemon, "launch", "nosuchimage", "c3")
    assert r.returncode == 1 and r.stderr.startswith("Error: Image") and "not found" in r.stderr
    r = await cli(cloud_daemon, "delete", "c1")
    assert r.returncode == 1 and "is running" in r.stderr

    await ok(cloud_daemon, "snapshot", "create", "c2", "s0")
    assert "s0" in await ok(cloud_daemon, "snapshot", "list", "c2")
    await ok(cloud_daemon, "snapshot", "restore", "c2", "s0")
    await ok(cloud_daemon, "snapshot", "delete", "c2", "s0")
    await ok(cloud_daemon, "stop", "c1", "--force")
    await ok(cloud_daemon, "start", "c1")
    await ok(cloud_daemon, "restart", "c1", "--force")
    await ok(cloud_daemon, "console", "c1", "--show-log")  # test:/// writes no log; it must not fail
    await ok(cloud_daemon, "delete", "--force", "c1", "c2")
    assert cloud.db is not None and cloud.db.all(Instance) == []
    assert await leftovers(cloud) == {"domains": [], "volumes": [], "ports": []}


async def test_pylxd_launch_start_stop_delete(cloud_daemon: ApiServer, cloud: Cloud) -> None:
    import pylxd

    def lxd() -> list[str]:
        client = pylxd.Client(endpoint=str(cloud_daemon.socket_path))
        inst = client.instances.create({"name": "lxd1", "type": "virtual-machine",
                                        "source": {"type": "image", "alias": "test"}}, wait=True)
        seen = [inst.status]
        inst.start(wait=True)
        inst.sync()
        seen.append(inst.status)
        seen.append(client.instances.get("lxd1").state().status)
        inst.stop(force=True, wait=True)
        inst.sync()
        seen.append(inst.status)
        assert [i.name for i in client.instances.all()] == ["lxd1"]
        inst.delete(wait=True)
        seen.append(str(client.instances.exists("lxd1")))
        return seen

    assert await asyncio.to_thread(lxd) == ["Stopped", "Running", "Running", "Stopped", "False"]
    assert await leftovers(cloud) == {"domains": [], "volumes": [], "ports": []}
