"""Image import through the API (upload over the Unix socket + staging + RBD import as an
operation) beside the driver's own import and the raw `rbd import` floor, same file size.

    .venv/bin/python -m bench.images [--mib 256] [--runs 3]

Starts and stops its own throwaway Ceph (memstore OSD) and database. Prints figures and
ratios; never fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.storage import rbd_cli
from microcloudd import hostinfo
from microcloudd.api import images as images_api
from microcloudd.api import server as server_api
from microcloudd.api import storage as storage_api
from microcloudd.api.storage import StoragePoolsPost
from microcloudd.db.database import Database
from microcloudd.drivers.storage.rbd import RBDDriver
from microcloudd.events import EventBus
from microcloudd.operations import OperationManager
from microcloudd.rest.app import build_app
from microcloudd.rest.handlers import images as images_handlers
from microcloudd.rest.handlers import storage as storage_handlers
from microcloudd.rest.handlers.server import ServerHandlers
from microcloudd.services import storage_pools
from microcloudd.services.cloud import Cloud
from tests.fixtures.ceph import CephCluster, make_raw_disk, running_ceph
from tests.fixtures.db import DbServer, start_db_server, stop_db_server

MiB = 1 << 20


def line(label: str, samples: list[float], size: int) -> float:
    med = statistics.median(samples)
    print(f"  {label:<34} median {med:6.2f} s  {size / MiB / med:7.1f} MiB/s  (n={len(samples)})")
    return med


async def bench(ceph: CephCluster, server_db: DbServer, files: list[Path], size: int) -> None:
    db = await Database.connect(server_db.remote)
    driver = RBDDriver(ceph.conf_path, ceph.keyring_path, user=ceph.user, owner="bench-images")
    await driver.connect()
    state = Path(tempfile.mkdtemp(prefix="mc-bench-images-"))
    events = EventBus()
    ops = OperationManager(events)
    cloud = Cloud(state, "bench", events, ops, db=db, storage=driver)

    async def status() -> server_api.Status:
        return server_api.Status(server_name="bench", version="bench", pid=0, uptime=0.0,
                                 state_dir=str(state))

    server = ServerHandlers(hostinfo.server_info("bench"), status, b"{}", ops, events)
    app = build_app((*server_api.OPS, *images_api.OPS, *storage_api.OPS),
                    [server, images_handlers.make(cloud), storage_handlers.make(cloud)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = state / "unix.socket"
    await web.UnixSite(runner, str(sock)).start()
    pools = []
    try:
        api_t, drv_t, cli_t = [], [], []
        for f in files:
            for kind in ("api", "driver", "rbd"):
                pool = "bench-" + uuid.uuid4().hex[:6]
                pools.append(pool)
                await storage_pools.create_pool(cloud, StoragePoolsPost(name=pool))
                t = time.perf_counter()
                if kind == "api":
                    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as http:
                        with open(f, "rb") as body:  # noqa: ASYNC230 - aiohttp streams the file
                            r = await http.post("http://localhost/1.0/images", data=body, headers={
                                "Content-Type": "application/octet-stream", images_api.H_POOL: pool})
                            env = await r.json()
                        assert r.status == 202, env
                        op = await (await http.get(f"http://localhost{env['operation']}/wait")).json()
                        assert op["metadata"]["status"] == "Success", op
                    api_t.append(time.perf_counter() - t)
                elif kind == "driver":
                    await driver.import_image(pool, f)
                    drv_t.append(time.perf_counter() - t)
                else:
                    await asyncio.to_thread(rbd_cli, ceph, "import", str(f), f"{pool}/raw-import")
                    cli_t.append(time.perf_counter() - t)
        print(f"Image import of a {size // MiB} MiB raw file (half random data, half holes):")
        floor = line("rbd import (CLI)", cli_t, size)
        drv = line("driver import_image", drv_t, size)
        api = line("API upload + import operation", api_t, size)
        print(f"  ratios: driver/rbd {drv / floor:.2f}x, API/rbd {api / floor:.2f}x, "
              f"API/driver {api / drv:.2f}x")
    finally:
        await ops.shutdown()
        await runner.cleanup()
        for pool in pools:
            await asyncio.to_thread(ceph.purge_pool, pool)
        await driver.close()
        await db.close()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * MiB
    with tempfile.TemporaryDirectory(prefix="mc-bench-img-") as tmp:
        files = [make_raw_disk(Path(tmp) / f"d{i}.img", size, seed=100 + i) for i in range(args.runs)]
        with running_ceph(memstore_bytes=max(4 << 30, 8 * size)) as ceph:
            server_db = start_db_server()  # outside the loop: it waits for readiness with asyncio.run
            try:
                asyncio.run(bench(ceph, server_db, files, size))
            finally:
                stop_db_server(server_db)


if __name__ == "__main__":
    main()
