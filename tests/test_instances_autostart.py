"""Instances across a daemon restart, on real backends (libvirt test:///): the graceful stop
shuts running guests down recording RUNNING, the reconciler's first pass starts them again by
`boot.autostart` and `volatile.last_state.power`; a user's stop is kept; after a kill (guests
gone, nothing recorded) the last recorded state decides."""

from __future__ import annotations

import asyncio

import pytest

from microcloudd.api import instances as api
from microcloudd.api.errors import InvalidArgument
from microcloudd.db.records import Instance
from microcloudd.drivers.compute.types import PowerState
from microcloudd.services import instance_autostart as autostart
from microcloudd.services import instance_launch, instance_power, instances
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_reconciler import InstanceReconciler, Report

LAST = autostart.LAST_STATE


async def launched(cloud: Cloud, name: str, start: bool, config: dict[str, str] | None = None) -> None:
    rec = await instances.prepare(cloud, api.InstancesPost(name=name, source=api.InstanceSource(alias="test"),
                                                           start=start, config=config or {}))
    await instance_launch.launch(cloud, await instance_launch.insert_row(cloud, rec))


async def power(cloud: Cloud) -> dict[str, str]:
    assert cloud.compute
    return {d.name: str(d.state) for d in await cloud.compute.list_owned()}


def last(cloud: Cloud) -> dict[str, str | None]:
    assert cloud.db
    return {r.name: r.config.get(LAST) for r in cloud.db.all(Instance)}


async def test_graceful_stop_and_restart_bring_back_what_ran(cloud: Cloud) -> None:
    assert cloud.compute and cloud.db
    await launched(cloud, "run1", start=True)
    await launched(cloud, "run2", start=True)
    await launched(cloud, "idle", start=False)
    await launched(cloud, "never", start=True, config={"boot.autostart": "false"})
    await launched(cloud, "always", start=False, config={"boot.autostart": "true"})
    await instance_power.run(cloud, "run2", "stop")  # the user's stop is kept across restarts
    assert last(cloud)["run2"] == "STOPPED"

    first = InstanceReconciler(cloud, interval=3600)
    await first.run_once()
    assert (await power(cloud))["always"] == PowerState.RUNNING  # autostart true: the first start runs it
    down = await first.shutdown_instances(budget=10)
    assert sorted(down) == ["always", "never", "run1"]
    assert set((await power(cloud)).values()) == {PowerState.STOPPED}
    assert await first.run_once() == Report()  # no pass while stopping
    assert last(cloud) == {"run1": "RUNNING", "run2": "STOPPED", "idle": None, "never": "RUNNING",
                           "always": "RUNNING"}

    second = InstanceReconciler(cloud, interval=3600)  # the daemon started again
    rep = await second.run_once()
    assert sorted(rep.started) == ["always", "run1"] and not rep.errors
    assert await power(cloud) == {"run1": PowerState.RUNNING, "run2": PowerState.STOPPED,
                                  "idle": PowerState.STOPPED, "never": PowerState.STOPPED,
                                  "always": PowerState.RUNNING}
    status = {r.name: r.status for r in cloud.db.all(Instance)}
    assert status == {"run1": "Running", "run2": "Stopped", "idle": "Stopped", "never": "Stopped",
                      "always": "Running"}
    assert (await second.run_once()).started == []  # only the first pass starts anything


async def test_after_a_kill_the_last_recorded_state_decides(cloud: Cloud) -> None:
    assert cloud.compute and cloud.db
    await launched(cloud, "k1", start=True)
    await launched(cloud, "k2", start=True)
    await instance_power.run(cloud, "k2", "stop")
    await instance_power.run(cloud, "k2", "start")
    await instance_power.run(cloud, "k2", "stop", force=True)
    await launched(cloud, "k3", start=True)
    assert last(cloud) == {"k1": None, "k2": "STOPPED", "k3": None}  # k1, k3: status says Running
    for name in ("k1", "k3"):  # libvirtd died with the daemon: the guests are gone, nothing recorded
        await cloud.compute.stop(name, force=True)
    rep = await (InstanceReconciler(cloud, interval=3600)).run_once()
    assert sorted(rep.started) == ["k1", "k3"]
    assert last(cloud) == {"k1": "RUNNING", "k2": "STOPPED", "k3": "RUNNING"}
    assert (await power(cloud))["k2"] == PowerState.STOPPED


async def test_a_guest_powering_itself_off_stays_off(cloud: Cloud) -> None:
    assert cloud.compute and cloud.db
    await launched(cloud, "g1", start=True)
    r = InstanceReconciler(cloud, interval=3600)
    await r.run_once()  # the member's start is over (else it might start g1 again: not the point here)
    await r.start()  # libvirt's events: the STOPPED of a stop that is not ours
    try:
        await cloud.compute.stop("g1", force=True)  # as the guest's own power-off
        async with asyncio.timeout(30):  # liveness, not speed: a loaded machine is slow
            while cloud.db.get(Instance, "g1").config.get(LAST) != "STOPPED":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await r.stop()
    assert cloud.db.get(Instance, "g1").status == "Stopped"
    assert (await InstanceReconciler(cloud, interval=3600).run_once()).started == []  # after a restart


@pytest.mark.parametrize("value", ["maybe", "", "2"])
async def test_autostart_must_be_a_boolean(cloud: Cloud, value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"boot\.autostart"):
        await launched(cloud, "bad", start=False, config={"boot.autostart": value})
    assert cloud.db and cloud.db.get_or_none(Instance, "bad") is None
