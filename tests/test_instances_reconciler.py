"""The instance reconciler on real backends: half-done launches and deletes (as a crash leaves
them) are finished, orphans removed, a lost domain re-defined, a guest's own power-off seen."""

from __future__ import annotations

import asyncio

import msgspec

from microcloudd.api import instances as api
from microcloudd.db.records import Instance
from microcloudd.drivers.compute.types import RESYNC
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.services import instance_launch, instance_seed, instances, network_ports
from microcloudd.services import instance_spec as isp
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_reconciler import InstanceReconciler
from tests.fixtures.cloud import leftovers, run

NOTHING: dict[str, list[str]] = {"domains": [], "volumes": [], "ports": []}


async def prepared(cloud: Cloud, name: str, start: bool = False) -> Instance:
    """The row of a launch that got no further than writing it (as after a crash)."""
    rec = await instances.prepare(cloud, api.InstancesPost(name=name, source=api.InstanceSource(alias="test"),
                                                           start=start))
    return await instance_launch.insert_row(cloud, rec)


async def test_half_done_launches_are_finished(cloud: Cloud) -> None:
    assert cloud.storage and cloud.compute and cloud.db
    pool = cloud.settings["storage.pool"]
    bare = await prepared(cloud, "h0")  # only the row
    cloned = await prepared(cloud, "h1", start=True)  # row + clone + port + seed
    await cloud.storage.create_root_disk(pool, "h1", cloned.image, may_exist=True)
    await network_ports.attach_port(cloud, "net0", "h1", "eth0", mac=isp.mac(cloned, "eth0"))
    await instance_seed.write_seed(cloud.storage, pool, cloned)

    report = await InstanceReconciler(cloud).run_once()
    assert sorted(report.finished) == ["h0", "h1"] and not report.errors
    for name in ("h0", "h1"):
        assert cloud.db.get(Instance, name).stage == "created"
        assert await cloud.compute.exists(name)
    assert (await cloud.compute.state("h1")).state == "running"
    assert bare.name == "h0"
    assert await leftovers(cloud) == {"domains": ["h0", "h1"], "volumes": ["h0", "h0-cidata", "h1",
                                                                           "h1-cidata"],
                                      "ports": ["h0/eth0", "h1/eth0"]}


async def test_half_done_deletes_and_orphans_are_removed(cloud: Cloud) -> None:
    assert cloud.storage and cloud.compute and cloud.db
    for name in ("d1", "d2", "o1"):
        await instance_launch.launch(cloud, await prepared(cloud, name))
    # d1: delete marked and its domain gone (killed after that step)
    await cloud.db.update(Instance, "d1", stage="deleting")
    await cloud.compute.undefine("d1")
    # o1: the row vanished under its objects (killed between a delete's last steps, or a restore)
    await cloud.db.delete(Instance, "o1")

    report = await InstanceReconciler(cloud).run_once()
    assert report.removed == ["d1"] and not report.errors
    assert sorted(report.orphans) == sorted([
        "domain o1", f"volume {cloud.settings['storage.pool']}/vm_o1",
        f"volume {cloud.settings['storage.pool']}/vm_o1-cidata",
        f"port {network_ports.store.port_id('net0', 'o1', 'eth0')} (o1/eth0)"])
    assert await leftovers(cloud) == {"domains": ["d2"], "volumes": ["d2", "d2-cidata"], "ports": ["d2/eth0"]}
    assert [r.name for r in cloud.db.all(Instance)] == ["d2"]
    assert (await InstanceReconciler(cloud).run_once()) == type(report)()  # converged: nothing more to do


async def test_failed_completion_removes_cleanly(cloud: Cloud) -> None:
    assert cloud.storage and cloud.db
    rec = await prepared(cloud, "f1")
    # the image went away while the daemon was down: the launch cannot finish
    await cloud.db.update(Instance, "f1", image="0" * 64)
    report = await InstanceReconciler(cloud).run_once()
    assert report.removed == ["f1"] and cloud.db.all(Instance) == []
    assert await leftovers(cloud) == NOTHING
    assert rec.stage == "creating"


async def test_lost_domain_is_redefined_and_guest_poweroff_is_seen(cloud: Cloud) -> None:
    assert cloud.compute and cloud.db
    await instance_launch.launch(cloud, await prepared(cloud, "p1", start=True))
    await cloud.compute.undefine("p1", force=True)  # libvirt lost it (host reboot, say)
    reconciler = InstanceReconciler(cloud)
    report = await reconciler.run_once()
    assert report.redefined == ["p1"]
    assert (await cloud.compute.state("p1")).state == "running"  # it was meant to run

    sub = cloud.events.subscribe(["lifecycle"])
    await reconciler.start()
    try:
        await cloud.compute.stop("p1", force=True)  # as if the guest powered off by itself
        async with asyncio.timeout(30):  # liveness, not speed: CI machines can be loaded
            while True:
                ev = await sub.queue.get()
                assert ev is not None
                if ev.metadata["action"] == "instance-stopped":
                    break
            while cloud.db.get(Instance, "p1").status != "Stopped":  # noqa: ASYNC110 (replica catching up)
                await asyncio.sleep(0.02)
    finally:
        sub.close()
        await reconciler.stop()


async def test_delete_through_the_service_leaves_nothing(cloud: Cloud) -> None:
    rec = await prepared(cloud, "z1")
    await instance_launch.launch(cloud, rec)
    await run(cloud, await instances.delete(cloud, "z1"))
    assert await leftovers(cloud) == NOTHING
    assert cloud.storage is not None
    vols = await cloud.storage.list_volumes(cloud.settings["storage.pool"], type=VolumeType.VM)
    assert vols == [] and msgspec.structs.asdict(rec)["name"] == "z1"


async def test_a_pass_asks_libvirt_once_and_still_sees_a_missed_poweroff(cloud: Cloud) -> None:
    """A pass lists the domains once; per-instance libvirt calls only for what looks wrong."""
    assert cloud.compute and cloud.db
    for name, start in (("c1", True), ("c2", False), ("c3", True)):
        await instance_launch.launch(cloud, await prepared(cloud, name, start=start))
    reconciler = InstanceReconciler(cloud)
    await reconciler.run_once()  # the member's first pass (autostart) is not the one measured
    calls: list[str] = []
    compute = cloud.compute
    for method in ("list_owned", "exists", "state"):
        real = getattr(compute, method)

        def counted(*args: object, _real: object = real, _m: str = method, **kw: object) -> object:
            calls.append(f"{_m}{args}")
            return _real(*args, **kw)  # type: ignore[operator]
        setattr(compute, method, counted)
    try:
        report = await reconciler.run_once()
        assert calls == ["list_owned()"] and not report.errors and not report.orphans
        await compute.stop("c1", force=True)  # powered off while nobody watched the events
        calls.clear()
        report = await reconciler.run_once()
        assert calls == ["list_owned()", "exists('c1',)", "state('c1',)"], calls
        assert cloud.db.get(Instance, "c1").status == "Stopped"
        assert cloud.db.get(Instance, "c3").status == "Running" and not report.errors
    finally:
        for method in ("list_owned", "exists", "state"):
            delattr(compute, method)


async def test_a_libvirt_resync_checks_every_instance(cloud: Cloud) -> None:
    """After the driver reconnects (events of the gap lost), the reconciler passes at once: a
    guest that powered off meanwhile has its row follow without waiting for the next pass."""
    assert cloud.compute and cloud.db
    await instance_launch.launch(cloud, await prepared(cloud, "r1", start=True))
    reconciler = InstanceReconciler(cloud)
    await reconciler.run_once()
    await cloud.compute.stop("r1", force=True)  # no event watcher: as if it happened in the gap
    assert cloud.db.get(Instance, "r1").status == "Running"
    await reconciler.on_event(RESYNC)
    assert cloud.db.get(Instance, "r1").status == "Stopped"
