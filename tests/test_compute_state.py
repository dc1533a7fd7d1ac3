"""Domain state read in one stats call for many domains stays true to libvirt: after changes
made behind the driver's back on another connection, after redefinitions and metadata
changes, and for listings of many domains of several owners."""

from __future__ import annotations

import dataclasses
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt
import pytest

from microcloudd.api.errors import NotFound
from microcloudd.drivers.compute import domain_xml as dx
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.libvirt_thread import LibvirtThread
from microcloudd.drivers.compute.types import METADATA_NS, EventKind, PowerState
from tests.fixtures.libvirt import TEST_URI, make_spec, unique

T = TypeVar("T")


async def behind_our_back(fn: Callable[[libvirt.virConnect], T]) -> T:
    """`fn(conn)` on a second, raw connection to the same test driver (on the libvirt thread,
    where every libvirt call of this process runs)."""

    def job() -> T:
        conn = libvirt.open(TEST_URI)
        try:
            return fn(conn)
        finally:
            conn.close()

    return await LibvirtThread.get().call(job)


async def wait_event(sub: Any, name: str, kind: EventKind) -> None:
    while True:
        ev = await sub.get(wait=5)
        if ev.name == name and ev.kind == kind:
            return


async def test_power_changes_behind_our_back_show_at_once(compute: LibvirtDriver) -> None:
    spec = make_spec(vcpus=2, memory_mib=512)
    await compute.define(spec)
    assert (await compute.state(spec.name)).state is PowerState.STOPPED
    await behind_our_back(lambda c: c.lookupByName(spec.name).create())
    for st in (await compute.state(spec.name), (await compute.list_owned([spec.name]))[0],
               next(s for s in await compute.list_owned() if s.name == spec.name)):
        assert st.state is PowerState.RUNNING and (st.vcpus, st.memory_kib) == (2, 512 * 1024)
        assert st.cpu_time_ns > 0 and st.virt_type == compute.virt_type
    await behind_our_back(lambda c: c.lookupByName(spec.name).suspend())
    assert (await compute.state(spec.name)).state is PowerState.FROZEN
    await behind_our_back(lambda c: c.lookupByName(spec.name).destroy())
    st = (await compute.list_owned([spec.name]))[0]
    assert st.state is PowerState.STOPPED and st.cpu_time_ns == 0


async def test_a_domain_redefined_behind_our_back_is_read_again(compute: LibvirtDriver) -> None:
    """Someone else's definition replaces ours (same name and UUID): after libvirt's DEFINED
    event the domain is no longer ours; handed back, it is ours again."""
    spec = make_spec()
    await compute.define(spec)
    assert [s.name for s in await compute.list_owned()] == [spec.name]  # its definition is now known
    theirs = dx.build_domain_xml(spec, "someone-else", compute.virt_type)
    with compute.subscribe() as sub:
        await behind_our_back(lambda c: c.defineXML(theirs))
        await wait_event(sub, spec.name, EventKind.DEFINED)
    assert await compute.list_owned() == []
    assert await compute.list_owned([spec.name]) == []
    with pytest.raises(NotFound):
        await compute.state(spec.name)
    bigger = dataclasses.replace(spec, vcpus=3, memory_mib=768)  # and its figures changed
    ours = dx.build_domain_xml(bigger, compute.owner, compute.virt_type)
    with compute.subscribe() as sub:
        await behind_our_back(lambda c: c.defineXML(ours))
        await wait_event(sub, spec.name, EventKind.DEFINED)
    st = (await compute.list_owned())[0]
    assert (st.instance, st.state, st.vcpus) == (spec.instance, PowerState.STOPPED, 3)
    assert st.memory_kib == st.max_memory_kib == 768 * 1024
    await compute.undefine(spec.name)


async def test_metadata_changed_behind_our_back_is_read_again(compute: LibvirtDriver) -> None:
    spec = make_spec()
    await compute.define(spec)
    assert (await compute.state(spec.name)).instance == spec.instance
    md = (f"<instance><owner>{compute.owner}</owner><name>renamed</name>"
          f"<project>default</project></instance>")

    def set_metadata(c: libvirt.virConnect) -> None:
        c.lookupByName(spec.name).setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, md, "microcloud",
                                              METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    await behind_our_back(set_metadata)
    for _ in range(100):  # the metadata-change event arrives on our connection shortly
        if (await compute.state(spec.name)).instance == "renamed":
            break
        await LibvirtThread.get().call(lambda: None)
    assert (await compute.state(spec.name)).instance == "renamed"


async def test_our_own_redefinitions_are_seen_without_waiting_for_events(compute: LibvirtDriver) -> None:
    spec = make_spec(vcpus=1, memory_mib=256, max_vcpus=4, max_memory_mib=1024)
    await compute.define(spec)
    await compute.state(spec.name)
    await compute.set_limits(spec.name, vcpus=3, memory_mib=768)
    st = (await compute.list_owned([spec.name]))[0]
    assert (st.vcpus, st.memory_kib) == (3, 768 * 1024)
    await compute.undefine(spec.name)
    assert await compute.list_owned([spec.name]) == []
    again = make_spec(spec.instance, uuid=str(uuid.uuid4()))  # same name, new UUID
    await compute.define(again)
    assert [s.uuid for s in await compute.list_owned()] == [again.uuid]


async def test_many_domains_of_several_owners_listed_in_one_call(compute: LibvirtDriver) -> None:
    other = await LibvirtDriver.connect(TEST_URI, owner=unique("other"))
    mine = [make_spec(vcpus=1 + i % 3, memory_mib=128 * (1 + i % 4)) for i in range(120)]
    theirs = [make_spec() for _ in range(30)]
    try:
        for s in mine:
            await compute.define(s)
        for s in theirs:
            await other.define(s)
        running, frozen = mine[::3], mine[::6]
        for s in running:
            await compute.start(s.name)
        for s in frozen:
            await compute.freeze(s.name)
        listed = {s.name: s for s in await compute.list_owned()}
        assert set(listed) == {s.name for s in mine}
        for s in mine:
            one = listed[s.name]
            alone = await compute.state(s.name)  # the same as one domain at a time
            assert dataclasses.replace(one, cpu_time_ns=0) == dataclasses.replace(alone, cpu_time_ns=0)
            assert (one.instance, one.uuid, one.vcpus, one.max_memory_kib) == \
                (s.instance, s.uuid, s.vcpus, s.memory_mib * 1024)
            want = PowerState.FROZEN if s in frozen else PowerState.RUNNING if s in running \
                else PowerState.STOPPED
            assert one.state is want and (one.cpu_time_ns > 0) == (s in running)
        some = [mine[5].name, theirs[0].name, "nonexistent", mine[5].name, mine[7].name]
        assert sorted(s.name for s in await compute.list_owned(some)) == sorted([mine[5].name, mine[7].name])
        assert {s.name for s in await other.list_owned()} == {s.name for s in theirs}
    finally:
        for s in theirs:
            await other.undefine(s.name, force=True)
        await other.close()


async def test_a_domain_without_our_metadata_is_never_listed(compute: LibvirtDriver) -> None:
    spec = make_spec()
    root = ET.fromstring(dx.build_domain_xml(spec, compute.owner, compute.virt_type))
    md = root.find("metadata")
    assert md is not None
    root.remove(md)
    bare = ET.tostring(root, encoding="unicode")
    await behind_our_back(lambda c: c.defineXML(bare))
    try:
        assert spec.name not in {s.name for s in await compute.list_owned()}
        assert await compute.list_owned([spec.name]) == []
        assert not await compute.exists(spec.name)
    finally:
        await behind_our_back(lambda c: c.lookupByName(spec.name).undefine())
