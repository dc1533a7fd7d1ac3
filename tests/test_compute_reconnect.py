"""The libvirt driver survives a libvirtd crash: a real private libvirtd is SIGKILLed and started
again on the same state and socket, and the same driver object carries on (its domains, new
definitions, lifecycle events of the new connection); while libvirtd is down a call fails
with Unavailable within the driver's bound instead of hanging; nothing is left behind."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from microcloudd.api.errors import Unavailable
from microcloudd.drivers.compute.events import Subscription, is_resync
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.types import EventKind, LifecycleEvent, PowerState
from tests.fixtures.libvirt import TEST_URI, PrivateLibvirtd, make_spec, running_libvirtd, unique

WAIT = 1.0  # the driver's reconnect_wait in these tests


@pytest.fixture
def lvd() -> Iterator[PrivateLibvirtd]:
    with running_libvirtd() as lvd:
        yield lvd


def clients(lvd: PrivateLibvirtd) -> int:
    """Client connections libvirtd has open right now (its admin interface, from virt-admin)."""
    admin = f"libvirtd:///system?socket={lvd.state_dir}/sock/libvirt-admin-sock"
    out = subprocess.run(["virt-admin", "-c", admin, "srv-clients-list", "libvirtd"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    # header, a dashed line, then one row per client (virt-admin itself talks to the admin server)
    return sum(1 for line in out.splitlines()[2:] if line.strip())


def reconnect_threads() -> list[str]:
    # the process-wide "libvirt" thread stays by design; a driver's reconnect thread must not
    return [t.name for t in threading.enumerate() if t.name == "libvirt-reconnect"]


async def next_event(sub: Subscription, want: str, wait: float = 10.0) -> LifecycleEvent:
    """The next event of domain `want` ("" for the resync marker), skipping others."""
    deadline = time.monotonic() + wait
    while True:
        ev = await sub.get(wait=max(0.01, deadline - time.monotonic()))
        if (is_resync(ev) and want == "") or (ev.name == want and want):
            return ev


async def test_driver_carries_on_after_libvirtd_is_killed_and_restarted(lvd: PrivateLibvirtd) -> None:
    drv = await LibvirtDriver.connect(lvd.uri, owner=unique("rc-owner"), reconnect_wait=WAIT)
    try:
        first = make_spec()
        await drv.define(first)
        assert await asyncio.to_thread(clients, lvd) == 1
        with drv.subscribe() as sub:
            await asyncio.to_thread(lvd.kill)

            # down: a read and a write each fail with Unavailable within the bound, no hang
            for call in (drv.list_owned(), drv.define(make_spec()), drv.start(first.name)):
                t0 = time.monotonic()
                with pytest.raises(Unavailable, match="unreachable") as err:
                    await asyncio.wait_for(call, WAIT + 3)
                took = time.monotonic() - t0
                assert took < WAIT + 1.0, f"Unavailable after {took:.1f} s"
                assert lvd.uri in str(err.value) and "reconnecting for" in str(err.value)

            # a call made while down that libvirtd comes back in time for succeeds
            waiting = asyncio.create_task(drv.exists(first.name))
            drv.reconnect_wait = 30.0
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await asyncio.to_thread(lvd.start)
            assert await asyncio.wait_for(waiting, 10) is True
            await next_event(sub, "")  # the resync marker: events of the outage may be lost

            # the same driver object: old definition, new definition, events of the new connection
            assert [s.name for s in await drv.list_owned()] == [first.name]
            assert (await drv.get(first.name)).uuid == first.uuid
            second = make_spec()
            await drv.define(second)
            assert (await next_event(sub, second.name)).kind is EventKind.DEFINED
            assert sorted(s.name for s in await drv.list_owned()) == sorted([first.name, second.name])
            await drv.undefine(second.name)
            assert (await next_event(sub, second.name)).kind is EventKind.UNDEFINED
            await drv.undefine(first.name)
            # exactly one connection of ours: the dead one was closed, not leaked
            assert await asyncio.to_thread(clients, lvd) == 1
    finally:
        await drv.close()
    assert await asyncio.to_thread(clients, lvd) == 0
    assert not reconnect_threads()
    await asyncio.to_thread(lvd.running.stop)
    assert lvd.running.proc.returncode == 0
    left = (await asyncio.to_thread(subprocess.run, ["pgrep", "-af", str(lvd.state_dir)], capture_output=True,
                                    text=True)).stdout
    assert left == "", f"processes left behind: {left}"


async def test_close_while_libvirtd_is_down_stops_reconnecting(lvd: PrivateLibvirtd) -> None:
    drv = await LibvirtDriver.connect(lvd.uri, owner=unique("rc-owner"), reconnect_wait=30)
    await asyncio.to_thread(lvd.kill)
    waiting = asyncio.create_task(drv.list_owned())
    await asyncio.sleep(0.5)  # loss noticed, reconnect thread retrying
    assert not waiting.done()
    assert reconnect_threads()
    t0 = time.monotonic()
    await drv.close()
    with pytest.raises(Unavailable, match="driver is closed"):
        await asyncio.wait_for(waiting, 2)
    assert time.monotonic() - t0 < 2
    assert not reconnect_threads()
    # libvirtd back after the close: the closed driver does not reconnect behind our back
    await asyncio.to_thread(lvd.start)
    await asyncio.sleep(0.5)
    assert await asyncio.to_thread(clients, lvd) == 0
    with pytest.raises(Unavailable, match="driver is closed"):
        await drv.list_owned()


async def test_a_start_whose_own_connection_does_not_answer_fails_unavailable() -> None:
    """A guest start runs on a connection of its own (drivers/compute/libvirt.py, _run_long). A
    libvirtd that accepts that connection but does not answer (starting up, stuck) must not
    hang the start: Unavailable after the driver's bound, and the blocked open is let go."""
    drv = await LibvirtDriver.connect(TEST_URI, owner=unique("rc-owner"), reconnect_wait=0.5)
    with tempfile.TemporaryDirectory(prefix="mc-mute-", dir="/tmp") as tmp, \
            socket.socket(socket.AF_UNIX) as mute:
        mute.bind(f"{tmp}/sock")
        mute.listen(8)  # the kernel accepts; nobody ever answers
        try:
            spec = make_spec()
            await drv.define(spec)
            drv._uri = f"qemu:///system?socket={tmp}/sock"  # only the start's own connection goes there
            t0 = time.monotonic()
            with pytest.raises(Unavailable, match="does not answer") as err:
                await asyncio.wait_for(drv.start(spec.name), 20)
            took = time.monotonic() - t0
            assert 4 < took < 10, f"Unavailable after {took:.1f} s"  # the floor: 5 s + 1 s grace
            assert tmp in str(err.value)
            drv._uri = TEST_URI
            assert (await drv.state(spec.name)).state is PowerState.STOPPED
            await drv.undefine(spec.name)
        finally:
            drv._uri = TEST_URI
            mute.close()  # the abandoned open fails now and its long thread is free again
            await drv.close()
