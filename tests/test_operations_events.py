"""Operations (wait, cancel, failure) and the event stream, through a real socket.

The daemon is composed in-process with two extra endpoints of the test's own, so the
machinery is exercised before any resource API uses it; the real CLI still does the
waiting and cancelling over the socket.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from microcloudd.api.declare import Op, Query
from microcloudd.api.errors import Conflict, InvalidArgument, NotFound
from microcloudd.api.server import Operation
from microcloudd.daemon import Daemon
from microcloudd.events import EventBus
from microcloudd.operations import OperationContext, OperationManager
from microcloudd.rest.app import Context

CLI = str(Path(sys.executable).parent / "microcloud")


class SleepBody(msgspec.Struct):
    seconds: float
    fail: bool = False


class NoQuery(Query):
    pass


OPS = (
    Op("POST", "/1.0/test/sleep", "test_sleep", "Sleep in an operation", body=SleepBody, kind="async"),
    Op("GET", "/1.0/test/boom", "test_boom", "A handler that crashes", query=NoQuery),
)


class SleepHandlers:
    def __init__(self, ops: OperationManager) -> None:
        self.ops = ops

    async def test_sleep(self, ctx: Context, body: SleepBody) -> Operation:
        if body.seconds < 0:
            raise InvalidArgument("seconds must not be negative")

        async def work(op: OperationContext) -> dict[str, object]:
            op.progress(stage="sleeping")
            await asyncio.sleep(body.seconds)
            if body.fail:
                raise InvalidArgument("asked to fail")
            return {"slept": body.seconds}

        return self.ops.start("Sleeping", work, resources={"test": ["/1.0/test/sleep"]})

    async def test_boom(self, ctx: Context, query: NoQuery) -> None:
        raise RuntimeError("secret internals")


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = Daemon(tmp_path / "state", "testsrv", extra_ops=OPS)
    d._extra_handlers = (SleepHandlers(d.operations),)
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def http(daemon: Daemon) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket_path)),
                                     base_url="http://localhost") as s:
        yield s


async def cli(daemon: Daemon, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env={"MICROCLOUD_DIR": str(daemon.state_dir), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_async_operation_waited_by_the_cli(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    r = await http.post("/1.0/test/sleep", json={"seconds": 0.5})
    assert r.status == 202
    body = await r.json()
    assert body["type"] == "async" and body["status_code"] == 100
    op_id = body["metadata"]["id"]
    assert r.headers["Location"] == f"/1.0/operations/{op_id}" == body["operation"]
    rc, out, err = await cli(daemon, "operation", "wait", op_id)
    assert rc == 0, err
    assert "Sleeping: Success" in out
    done = await (await http.get(f"/1.0/operations/{op_id}")).json()
    assert done["metadata"]["status_code"] == 200
    assert done["metadata"]["metadata"] == {"stage": "sleeping", "slept": 0.5}


async def test_cancel_through_the_cli(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    op_id = (await (await http.post("/1.0/test/sleep", json={"seconds": 60})).json())["metadata"]["id"]
    rc, _out, err = await cli(daemon, "operation", "cancel", op_id)
    assert rc == 0, err
    op = (await (await http.get(f"/1.0/operations/{op_id}/wait?timeout=5")).json())["metadata"]
    assert (op["status"], op["status_code"]) == ("Cancelled", 401)
    rc, _, err = await cli(daemon, "operation", "cancel", op_id)
    assert rc == 1 and "already finished" in err


async def test_failed_operation_and_wait_timeout(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    op_id = (await (await http.post("/1.0/test/sleep", json={"seconds": 0.1, "fail": True})).json()
             )["metadata"]["id"]
    rc, _, err = await cli(daemon, "operation", "wait", op_id)
    assert rc == 1 and err.strip() == "Error: asked to fail"
    slow = (await (await http.post("/1.0/test/sleep", json={"seconds": 30})).json())["metadata"]["id"]
    op = (await (await http.get(f"/1.0/operations/{slow}/wait?timeout=0.2")).json())["metadata"]
    assert op["status"] == "Running"
    rc, out, _ = await cli(daemon, "operation", "list", "--format", "json")
    assert {o["id"] for o in json.loads(out)} >= {op_id, slow}


async def test_bad_input_is_refused_up_front(http: aiohttp.ClientSession, daemon: Daemon) -> None:
    r = await http.post("/1.0/test/sleep", data=b'{"seconds": ')
    assert r.status == 400 and "Invalid JSON" in (await r.json())["error"]
    r = await http.post("/1.0/test/sleep", json={"seconds": "soon"})
    body = await r.json()
    assert r.status == 400 and "Expected `float`" in body["error"] and "$.seconds" in body["error"]
    r = await http.post("/1.0/test/sleep", json={"seconds": -1})
    assert r.status == 400 and (await r.json())["metadata"]["code"] == "invalid-argument"
    assert daemon.operations.list() == []  # nothing was started


async def test_crash_is_500_with_request_id_and_no_traceback(http: aiohttp.ClientSession) -> None:
    r = await http.get("/1.0/test/boom")
    body = await r.json()
    assert r.status == 500 and body["error_code"] == 500
    rid = body["metadata"]["request_id"]
    assert rid in body["error"]
    text = json.dumps(body)
    assert "secret internals" not in text and "Traceback" not in text


async def test_event_stream_sees_the_operation_lifecycle(daemon: Daemon, http: aiohttp.ClientSession
                                                         ) -> None:
    async with http.ws_connect("/1.0/events?type=operation") as ws:
        op_id = (await (await http.post("/1.0/test/sleep", json={"seconds": 0.1})).json())["metadata"]["id"]
        statuses = []
        while "Success" not in statuses:
            event = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
            assert event["type"] == "operation" and event["location"] == "testsrv"
            if event["metadata"]["id"] == op_id:
                statuses.append(event["metadata"]["status"])
    assert statuses[0] == "Pending" and statuses[-1] == "Success" and "Running" in statuses


async def test_event_filter_and_cli_monitor(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    r = await http.get("/1.0/events?type=bogus")
    assert r.status == 400
    proc = await asyncio.create_subprocess_exec(
        CLI, "monitor", "--type", "operation", "--format", "json",
        env={"MICROCLOUD_DIR": str(daemon.state_dir), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE)
    try:
        for _ in range(100):  # the CLI subscribes asynchronously; wait until it has
            if daemon.events._subs:
                break
            await asyncio.sleep(0.05)
        await http.post("/1.0/test/sleep", json={"seconds": 0})
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert b'"Sleeping"' in line or b"Sleeping" in line
    finally:
        proc.terminate()
        await proc.wait()


async def test_stop_cancels_running_operations(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "s", "x", extra_ops=OPS)
    d._extra_handlers = (SleepHandlers(d.operations),)
    await d.start()
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(d.socket_path))) as s:
        r = await s.post("http://localhost/1.0/test/sleep", json={"seconds": 60})
        op_id = (await r.json())["metadata"]["id"]
    await asyncio.wait_for(d.stop(), 5)
    assert d.operations.get(op_id).status == "Cancelled"
    assert not d.socket_path.exists()


async def test_finished_operations_expire_on_their_own() -> None:
    """A finished operation stays readable for `keep_finished`, then goes without anyone asking
    (a burst of launches on an idle daemon is not kept alive until the next request)."""
    ops = OperationManager(EventBus(), keep_finished=0.3)

    async def work(ctx: OperationContext) -> dict[str, int]:
        return {"answer": 42}

    op = ops.start("quick", work)
    await ops.wait(op.id)
    assert ops.get(op.id).status == "Success" and ops.get(op.id).metadata == {"answer": 42}
    assert (await ops.wait(op.id)).status == "Success"  # a late waiter gets it at once
    with pytest.raises(Conflict):
        await ops.cancel(op.id)
    await asyncio.sleep(0.6)
    with pytest.raises(NotFound):
        ops.get(op.id)
    with pytest.raises(NotFound):
        await ops.wait(op.id)
    assert ops._ops == {} and ops._finished == {} and ops._sweep is None


async def test_finished_operations_are_capped_oldest_first() -> None:
    """However fast operations finish, at most `keep_max` finished ones are kept; the oldest
    go first and the sweep timer still drops the rest on time."""
    ops = OperationManager(EventBus(), keep_finished=0.3, keep_max=3)

    async def work(ctx: OperationContext) -> None:
        return None

    ids = []
    for _ in range(5):
        op = ops.start("quick", work)
        await ops.wait(op.id)
        ids.append(op.id)
    assert [o.id for o in ops.list()] == ids[2:]
    with pytest.raises(NotFound):
        ops.get(ids[0])
    await asyncio.sleep(0.6)
    assert ops.list() == [] and ops._sweep is None
