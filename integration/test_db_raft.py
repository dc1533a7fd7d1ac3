"""Three-member Raft Microcloud database on loopback: SIGKILL the leader during a stream of
writes. Every acknowledged write is there afterwards, none twice, and writes resume."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from microcloudd.components import ovsdb
from microcloudd.db.database import Database
from microcloudd.db.records import Instance
from microcloudd.db.schema import NAME, SCHEMA_PATH
from tests.fixtures.db import free_port
from tests.support import proc


async def test_leader_kill_during_writes() -> None:
    d = Path(tempfile.mkdtemp(prefix="mc-raft-"))
    members = [1, 2, 3]
    raft = {i: f"tcp:127.0.0.1:{free_port()}" for i in members}
    socks = {i: d / f"m{i}.sock" for i in members}
    ctls = {i: ovsdb.ctl_path(d, f"m{i}") for i in members}
    running: dict[int, proc.Running] = {}

    def start_member(i: int) -> None:
        spec = ovsdb.server_spec(f"m{i}", [d / f"m{i}.db"], d, socks[i], log_level="warn")
        running[i] = proc.start(spec, d / "logs")

    db: Database | None = None
    try:
        ovsdb.create_db(d / "m1.db", SCHEMA_PATH, raft[1])
        for i in (2, 3):
            ovsdb.join_db(d / f"m{i}.db", NAME, raft[i], [raft[1]])
        for i in members:
            await asyncio.to_thread(start_member, i)
        t0 = time.monotonic()
        st = await ovsdb.wait_for_leader(list(ctls.values()), NAME, 30)
        while len(st.members) < 3:
            await asyncio.sleep(0.1)
            st = await ovsdb.wait_for_leader(list(ctls.values()), NAME, 30)

        print(f"\nthree-member cluster formed in {(time.monotonic() - t0) * 1000:.0f} ms")
        db = await Database.connect([f"unix:{socks[i]}" for i in members], write_timeout=20)
        acked: list[tuple[str, float]] = []  # (name, time acknowledged)
        failed: list[tuple[str, str]] = []
        stop = asyncio.Event()

        async def writer() -> None:
            assert db is not None
            n = 0
            while not stop.is_set():
                name = f"w{n}"
                try:
                    await db.insert(Instance(name=name, description=str(n)))
                    acked.append((name, time.monotonic()))
                except Exception as e:  # counted and reported
                    failed.append((name, repr(e)))
                n += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(writer())
        await asyncio.sleep(2)
        lst = await ovsdb.wait_for_leader(list(ctls.values()), NAME, 10)
        leader = next(i for i in members if raft[i] == lst.address)
        t_kill = time.monotonic()
        os.kill(running[leader].pid, signal.SIGKILL)
        running[leader].proc.wait()
        await asyncio.sleep(6)
        stop.set()
        await task

        times = [t for _, t in acked]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        after = [t for t in times if t > t_kill]
        print(f"\nleader m{leader} SIGKILLed; acknowledged writes {len(acked)} "
              f"({len(after)} after the kill), failed {len(failed)}; "
              f"longest gap between acknowledgements {max(gaps) * 1000:.0f} ms; "
              f"first ack after the kill {(after[0] - t_kill) * 1000:.0f} ms after it")
        assert after, "writes did not resume after the leader was killed"
        assert not failed, failed[:3]

        # Every acknowledged write is present exactly once, through a fresh client on the survivors.
        survivors = [f"unix:{socks[i]}" for i in members if i != leader]
        check = await Database.connect(survivors)
        names = [i.name for i in check.all(Instance)]
        assert len(names) == len(set(names))
        assert {n for n, _ in acked} <= set(names)
        await check.close()

        # The killed member comes back as a follower and catches up.
        t = time.monotonic()
        await asyncio.to_thread(start_member, leader)
        back = await Database.connect(f"unix:{socks[leader]}", leader_only=False)
        while len(back.all(Instance)) < len(names):
            assert time.monotonic() - t < 30, "restarted member did not catch up"
            await asyncio.sleep(0.05)
        print(f"restarted m{leader} caught up in {(time.monotonic() - t) * 1000:.0f} ms")
        await back.close()
        await db.insert(Instance(name="after-restart"))
    finally:
        if db is not None:
            await db.close()
        for r in running.values():
            r.stop()
        shutil.rmtree(d, ignore_errors=True)
