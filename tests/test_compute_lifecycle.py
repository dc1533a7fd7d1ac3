"""Every lifecycle call libvirt's test:/// driver supports, through the async driver."""

from __future__ import annotations

import uuid

import pytest

from microcloudd.api.errors import Conflict, NotFound
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.types import Disk, Nic, PowerState
from tests.fixtures.libvirt import make_spec, random_mac, rbd_image


async def test_define_start_freeze_stop_undefine(compute: LibvirtDriver) -> None:
    spec = make_spec(vcpus=2, memory_mib=512)
    parsed = await compute.define(spec)
    assert (parsed.uuid, parsed.owner, parsed.vcpus) == (spec.uuid, compute.owner, 2)
    st = await compute.state(spec.name)
    assert st.state == PowerState.STOPPED and st.instance == spec.instance and st.project == "default"
    assert st.virt_type == compute.virt_type

    await compute.start(spec.name)
    st = await compute.state(spec.name)
    assert st.state == PowerState.RUNNING and st.vcpus == 2 and st.memory_kib == 512 * 1024
    assert st.cpu_time_ns > 0

    await compute.freeze(spec.name)
    assert (await compute.state(spec.name)).state == PowerState.FROZEN
    await compute.freeze(spec.name)  # already frozen: nothing to do
    await compute.unfreeze(spec.name)
    assert (await compute.state(spec.name)).state == PowerState.RUNNING

    await compute.reboot(spec.name)
    await compute.reboot(spec.name, force=True)
    assert (await compute.state(spec.name)).state == PowerState.RUNNING

    assert await compute.stop(spec.name, grace=5) is True  # the test driver shuts down at once
    assert (await compute.state(spec.name)).state == PowerState.STOPPED
    assert await compute.stop(spec.name) is False  # stopped already: left alone

    await compute.start(spec.name)
    assert await compute.stop(spec.name, force=True) is False
    assert (await compute.state(spec.name)).state == PowerState.STOPPED

    assert await compute.undefine(spec.name) is True
    assert await compute.exists(spec.name) is False
    assert await compute.undefine(spec.name) is False  # idempotent delete


async def test_define_is_idempotent_and_updates(compute: LibvirtDriver) -> None:
    spec = make_spec(memory_mib=256)
    await compute.define(spec)
    again = await compute.define(spec)  # a retry
    assert again.memory_kib == 256 * 1024
    bigger = await compute.define(make_spec(spec.instance, uuid=spec.uuid, memory_mib=1024))
    assert bigger.memory_kib == 1024 * 1024
    assert [s.name for s in await compute.list_owned()] == [spec.name]


async def test_frozen_stop_and_forced_delete_of_running(compute: LibvirtDriver) -> None:
    spec = make_spec()
    await compute.define(spec)
    await compute.start(spec.name)
    await compute.freeze(spec.name)
    assert await compute.stop(spec.name, grace=5) is True  # resumed, then shut down
    await compute.start(spec.name)
    assert await compute.undefine(spec.name, force=True) is True
    assert not await compute.exists(spec.name)


async def test_list_owned_sees_only_our_domains(compute: LibvirtDriver) -> None:
    other = await LibvirtDriver.connect("test:///default", owner=f"other-{uuid.uuid4().hex[:6]}")
    try:
        mine = [make_spec() for _ in range(3)]
        theirs = make_spec()
        for s in mine:
            await compute.define(s)
        await other.define(theirs)
        assert sorted(s.name for s in await compute.list_owned()) == sorted(s.name for s in mine)
        # someone else's domain (and the test driver's own "test") is invisible to us
        with pytest.raises(NotFound):
            await compute.state(theirs.name)
        with pytest.raises(NotFound):
            await compute.start("test")
        assert await compute.undefine(theirs.name) is False
        assert await other.exists(theirs.name)
    finally:
        await other.undefine(theirs.name, force=True)
        await other.close()


async def test_limits_apply_at_next_start_or_live_within_maximum(compute: LibvirtDriver) -> None:
    spec = make_spec(vcpus=1, memory_mib=256, max_vcpus=4, max_memory_mib=1024)
    await compute.define(spec)
    change = await compute.set_limits(spec.name, vcpus=2, memory_mib=512)
    assert (change.live, change.next_start) == (False, True)
    parsed = await compute.get(spec.name)
    assert (parsed.vcpus, parsed.memory_kib) == (2, 512 * 1024)

    await compute.start(spec.name)
    live = await compute.set_limits(spec.name, vcpus=3, memory_mib=768)
    assert live.live is True
    st = await compute.state(spec.name)
    assert (st.vcpus, st.memory_kib) == (3, 768 * 1024)
    beyond = await compute.set_limits(spec.name, vcpus=8)  # above the maximum: next start only
    assert (beyond.live, beyond.next_start) == (False, True)
    assert (await compute.get(spec.name)).vcpus == 8
    await compute.stop(spec.name, force=True)
    await compute.start(spec.name)
    assert (await compute.state(spec.name)).vcpus == 8


async def test_disks_and_nics_on_a_stopped_domain(compute: LibvirtDriver) -> None:
    # test:/// cannot hot-plug; live attach/detach runs in integration/ on a real libvirtd
    spec = make_spec()
    await compute.define(spec)
    vol = Disk(rbd_image("custom-vol-1"))
    assert await compute.attach_disk(spec.name, vol) == "vdb"
    assert await compute.attach_disk(spec.name, vol) == "vdb"  # idempotent per image
    assert await compute.attach_disk(spec.name, Disk(rbd_image("custom-vol-2"))) == "vdc"
    with pytest.raises(Conflict):
        await compute.attach_disk(spec.name, Disk(rbd_image("custom-vol-3"), target="vdb"))
    parsed = await compute.get(spec.name)
    assert [(d.source.image, d.target) for d in parsed.disks] == [("custom-vol-1", "vdb"),
                                                                  ("custom-vol-2", "vdc")]
    assert parsed.root == spec.root and parsed.seed == spec.seed  # untouched
    assert await compute.detach_disk(spec.name, "vdb") is True
    assert await compute.detach_disk(spec.name, "vdb") is False
    with pytest.raises(NotFound):
        await compute.detach_disk(spec.name, "vdb", if_exists=False)

    nic = Nic(mac=random_mac(), port_id=str(uuid.uuid4()))
    await compute.attach_nic(spec.name, nic)
    await compute.attach_nic(spec.name, nic)  # idempotent per MAC
    assert (await compute.get(spec.name)).nics == [*spec.nics, nic]
    assert await compute.detach_nic(spec.name, nic.mac) is True
    assert await compute.detach_nic(spec.name, nic.mac) is False
    assert (await compute.get(spec.name)).nics == list(spec.nics)
