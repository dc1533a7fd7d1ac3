"""libvirt lifecycle events arrive in asyncio as typed events; the loop never blocks."""

from __future__ import annotations

import asyncio

from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.types import EventKind, LifecycleEvent
from tests.fixtures.libvirt import make_spec, unique

K = EventKind


async def events_for(sub, name: str, count: int) -> list[LifecycleEvent]:  # type: ignore[no-untyped-def]
    got: list[LifecycleEvent] = []
    while len(got) < count:
        ev = await sub.get(wait=5)
        if ev.name == name:
            got.append(ev)
    return got


async def test_lifecycle_events_in_order(compute: LibvirtDriver) -> None:
    spec = make_spec()
    with compute.subscribe() as sub:
        await compute.define(spec)
        await compute.start(spec.name)
        await compute.freeze(spec.name)
        await compute.unfreeze(spec.name)
        await compute.stop(spec.name, force=True)
        await compute.undefine(spec.name)
        got = await events_for(sub, spec.name, 6)
    assert [e.kind for e in got] == [K.DEFINED, K.STARTED, K.SUSPENDED, K.RESUMED, K.STOPPED, K.UNDEFINED]
    assert {e.uuid for e in got} == {spec.uuid}


async def test_every_subscriber_gets_every_event_and_the_loop_stays_free(compute: LibvirtDriver) -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    hb = asyncio.create_task(heartbeat())
    specs = [make_spec() for _ in range(10)]
    with compute.subscribe() as a, compute.subscribe() as b:
        await asyncio.gather(*(compute.define(s) for s in specs))
        await asyncio.gather(*(compute.start(s.name) for s in specs))
        for sub in (a, b):
            seen = {s.name: [] for s in specs}  # type: dict[str, list[EventKind]]
            while any(len(v) < 2 for v in seen.values()):
                ev = await sub.get(wait=5)
                if ev.name in seen:
                    seen[ev.name].append(ev.kind)
            assert all(v == [K.DEFINED, K.STARTED] for v in seen.values())
    hb.cancel()
    assert ticks > 0


async def test_closed_subscription_and_driver_get_no_more_events() -> None:
    drv = await LibvirtDriver.connect("test:///default", owner=unique("ev-owner"))
    spec = make_spec()
    sub = drv.subscribe()
    sub.close()
    await drv.define(spec)
    await drv.undefine(spec.name)
    await asyncio.sleep(0.1)
    assert sub._queue.empty()
    live = drv.subscribe()
    await drv.close()  # deregisters its callback before closing the connection
    other = await LibvirtDriver.connect("test:///default", owner=unique("ev-owner"))
    try:
        await other.define(make_spec(spec.instance))
        await other.undefine(spec.name)
        await asyncio.sleep(0.1)
        assert live._queue.empty()
    finally:
        await other.close()
