"""Our OVSDB client against a real ovsdb-server: message framing, changes made by other
clients through raw OVSDB operations, a server that dies and comes back, bad addresses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
from typing import Any

import msgspec
import pytest

from microcloudd.api.errors import Unavailable
from microcloudd.db.database import Database
from microcloudd.db.jsonrpc import Splitter, parse_remote
from microcloudd.db.records import Instance, Volume, VolumeSnapshot
from microcloudd.db.schema import NAME
from tests.fixtures.db import DbServer, start_db_server, stop_db_server
from tests.support import proc


def test_splitter_cuts_at_any_byte() -> None:
    messages = [{"id": 1, "result": {"a": "}{\"\\", "b": [1, {"c": "x\\\"}"}]}},
                {"method": "update3", "params": ["db", "0", {"T": {"u": {"insert": {"n": "é}"}}}}],
                 "id": None},
                {"id": 2, "result": []}]
    stream = b"".join(msgspec.json.encode(m) for m in messages)
    for step in (1, 2, 3, 7, len(stream)):
        split = Splitter()
        out: list[Any] = []
        for i in range(0, len(stream), step):
            out += [json.loads(raw) for raw in split.feed(stream[i:i + step])]
        assert out == messages, step
        assert not split.buf


@pytest.mark.parametrize("bad", ["", "db.sock", "unix:", "tcp:6641", "tcp:host:port", "ptcp:1:2"])
def test_bad_remote_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a database address"):
        parse_remote(bad)
    assert parse_remote("tcp:[::1]:6641") == ("tcp", "::1", 6641)


def _transact(server: DbServer, *ops: dict[str, Any]) -> list[Any]:
    out = subprocess.run(["ovsdb-client", "transact", server.remote, json.dumps([NAME, *ops])],
                         capture_output=True, text=True, check=True)
    result: list[Any] = json.loads(out.stdout)
    assert not any(r and "error" in r for r in result), result
    return result


async def _until(cond: Any, within: float = 5.0) -> None:
    for _ in range(int(within / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_raw_mutations_reach_the_replica(microcloud_db: Database,
                                               microcloud_db_server: DbServer) -> None:
    """Set and map changes made with OVSDB `mutate` arrive as diffs; the replica applies them
    exactly as a fresh full copy sees them, and keeps references resolved through a rename."""
    db = microcloud_db
    await db.insert(Instance(name="vm1", config={"a": "1", "b": "2"}))
    await db.insert(Volume(pool="p", name="v1", used_by=["x", "y"]))
    await db.insert(VolumeSnapshot(volume=("p", "custom", "v1"), name="s1"))
    where = [["name", "==", "vm1"]]
    await asyncio.to_thread(
        _transact, microcloud_db_server,
        {"op": "mutate", "table": "Instance", "where": where, "mutations": [
            ["config", "delete", ["set", ["a"]]], ["config", "insert", ["map", [["c", "3"]]]]]},
        {"op": "update", "table": "Instance", "where": where,
         "row": {"config": ["map", [["b", "20"], ["c", "3"]]], "description": "raw"}},
        {"op": "mutate", "table": "Volume", "where": [["name", "==", "v1"]], "mutations": [
            ["used_by", "delete", ["set", ["x"]]], ["used_by", "insert", ["set", ["z"]]]]},
        {"op": "update", "table": "Volume", "where": [["name", "==", "v1"]], "row": {"name": "v2"}})
    await _until(lambda: db.get_or_none(Volume, ("p", "custom", "v2")) is not None)
    vm = db.get(Instance, "vm1")
    assert (vm.config, vm.description) == ({"b": "20", "c": "3"}, "raw")
    assert db.get(Volume, ("p", "custom", "v2")).used_by == ["y", "z"]
    assert db.get(VolumeSnapshot, (("p", "custom", "v2"), "s1")).name == "s1"  # parent renamed
    fresh = await Database.connect(microcloud_db_server.remote)
    try:
        for cls in (Instance, Volume, VolumeSnapshot):
            assert sorted(map(repr, fresh.all(cls))) == sorted(map(repr, db.all(cls)))
    finally:
        await fresh.close()


async def test_server_restart_resyncs_and_writes_resume() -> None:
    """The server is SIGKILLed: a write meanwhile fails within its timeout with Unavailable and
    changes nothing; once the server is back the replica catches up (a row written by another
    client meanwhile, one deleted) and subscribers see it."""
    server = await asyncio.to_thread(start_db_server)
    db = None
    try:
        db = await Database.connect(server.remote, write_timeout=2)
        await db.insert(Instance(name="kept"))
        await db.insert(Instance(name="doomed"))
        sub = db.subscribe(Instance)
        os.kill(server.running.pid, signal.SIGKILL)
        server.running.proc.wait()
        with pytest.raises(Unavailable, match="did not confirm"):
            await db.insert(Instance(name="lost"))
        assert db.get_or_none(Instance, "lost") is None
        server.running = await asyncio.to_thread(proc.start, server.running.spec, server.dir)
        other = await Database.connect(server.remote)
        await other.insert(Instance(name="meanwhile"))
        await other.delete(Instance, "doomed")
        await other.close()
        await _until(lambda: db is not None and db.get_or_none(Instance, "meanwhile") is not None)
        assert sorted(i.name for i in db.all(Instance)) == ["kept", "meanwhile"]
        seen = {(c.op, c.record.name) for c in [await sub.get(5), await sub.get(5)]}
        assert seen == {("insert", "meanwhile"), ("delete", "doomed")}
        await db.insert(Instance(name="after"))
        assert db.get(Instance, "after").name == "after"
    finally:
        if db is not None:
            await db.close()
        stop_db_server(server)


async def test_no_server_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(Unavailable, match=r"cannot reach the cluster database.*nothing\.sock"):
        await Database.connect(f"unix:{tmp_path}/nothing.sock", write_timeout=1)
    with pytest.raises(Unavailable, match="not a database address"):
        await Database.connect("db.sock", write_timeout=1)


async def test_connecting_during_writes_misses_nothing(microcloud_db: Database,
                                                       microcloud_db_server: DbServer) -> None:
    """Row updates that follow the monitor's reply closely (in the same read) are applied after
    the full copy, not before it: clients connecting while another one writes (from a thread of
    its own, so the server interleaves them) end equal to it."""
    stop = threading.Event()

    async def write() -> None:
        db = await Database.connect(microcloud_db_server.remote)
        n = 0
        while not stop.is_set():
            await db.insert(Instance(name=f"w{n}"))
            await db.update(Instance, f"w{n}", description="updated")
            n += 1
        await db.close()

    writer = asyncio.create_task(asyncio.to_thread(asyncio.run, write()))
    clients = []
    try:
        for _ in range(10):
            clients.append(await Database.connect(microcloud_db_server.remote))
    finally:
        stop.set()
        await writer
    try:
        await microcloud_db.insert(Instance(name="last"))
        want = sorted(map(repr, microcloud_db.all(Instance)))
        for c in clients:
            await _until(lambda c=c: c.get_or_none(Instance, "last") is not None)  # type: ignore[misc]
            assert sorted(map(repr, c.all(Instance))) == want
    finally:
        for c in clients:
            await c.close()
