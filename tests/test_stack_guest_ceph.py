"""The guest ceph.conf the stack writes (stack/guest_ceph.py) and gives the compute driver it
builds (stack/drivers.py): this cloud's monitor and the bounded Ceph timeouts, mode 0644 in a
0755 directory at Layout.guest_ceph_conf; every RBD disk of a domain the daemon-built driver
defines, hot-plugs or starts carries `<config file=...>` naming it. Real session Ceph (as an
external cluster), real OVN NB; libvirt's test:/// driver stands in for the private libvirtd's
URI (the boot with the file in place: integration/test_instance_live.py, test_guest_boot.py)."""

from __future__ import annotations

import stat
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from microcloudd.api.init import CephExternal, ComputePlan, InitPlan, StoragePlan
from microcloudd.components.supervisor import Supervisor
from microcloudd.drivers.compute import domain_xml as dx
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.types import Disk
from microcloudd.drivers.network.ovn import OvnNetworkDriver
from microcloudd.events import EventBus
from microcloudd.operations import OperationManager
from microcloudd.services.cloud import Cloud
from microcloudd.stack import drivers, guest_ceph
from microcloudd.stack.components import LocalStack
from microcloudd.stack.layout import Layout
from tests.fixtures.ceph import CephCluster
from tests.fixtures.libvirt import TEST_URI, make_spec, rbd_image, unique


def conf_values(text: str) -> dict[str, str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert lines[0] == "[global]"
    return {k.strip(): v.strip() for k, _, v in (ln.partition("=") for ln in lines[1:])}


def rbd_configs(xml: str) -> list[str | None]:
    """The <config file> of each RBD disk source, in order (None where there is none)."""
    root = ET.fromstring(xml)
    out = []
    for src in root.iter("source"):
        if src.get("protocol") == "rbd":
            el = src.find("config")
            out.append(None if el is None else el.get("file"))
    return out


class ExternalCephStack(LocalStack):
    """The stack of a member with external Ceph and a private libvirtd, whose URI is libvirt's
    test driver here (nothing else of the stack is started: the drivers connect to the
    session's Ceph and the test's OVN NB)."""

    @property
    def libvirt_uri(self) -> str:
        return TEST_URI


def test_the_file_names_the_monitors_and_the_bounded_timeouts(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "state")
    path = guest_ceph.write(lay, "169.254.1.1:3300", host_libvirt=False)
    assert path == lay.guest_ceph_conf
    assert conf_values(path.read_text()) == {
        "mon_host": "169.254.1.1:3300",
        "client_mount_timeout": str(guest_ceph.MOUNT_TIMEOUT),
        "rados_mon_op_timeout": str(guest_ceph.OP_TIMEOUT),
    }
    assert guest_ceph.MOUNT_TIMEOUT < 300  # librados' default: the point of the file
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert [p.name for p in path.parent.iterdir()] == ["ceph.conf"]  # no temporary file left
    # rewritten at every connect: new monitors replace the old ones
    guest_ceph.write(lay, "169.254.1.5:3300", host_libvirt=False)
    assert conf_values(path.read_text())["mon_host"] == "169.254.1.5:3300"


def test_a_file_qemu_could_not_read_is_not_used(tmp_path: Path) -> None:
    # a host libvirtd's QEMU is not root: every directory above the file must let others through
    state = tmp_path / "private" / "state"
    state.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    lay = Layout(state)
    assert "chmod o+x" in guest_ceph.problem(lay.guest_ceph_conf, host_libvirt=True)
    assert guest_ceph.write(lay, "169.254.1.1:3300", host_libvirt=True) is None
    assert not lay.guest_ceph_conf.exists()
    # our own libvirtd runs as root: only its bind-mounted directories hide a path from it
    assert guest_ceph.problem(lay.guest_ceph_conf, host_libvirt=False) == ""
    assert "mount namespace" in guest_ceph.problem(Path("/var/lib/libvirt/x/ceph.conf"), host_libvirt=False)
    with pytest.raises(Exception, match="monitor address"):
        dx.guest_ceph_conf(mon_host="1.2.3.4:3300\nclient_mount_timeout = 300")


async def test_the_daemon_built_driver_gives_every_rbd_disk_the_file(
        ceph: CephCluster, network_driver: OvnNetworkDriver, tmp_path: Path) -> None:
    member = unique("gc")
    plan = InitPlan(member=member, storage=StoragePlan(
        ceph=CephExternal(conf=str(ceph.conf_path), keyring=str(ceph.keyring_path), user=ceph.user)),
        compute=ComputePlan(libvirt="private"))
    state = tmp_path / "state"
    state.mkdir()
    stack = ExternalCephStack(state, plan, Supervisor())
    events = EventBus(location=member)
    cloud = Cloud(state, member, events, OperationManager(events, location=member), network=network_driver)
    older = await LibvirtDriver.connect(TEST_URI, owner=member)  # a driver of before the change
    try:
        await drivers.connect(cloud, stack, str(uuid.uuid4()))
        conf = stack.lay.guest_ceph_conf
        assert conf_values(conf.read_text())["mon_host"] == ceph.mon_host == cloud.settings["ceph.mon_host"]
        compute = cloud.compute
        assert isinstance(compute, LibvirtDriver) and compute.guest_ceph_conf == conf

        # a new definition: root, seed and a custom volume
        spec = make_spec(disks=(Disk(source=rbd_image("vol1")),))
        await compute.define(spec)
        assert rbd_configs(await domain_xml(compute, spec.name)) == [str(conf)] * 3
        # a disk added later (test:/// cannot hot-plug: the persistent definition takes it)
        await compute.attach_disk(spec.name, Disk(source=rbd_image("vol2")))
        assert rbd_configs(await domain_xml(compute, spec.name)) == [str(conf)] * 4

        # a definition from before the change gets the file when the daemon's driver starts it
        old = make_spec()
        await older.define(old)
        assert rbd_configs(await domain_xml(compute, old.name)) == [None, None]
        await compute.start(old.name)
        assert rbd_configs(await domain_xml(compute, old.name)) == [str(conf)] * 2
        await compute.stop(old.name, force=True)
    finally:
        cloud.network = None  # the fixture's, closed by it
        if cloud.compute is not None:
            for st in await cloud.compute.list_owned():
                await cloud.compute.undefine(st.name, force=True)
        await drivers.close(cloud)
        await older.close()


async def domain_xml(drv: LibvirtDriver, name: str) -> str:
    """The persistent definition, as libvirt keeps it."""
    return await drv._lt.call(lambda: drv._c.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
