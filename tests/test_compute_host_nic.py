"""Guest NICs for a host libvirtd (drivers/compute/host_nic.py): the direct NIC's XML, veth
pairs between the host and a real OVS chassis's namespace (created by the test's fixture)
bound to an OVN port id, and the wrapper driver on libvirt's test:/// driver plugging and
unplugging them along the domain's life. Everything made is checked gone at the end."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest

from microcloudd.drivers.compute import domain_xml as dx
from microcloudd.drivers.compute.host_nic import HostNicCompute, HostNics
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.types import Nic, NicKind
from tests.fixtures.libvirt import make_spec, random_mac
from tests.fixtures.ovn import OvsChassis


def links(netns: str | None = None) -> dict[str, dict[str, Any]]:
    prefix = ["-n", netns] if netns else []
    out = subprocess.run(["ip", *prefix, "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def ports(chassis: OvsChassis) -> set[str]:
    return set(chassis.vsctl("list-ports", chassis.bridge).split())


@pytest.fixture
async def nics(ovs_chassis: OvsChassis) -> AsyncIterator[HostNics]:
    n = HostNics(ovs_chassis.netns, ovs_chassis.ovs_db_sock, ovs_chassis.bridge)
    try:
        yield n
    finally:
        for port in await n.list():
            await n.remove(port)


def test_a_direct_nic_is_macvtap_on_the_host_end_and_reads_back() -> None:
    port = str(uuid.uuid4())
    nic = Nic(mac=random_mac(), port_id=port, kind=NicKind.DIRECT, host_dev="mcv0123456789ab")
    spec = make_spec(nics=(nic,))
    iface = ET.fromstring(dx.build_domain_xml(spec, "me", "qemu")).find("devices/interface")
    assert iface is not None and iface.get("type") == "direct"
    assert iface.find("source").attrib == {"dev": "mcv0123456789ab", "mode": "passthrough"}  # type: ignore[union-attr]
    assert iface.find("mac").get("address") == nic.mac  # type: ignore[union-attr]
    assert iface.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert iface.find("driver/host").get("csum") == "off"  # type: ignore[union-attr]
    assert iface.find("virtualport") is None
    parsed = dx.parse_domain_xml(dx.build_domain_xml(spec, "me", "qemu")).nics
    assert parsed == [dataclasses.replace(nic, bridge="")]


async def test_a_veth_per_port_bound_to_it_idempotent_and_removed(nics: HostNics,
                                                                  ovs_chassis: OvsChassis) -> None:
    port, mac = str(uuid.uuid4()), random_mac()
    host, peer = nics.names(port)
    assert len(host) == len(peer) == 15 and host != peer
    assert await nics.ensure(port, mac) == host
    assert await nics.ensure(port, mac) == host  # again: the same pair, nothing added
    on_host, in_ns = links(), links(ovs_chassis.netns)
    assert host in on_host and peer not in on_host and peer in in_ns
    assert on_host[host]["ifalias"] == f"microcloud:{ovs_chassis.netns}:{port}"
    assert "UP" in on_host[host]["flags"] and "UP" in in_ns[peer]["flags"]
    assert ovs_chassis.vsctl("get", "Interface", peer, "external_ids:iface-id").strip().strip('"') == port
    assert ovs_chassis.vsctl("get", "Interface", peer, "external_ids:attached-mac").strip().strip('"') == mac
    assert peer in ports(ovs_chassis)
    assert await nics.list() == {port: host}
    # another member's namespace, same port id: other names, not listed as ours
    other = HostNics("microcloud-other", ovs_chassis.ovs_db_sock)
    assert other.names(port)[0] != host and await other.list() == {}

    assert await nics.remove(port) is True
    assert host not in links() and peer not in links(ovs_chassis.netns) and peer not in ports(ovs_chassis)
    assert await nics.remove(port) is False
    assert await nics.list() == {}


async def test_a_half_made_pair_is_finished(nics: HostNics, ovs_chassis: OvsChassis) -> None:
    """A crash may leave only the namespace end (a host end deleted by hand, say)."""
    port = str(uuid.uuid4())
    host, peer = nics.names(port)
    await asyncio.to_thread(subprocess.run, ["ip", "-n", ovs_chassis.netns, "link", "add", peer, "type",
                                             "veth", "peer", "name", "mchalf0"], check=True)
    assert await nics.ensure(port, random_mac()) == host
    in_ns = links(ovs_chassis.netns)
    assert host in links() and peer in in_ns and "mchalf0" not in in_ns
    await nics.remove(port)


async def test_the_wrapper_plugs_before_start_and_unplugs_with_the_nic(
        compute: LibvirtDriver, nics: HostNics, ovs_chassis: OvsChassis) -> None:
    drv = HostNicCompute(compute, nics)
    spec = make_spec()
    (nic,) = spec.nics
    parsed = await drv.define(spec)
    (got,) = parsed.nics
    assert got.kind is NicKind.DIRECT and got.port_id == nic.port_id
    assert got.host_dev == nics.names(nic.port_id)[0]
    assert await drv.host_nic_ports() == set()  # defined, not started: nothing plugged yet
    await drv.start(spec.name)
    assert await drv.host_nic_ports() == {nic.port_id}

    await drv.stop(spec.name, force=True)  # test:/// has no live attach: the persistent half
    extra = Nic(mac=random_mac(), port_id=str(uuid.uuid4()))
    await drv.attach_nic(spec.name, extra)  # the veth first
    assert await drv.host_nic_ports() == {nic.port_id, extra.port_id}
    assert {n.kind for n in (await drv.get(spec.name)).nics} == {NicKind.DIRECT}
    assert await drv.detach_nic(spec.name, extra.mac)
    assert await drv.host_nic_ports() == {nic.port_id}

    await drv.define(dataclasses.replace(spec, nics=()))  # a redefinition without the NIC
    assert await drv.host_nic_ports() == set()
    await drv.define(spec)
    await drv.start(spec.name)  # a start after a restart of the daemon: plugged again
    assert await drv.host_nic_ports() == {nic.port_id}
    assert await drv.undefine(spec.name, force=True)
    assert await drv.host_nic_ports() == set()
    assert not [name for name in links(ovs_chassis.netns) if name.startswith("mcw")]


async def test_leftovers_are_listed_and_removed_by_port(nics: HostNics, compute: LibvirtDriver) -> None:
    drv = HostNicCompute(compute, nics)
    port = str(uuid.uuid4())
    await nics.ensure(port, random_mac())
    assert await drv.host_nic_ports() == {port}
    assert await drv.remove_host_nic(port) is True
    assert await compute.host_nic_ports() == set()  # a driver of our own libvirtd: never any
