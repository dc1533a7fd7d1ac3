"""Instance figures on real backends (Ceph memstore, OVN NB, libvirt test:///, the database).

    .venv/bin/python -m bench.instances [--concurrent 50] [--sizes 100,500,1000]

1. launch overhead: the launch service (row, clone, port, seed, domain, stage) beside the floor,
   the same driver calls made directly;
2. N concurrent launches through the service (throughput, p50/p99);
3. GET /1.0/instances?recursion=1 and =2 over the Unix socket at 100, 500 and 1,000 instances
   (rows + test:/// domains; the API reads the replica, one libvirt listing, one OVN read);
4. the process's RSS serving 500 instances (this process is the server).
LXD 5.0 on this machine: ≈65 ms (recursion=1) and ≈2.0 s (recursion=2) at 500, RSS ≈340 MB.
Targets: under 20 ms and 200 ms, RSS under 100 MB. Figures only; nothing here fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import shutil
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec

from microcloudd.api import instances as api
from microcloudd.components import ovn
from microcloudd.db.database import Database
from microcloudd.db.records import Instance
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.network.ovn import OvnNetworkDriver
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.drivers.storage.rbd import RBDDriver
from microcloudd.events import EventBus
from microcloudd.operations import OperationManager
from microcloudd.services import instance_launch, instance_seed, instances, network_ports
from microcloudd.services import instance_spec as isp
from microcloudd.services.cloud import Cloud
from tests.fixtures.ceph import CephCluster, running_ceph
from tests.fixtures.cloud import add_image, add_network, settings
from tests.fixtures.db import start_db_server, stop_db_server
from tests.fixtures.ovn import TEST_UPLINK
from tests.support import proc

LXD = {1: 65.0, 2: 2000.0}
TARGET = {1: 20.0, 2: 200.0}


@contextlib.contextmanager
def components() -> Iterator[tuple[str, CephCluster, str, str]]:
    """Real components, started outside the event loop (their readiness checks run their own):
    (database remote, Ceph, pool, NB remote)."""
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-", dir="/tmp"))
    db_server = start_db_server()
    running: list[proc.Running] = []
    try:
        with running_ceph() as ceph:
            pool = "bench" + uuid.uuid4().hex[:6]
            ceph.create_pool(pool)
            paths = ovn.CentralPaths(tmp / "ovn")
            ovn.bootstrap_central(paths)
            for spec in ovn.central_specs(paths):
                running.append(proc.start(spec, paths.state_dir / "log"))
            yield db_server.remote, ceph, pool, paths.nb_remote
    finally:
        for r in reversed(running):
            r.stop()
        stop_db_server(db_server)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def backends(db_remote: str, ceph: CephCluster, pool: str, nb_remote: str) -> AsyncIterator[Cloud]:
    db = await Database.connect(db_remote)
    owner = "bench-" + uuid.uuid4().hex[:6]
    storage = RBDDriver(ceph.conf_path, ceph.keyring_path, user=ceph.user, owner=owner)
    await storage.connect()
    network = await OvnNetworkDriver.connect(nb_remote, owner, prefix="b" + owner[-6:])
    await network.ensure_uplink(TEST_UPLINK)
    compute = await LibvirtDriver.connect("test:///default", owner)
    events = EventBus("m1")
    state = Path(tempfile.mkdtemp(prefix="mc-bench-state-"))
    cloud = Cloud(state, "m1", events, OperationManager(events, "m1"), db=db, storage=storage,
                  network=network, compute=compute, settings=settings(ceph, pool))
    await add_network(db, network, "net0", "10.42.0.1/22")  # 1,000 NICs: a /24 holds 253
    await add_image(db, storage, pool, "test")
    try:
        yield cloud
    finally:
        for d in await compute.list_owned():
            await compute.undefine(d.name, force=True)
        await compute.close()
        await network.close()
        await storage.close()
        await db.close()
        shutil.rmtree(state, ignore_errors=True)


async def launch_service(cloud: Cloud, name: str) -> float:
    t0 = time.perf_counter()
    rec = await instances.prepare(cloud, api.InstancesPost(name=name,
                                                           source=api.InstanceSource(alias="test")))
    rec = await instance_launch.insert_row(cloud, rec)
    await instance_launch.launch(cloud, rec)
    return (time.perf_counter() - t0) * 1000


async def launch_floor(cloud: Cloud, name: str) -> float:
    """The same backend calls, made directly (the row is built but not stored)."""
    rec = await instances.prepare(cloud, api.InstancesPost(name=name,
                                                           source=api.InstanceSource(alias="test")))
    assert cloud.storage and cloud.compute
    t0 = time.perf_counter()
    pool = isp.root_pool(cloud, rec)
    await cloud.storage.create_root_disk(pool, name, rec.image, may_exist=True)
    await network_ports.attach_port(cloud, "net0", name, "eth0", mac=isp.mac(rec, "eth0"))
    await instance_seed.write_seed(cloud.storage, pool, rec)
    await cloud.compute.define(isp.domain_spec(cloud, rec))
    return (time.perf_counter() - t0) * 1000


async def cleanup(cloud: Cloud) -> None:
    assert cloud.db and cloud.compute and cloud.storage
    for rec in cloud.db.all(Instance):
        await instance_launch.remove(cloud, rec.name)
    for d in await cloud.compute.list_owned():
        await cloud.compute.undefine(d.name, force=True)
    pool = cloud.settings["storage.pool"]
    for v in await cloud.storage.list_volumes(pool, type=VolumeType.VM):
        await cloud.storage.delete_volume(pool, v.name, type=VolumeType.VM, if_exists=True)
    for p in network_ports.store.ports(cloud.db):
        await network_ports.detach_port(cloud, p.network, p.instance, p.device)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def fill(cloud: Cloud, total: int) -> None:
    """Rows (stage created, one NIC each) and test:/// domains up to `total` instances."""
    assert cloud.db and cloud.compute
    have = len(cloud.db.all(Instance))
    template = await instances.prepare(cloud, api.InstancesPost(name="tmpl",
                                                                source=api.InstanceSource(alias="test")))
    for start in range(have, total, 100):
        recs = []
        async with cloud.db.transaction() as txn:
            for i in range(start, min(total, start + 100)):
                name = f"l{i:05d}"
                devices = isp.expanded(cloud, template).devices  # the default profile's NIC needs ids too
                config = instances._fill_volatile(name, {k: v for k, v in template.config.items()
                                                         if not k.endswith((".hwaddr", ".port"))}, devices)
                rec = msgspec.structs.replace(template, name=name, uuid=str(uuid.uuid4()), config=config,
                                              stage="created", status="Running" if i % 2 else "Stopped")
                txn.insert(rec)
                recs.append(rec)
        for rec in recs:
            await cloud.compute.define(isp.domain_spec(cloud, rec))
            if rec.status == "Running":
                await cloud.compute.start(rec.name)


def get(path: str, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        conn = http.client.HTTPConnection("localhost")
        conn.sock = socket.socket(socket.AF_UNIX)
        conn.sock.connect(path)
        t0 = time.perf_counter()
        conn.request("GET", url)
        body = conn.getresponse().read()
        out.append((time.perf_counter() - t0) * 1000)
        assert b'"Success"' in body[:200]
        conn.close()
    return out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main(backend: tuple[str, CephCluster, str, str], concurrent: int, sizes: list[int]) -> None:
    from aiohttp import web

    from microcloudd import hostinfo
    from microcloudd.api import instances as api_instances
    from microcloudd.api import server
    from microcloudd.rest import envelope, openapi
    from microcloudd.rest.app import build_app
    from microcloudd.rest.handlers import instances as handlers
    from microcloudd.rest.handlers.server import ServerHandlers

    async with backends(*backend) as cloud:
        # 1. overhead beside the floor
        svc, floor = [], []
        for i in range(10):
            floor.append(await launch_floor(cloud, f"f{i}"))
            svc.append(await launch_service(cloud, f"s{i}"))
        await cleanup(cloud)
        f50, s50 = statistics.median(floor), statistics.median(svc)
        print(f"launch (median of 10): service {s50:.1f} ms, floor (same driver calls) {f50:.1f} ms, "
              f"overhead {s50 - f50:.1f} ms ({s50 / f50:.2f}x)")

        # 2. concurrent launches through the service
        t0 = time.perf_counter()
        times = await asyncio.gather(*(launch_service(cloud, f"c{i}") for i in range(concurrent)))
        wall = time.perf_counter() - t0
        print(f"{concurrent} concurrent launches: {wall:.2f} s, {concurrent / wall:.1f} launches/s, "
              f"p50 {pct(list(times), 50):.0f} ms, p99 {pct(list(times), 99):.0f} ms")
        await cleanup(cloud)

        # 3. listings over the socket
        async def status() -> Any:
            raise RuntimeError("unused")

        ops = (*server.OPS, *api_instances.OPS)
        srv = ServerHandlers(hostinfo.server_info("m1"), status, envelope.encode(openapi.build(ops, "b")),
                             cloud.operations, cloud.events)
        runner = web.AppRunner(build_app(ops, [srv, handlers.make(cloud)]), handle_signals=False)
        await runner.setup()
        sock = Path(tempfile.mkdtemp(prefix="mc-bench-api-")) / "unix.socket"
        await web.UnixSite(runner, str(sock)).start()
        try:
            for n in sizes:
                await fill(cloud, n)
                line = [f"{n:5d} instances:"]
                for rec in (1, 2):
                    ms = statistics.median(await asyncio.to_thread(get, str(sock),
                                                                   f"/1.0/instances?recursion={rec}",
                                                                   20 if rec == 1 else 5))
                    ratio = f"LXD {LXD[rec] / ms:.0f}x slower" if n == 500 else ""
                    line.append(f"recursion={rec} {ms:7.1f} ms (target {TARGET[rec]:.0f}) {ratio}")
                print("  ".join(line))
                if n == 500:
                    print(f"  RSS serving 500 instances: {rss_mb():.0f} MB (LXD ≈340 MB, target < 100 MB)")
        finally:
            await runner.cleanup()
            shutil.rmtree(sock.parent, ignore_errors=True)
            assert cloud.db is not None
            for r in cloud.db.all(Instance):
                await cloud.db.delete(Instance, r.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--sizes", default="100,500,1000")
    args = parser.parse_args()
    with components() as backend:
        asyncio.run(main(backend, args.concurrent, [int(s) for s in args.sizes.split(",")]))
