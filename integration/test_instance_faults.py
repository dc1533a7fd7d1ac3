"""Fault injection: a real instance server process (the instances API + reconciler over real
Ceph, real OVN NB, a real private libvirtd and the real database) is SIGKILLed at every kill
point of a launch and of a delete (microcloudd/faults.py), then restarted: each instance ends
fully created or cleanly gone, and nothing is leaked in libvirt, RBD, OVN or the database.

The server is this module run as `python -m integration.test_instance_faults CONFIG.json`:
the same handlers, services and reconciler the daemon composes, without its components.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from microcloudd import faults
from microcloudd.db.database import Database
from microcloudd.db.records import Instance
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.network.ovn import OvnNetworkDriver
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.drivers.storage.rbd import RBDDriver
from microcloudd.services import network_store

REPO = Path(__file__).resolve().parents[1]


# -- the server process ----------------------------------------------------------------------
async def serve(cfg: dict[str, Any]) -> None:
    from aiohttp import web

    from microcloudd import hostinfo
    from microcloudd.api import instances, server
    from microcloudd.events import EventBus
    from microcloudd.operations import OperationManager
    from microcloudd.rest import envelope, openapi
    from microcloudd.rest.app import build_app
    from microcloudd.rest.handlers import instances as handlers
    from microcloudd.rest.handlers.server import ServerHandlers
    from microcloudd.services import instance_reconciler
    from microcloudd.services.cloud import Cloud

    db = await Database.connect(cfg["db"])
    storage = RBDDriver(Path(cfg["ceph_conf"]), Path(cfg["ceph_keyring"]), user=cfg["ceph_user"],
                        owner=cfg["owner"])
    await storage.connect()
    network = await OvnNetworkDriver.connect(cfg["nb"], cfg["owner"], prefix=cfg["prefix"])
    compute = await LibvirtDriver.connect(cfg["libvirt"], cfg["owner"])
    events = EventBus("m1")
    cloud = Cloud(Path(cfg["state"]), "m1", events, OperationManager(events, "m1"), db=db, storage=storage,
                  network=network, compute=compute, settings=cfg["settings"])
    reconciler = instance_reconciler.InstanceReconciler(cloud, interval=3600)
    await reconciler.run_once()  # converge before serving, as the daemon's start does
    await reconciler.start()

    async def status() -> Any:
        raise RuntimeError("unused")

    ops = (*server.OPS, *instances.OPS)
    srv = ServerHandlers(hostinfo.server_info("m1"), status, envelope.encode(openapi.build(ops, "t")),
                         cloud.operations, events)
    runner = web.AppRunner(build_app(ops, [srv, handlers.make(cloud)]), handle_signals=False)
    await runner.setup()
    sock = Path(cfg["socket"])
    await asyncio.to_thread(sock.unlink, missing_ok=True)
    await web.UnixSite(runner, str(sock)).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await reconciler.stop()
    await runner.cleanup()
    for closer in (compute.close, network.close, storage.close, db.close):
        await closer()


# -- the test --------------------------------------------------------------------------------
class Server:
    def __init__(self, cfg_path: Path, socket: Path) -> None:
        self.cfg_path, self.socket = cfg_path, socket
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, kill_at: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != faults.ENV}
        if kill_at:
            env[faults.ENV] = kill_at
        self.socket.unlink(missing_ok=True)
        log = open(self.cfg_path.with_suffix(".log"), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "integration.test_instance_faults",
                                      str(self.cfg_path)],
                                     cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            assert self.proc.poll() is None, self.cfg_path.with_suffix(".log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.05)

    def wait_killed(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def request(sock: Path, method: str, path: str, body: Any = None) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)),
                                     base_url="http://localhost") as s:
        async with s.request(method, path, json=body) as r:
            env: dict[str, Any] = await r.json()
        if env["type"] == "async":
            try:
                async with s.get(f"/1.0/operations/{env['metadata']['id']}/wait?timeout=60") as r:
                    env = await r.json()
            except aiohttp.ClientError:
                return {"killed": True}
        return env


async def inventory(db: Database, storage: RBDDriver, compute: LibvirtDriver, pool: str) -> dict[str, Any]:
    await asyncio.sleep(0.3)  # let the replica catch up with the server's last writes
    return {
        "rows": sorted((r.name, r.stage) for r in db.all(Instance)),
        "domains": sorted(d.name for d in await compute.list_owned()),
        "volumes": sorted(v.name for v in await storage.list_volumes(pool, type=VolumeType.VM)),
        "ports": sorted(f"{p.instance}/{p.device}" for p in network_store.ports(db)),
    }


def created(*names: str) -> dict[str, Any]:
    return {"rows": [(n, "created") for n in names], "domains": list(names),
            "volumes": sorted([*names, *(f"{n}-cidata" for n in names)]),
            "ports": [f"{n}/eth0" for n in names]}


async def test_sigkill_at_every_launch_and_delete_step(ceph: Any, rbd_pool: str, ovn_central: Any,
                                                       private_libvirtd: Any,
                                                       microcloud_db_server: Any) -> None:
    from tests.fixtures.cloud import add_image, add_network
    from tests.fixtures.ovn import TEST_UPLINK, _drop_uplink

    tag = uuid.uuid4().hex[:8]
    owner, prefix = f"faults-{tag}", f"f{tag}"
    work = Path(tempfile.mkdtemp(prefix="mc-faults-"))
    db = await Database.connect(microcloud_db_server.remote)
    storage = RBDDriver(ceph.conf_path, ceph.keyring_path, user=ceph.user, owner=owner)
    await storage.connect()
    network = await OvnNetworkDriver.connect(ovn_central.nb_remote, owner, prefix=prefix)
    compute = await LibvirtDriver.connect(private_libvirtd.uri, owner)
    cfg = {"db": microcloud_db_server.remote, "ceph_conf": str(ceph.conf_path),
           "ceph_keyring": str(ceph.keyring_path), "ceph_user": ceph.user, "owner": owner, "prefix": prefix,
           "nb": ovn_central.nb_remote, "libvirt": private_libvirtd.uri, "state": str(work / "state"),
           "socket": str(work / "unix.socket"),
           "settings": {"storage.pool": rbd_pool, "ceph.mon_host": ceph.mon_host, "ceph.user": ceph.user,
                        "ceph.secret_uuid": str(uuid.uuid4()), "ceph.key": ceph.admin_key,
                        "network.default": "net0"}}
    cfg_path = work / "server.json"
    cfg_path.write_text(json.dumps(cfg))
    server = Server(cfg_path, work / "unix.socket")
    try:
        await network.ensure_uplink(TEST_UPLINK)
        await add_network(db, network, "net0")
        await add_image(db, storage, rbd_pool, "test")
        names = []
        for i, point in enumerate(faults.LAUNCH_POINTS):
            name = f"k{i}"
            server.start(kill_at=point)
            result = await request(server.socket, "POST", "/1.0/instances",
                                   {"name": name, "source": {"alias": "test"}})
            assert result.get("killed"), (point, result)
            assert server.wait_killed() == -signal.SIGKILL, point
            server.start()  # restart: the reconciler converges before the socket appears
            server.stop()
            names.append(name)
            got = await inventory(db, storage, compute, rbd_pool)
            assert got == created(*names), (point, got)
        for point in faults.DELETE_POINTS:
            server.start(kill_at=point)
            result = await request(server.socket, "DELETE", f"/1.0/instances/{names[0]}")
            assert result.get("killed"), (point, result)
            assert server.wait_killed() == -signal.SIGKILL, point
            server.start()
            server.stop()
            names.pop(0)
            got = await inventory(db, storage, compute, rbd_pool)
            assert got == created(*names), (point, got)
        server.start()
        for name in names:
            assert (await request(server.socket, "DELETE", f"/1.0/instances/{name}"))["metadata"]["status"] \
                == "Success"
        server.stop()
        assert await inventory(db, storage, compute, rbd_pool) == created()
    finally:
        server.stop()
        for dom in await compute.list_owned():
            await compute.undefine(dom.name, force=True)
        for vol in await storage.list_volumes(rbd_pool, type=VolumeType.VM):
            await storage.delete_volume(rbd_pool, vol.name, type=VolumeType.VM, if_exists=True)
        from microcloudd.drivers.network.base import DesiredState

        await network.reconcile(DesiredState())
        await network._change(_drop_uplink)
        for closer in (compute.close, network.close, storage.close, db.close):
            await closer()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(serve(json.loads(Path(sys.argv[1]).read_text())))
