"""components/ceph.py on a real block device (a loop device over a sparse file): BlueStore
formatted on the device, an object written, the daemons stopped and started again: the same
OSD id over the same device, the object still there. Creation is idempotent per device."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microcloudd.components.ceph import LocalCeph, mon_command
from microcloudd.components.supervisor import Supervisor
from microcloudd.init import disks
from tests.fixtures.ceph import free_port_block
from tests.support.loopdev import loop_device

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    sup = Supervisor()
    try:
        yield sup
    finally:
        await sup.stop_all()


def _write_then_read(local: LocalCeph, pool: str, data: bytes | None) -> bytes:
    import rados

    access = local.access()
    with rados.Rados(conffile=str(access.conf_path), rados_id="admin",
                     conf={"keyring": str(access.keyring_path)}) as cluster:
        if not cluster.pool_exists(pool):
            cluster.create_pool(pool)
        with cluster.open_ioctx(pool) as io:
            if data is not None:
                io.write_full("probe", data)
            return bytes(io.read("probe", 1 << 20))


async def test_osd_on_a_block_device_survives_a_restart(tmp_path: Path, supervisor: Supervisor) -> None:
    with loop_device(tmp_path / "disk.img", 4 << 30) as dev:
        # An old file system on it: refused without wipe, accepted (and erased) with it.
        await asyncio.to_thread(subprocess.run, ["mkfs.ext4", "-q", dev], check=True)
        assert "holds data (ext4 file system)" in disks.problem(dev, wipe=False)
        assert disks.problem(dev, wipe=True) == ""

        local = LocalCeph(tmp_path / "ceph")
        local.bootstrap(base_port=free_port_block(), objectstore="memstore", osd_bytes=1 << 30, mon_id="a")
        await supervisor.start(local.mon_spec())
        osd_id = await asyncio.to_thread(local.create_osd, 300.0, Path(dev), True)
        assert local.osd_devices() == {dev: osd_id}
        assert (tmp_path / "ceph" / f"osd.{osd_id}" / "type").read_text().strip() == "bluestore"
        assert disks.contents(dev) == "ceph_bluestore"  # the ext4 is gone, BlueStore's label is there
        assert await asyncio.to_thread(local.create_osd, 300.0, Path(dev)) == osd_id  # idempotent
        await supervisor.start(local.osd_spec(osd_id))
        assert await asyncio.to_thread(_write_then_read, local, "p", b"on the disk") == b"on the disk"

        await supervisor.stop_all()
        await supervisor.start(local.mon_spec())
        await supervisor.start(local.osd_spec(osd_id))
        assert await asyncio.to_thread(_write_then_read, local, "p", None) == b"on the disk"
        tree = mon_command(local.access(), {"prefix": "osd ls", "format": "json"})
        assert tree.strip() == f"[{osd_id}]"
        await supervisor.stop_all()
