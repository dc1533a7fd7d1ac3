"""Bad input: a clear error from api/errors.py, and nothing left defined."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest

from microcloudd.api.errors import AlreadyExists, Conflict, InvalidArgument, MicrocloudError, NotFound
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.types import CephMonitor, Disk, Nic
from tests.fixtures.libvirt import make_spec, random_mac, rbd_image

BAD_SPECS = {
    "zero vcpus": dict(vcpus=0),
    "absurd vcpus": dict(vcpus=100000),
    "zero memory": dict(memory_mib=0),
    "absurd memory": dict(memory_mib=1 << 40),
    "max below current": dict(vcpus=4, max_vcpus=2),
    "bad instance name": dict(instance="no_underscores"),
    "bad uuid": dict(uuid="not-a-uuid"),
    "nic port not a uuid": dict(nics=(Nic(mac="52:54:00:00:00:01", port_id="lsp-web1"),)),
    "bad mac": dict(nics=(Nic(mac="zz:54:00:00:00:01", port_id=str(uuid.uuid4())),)),
    "multicast mac": dict(nics=(Nic(mac="01:54:00:00:00:01", port_id=str(uuid.uuid4())),)),
    "duplicate mac": dict(nics=(Nic(mac="52:54:00:00:00:01", port_id=str(uuid.uuid4())),
                                Nic(mac="52:54:00:00:00:01", port_id=str(uuid.uuid4())))),
    "rbd image with slash": dict(root=rbd_image("a/b")),
    "no monitors": dict(root=dataclasses.replace(rbd_image("r"), monitors=())),
    "bad monitor port": dict(root=rbd_image("r", mon=CephMonitor("127.0.0.1", 0))),
    "secret not a uuid": dict(root=rbd_image("r", secret_uuid="admin")),
    "disk target clash with root": dict(disks=(Disk(rbd_image("d"), target="vda"),)),
    "bad disk target": dict(disks=(Disk(rbd_image("d"), target="xvda1"),)),
    "relative console log": dict(console_log=Path("log/vm.log")),
}


@pytest.mark.parametrize("over", BAD_SPECS.values(), ids=BAD_SPECS.keys())
async def test_bad_spec_is_refused_before_libvirt(compute: LibvirtDriver, over: dict) -> None:
    spec = make_spec(**over) if "instance" in over else make_spec(None, **over)
    with pytest.raises(InvalidArgument) as e:
        await compute.define(spec)
    assert str(e.value)  # a readable message
    assert await compute.list_owned() == []


async def test_duplicate_define_and_uuid_clash(compute: LibvirtDriver) -> None:
    spec = make_spec()
    await compute.define(spec)
    with pytest.raises(AlreadyExists, match="already defined"):
        await compute.define(spec, may_exist=False)
    with pytest.raises(AlreadyExists, match="another UUID"):
        await compute.define(make_spec(spec.instance))
    with pytest.raises(AlreadyExists, match="UUID"):
        await compute.define(make_spec(uuid=spec.uuid))
    assert [s.uuid for s in await compute.list_owned()] == [spec.uuid]


async def test_name_of_a_foreign_domain_is_refused(compute: LibvirtDriver) -> None:
    with pytest.raises(AlreadyExists, match="not ours"):
        await compute.define(make_spec("test"))  # the test driver's built-in domain
    assert await compute.list_owned() == []


@pytest.mark.parametrize("call", ["start", "stop", "reboot", "freeze", "unfreeze", "state", "get",
                                  "set_limits", "open_console", "read_console_log"])
async def test_unknown_domain_is_not_found(compute: LibvirtDriver, call: str) -> None:
    kwargs = {"vcpus": 2} if call == "set_limits" else {}
    with pytest.raises(NotFound, match="no-such-vm"):
        await getattr(compute, call)("no-such-vm", **kwargs)
    with pytest.raises(NotFound):
        await compute.undefine("no-such-vm", if_exists=False)
    with pytest.raises(NotFound):
        await compute.attach_disk("no-such-vm", Disk(rbd_image("v")))
    with pytest.raises(NotFound):
        await compute.attach_nic("no-such-vm", Nic(random_mac(), str(uuid.uuid4())))


async def test_wrong_state_is_a_conflict(compute: LibvirtDriver) -> None:
    spec = make_spec()
    await compute.define(spec)
    for call in ("reboot", "freeze", "unfreeze", "open_console"):
        with pytest.raises(Conflict, match="not running"):
            await getattr(compute, call)(spec.name)
    await compute.start(spec.name)
    with pytest.raises(Conflict, match="already running"):
        await compute.start(spec.name)
    with pytest.raises(Conflict, match="running"):
        await compute.undefine(spec.name)  # deleting a running one needs force
    assert await compute.exists(spec.name)


async def test_bad_limits_change_nothing(compute: LibvirtDriver) -> None:
    spec = make_spec(vcpus=2, memory_mib=512)
    await compute.define(spec)
    for kwargs in ({"vcpus": 0}, {"vcpus": -1}, {"memory_mib": 1}, {"memory_mib": 10**9}, {"vcpus": True}):
        with pytest.raises(InvalidArgument):
            await compute.set_limits(spec.name, **kwargs)
    parsed = await compute.get(spec.name)
    assert (parsed.vcpus, parsed.memory_kib) == (2, 512 * 1024)


async def test_secrets_are_refused_by_the_test_driver_with_a_clear_error(compute: LibvirtDriver) -> None:
    with pytest.raises(InvalidArgument, match="base64"):
        await compute.ensure_ceph_secret(str(uuid.uuid4()), "admin", "not base64!")
    with pytest.raises(InvalidArgument, match="UUID"):
        await compute.ensure_ceph_secret("nope", "admin", "QUFBQQ==")
    # test:/// has no secret driver: a real libvirtd is needed (integration/)
    with pytest.raises(MicrocloudError, match="not supported"):
        await compute.ensure_ceph_secret(str(uuid.uuid4()), "admin", "QUFBQQ==")


async def test_unreachable_libvirt_is_unavailable(tmp_path: Path) -> None:
    from microcloudd.api.errors import Unavailable

    with pytest.raises(Unavailable, match="cannot connect"):
        await LibvirtDriver.connect(f"qemu:///system?socket={tmp_path}/nope-sock", owner="x")
    with pytest.raises(InvalidArgument):
        await LibvirtDriver.connect("test:///default", owner="")
