"""Microcloud database figures against a real (one-member Raft) ovsdb-server.

    .venv/bin/python -m bench.db [--writes 1000] [--rows 10000]

Prints: single-row write latency (median/p99, insert and update, each a Raft commit),
read latency from the local replica, the time to list 10,000 instance rows, and the time a
fresh client needs to load them.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time

from microcloudd.components.supervisor import Supervisor
from microcloudd.db.database import Database
from microcloudd.db.records import Instance
from microcloudd.db.service import DatabaseService
from tests.fixtures.db import free_port


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def ms(x: float) -> str:
    return f"{x * 1000:.3f} ms"


async def main(writes: int, rows: int) -> None:
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="mc-bench-db-"))
    sup = Supervisor()
    svc = DatabaseService(d, sup, raft_address=f"tcp:127.0.0.1:{free_port()}")
    try:
        await svc.start()
        db = await svc.connect()
        lat: list[float] = []
        for i in range(writes):
            t = time.perf_counter()
            await db.insert(Instance(name=f"w{i}", config={"limits.cpu": "2"}))
            lat.append(time.perf_counter() - t)
        print(f"single-row insert ({writes}): median {ms(statistics.median(lat))}, p99 {ms(pct(lat, 0.99))}")
        lat = []
        for i in range(writes):
            t = time.perf_counter()
            await db.update(Instance, f"w{i}", status="Running")
            lat.append(time.perf_counter() - t)
        print(f"single-row update ({writes}): median {ms(statistics.median(lat))}, p99 {ms(pct(lat, 0.99))}")

        n = 10000
        t = time.perf_counter()
        for i in range(n):
            db.get(Instance, f"w{i % writes}")
        print(f"read one row from the replica: {(time.perf_counter() - t) / n * 1e6:.2f} µs each")

        t = time.perf_counter()
        batch = 1000
        for start in range(writes, rows, batch):
            async with db.transaction() as txn:
                for i in range(start, min(rows, start + batch)):
                    txn.insert(Instance(name=f"w{i}", config={"limits.cpu": "2", "limits.memory": "1GiB"},
                                        devices={"root": {"type": "disk", "pool": "default"}},
                                        profiles=["default"], location="m1"))
        print(f"inserting up to {rows} rows in transactions of {batch}: {time.perf_counter() - t:.2f} s")
        assert len(db.all(Instance)) == rows
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            listed = db.all(Instance)
            lat.append(time.perf_counter() - t)
        print(f"list {len(listed)} instance records: median {ms(statistics.median(lat))}")
        lat = []
        for _ in range(5):
            t = time.perf_counter()
            found = db.find(Instance, location="m1")
            lat.append(time.perf_counter() - t)
        print(f"find among {rows} by location ({len(found)} match): median {ms(statistics.median(lat))}")
        t = time.perf_counter()
        fresh = await Database.connect(svc.remote)
        print(f"fresh client connect + load {len(fresh.all(Instance))} rows: {time.perf_counter() - t:.2f} s")
        await fresh.close()
        await db.close()
    finally:
        await sup.stop_all()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=10000)
    a = ap.parse_args()
    asyncio.run(main(a.writes, a.rows))
