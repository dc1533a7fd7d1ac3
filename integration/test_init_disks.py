"""`microcloud init --preseed` with a real block device for Ceph: a loop device over a sparse
file, holding an old ext4 (so `wipe: true` is needed and used). The OSD is BlueStore on the
device, every component real; after a daemon restart the same OSD id runs on the same device
and the pool is still there. A refused plan (the disk mounted) changes nothing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from microcloudd.components.ceph import LocalCeph
from microcloudd.init import disks
from tests.support.loopdev import loop_device
from tests.support.member import member, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _osd(status: dict[str, object]) -> dict[str, object]:
    comps = status["components"]
    assert isinstance(comps, list)
    return next(c for c in comps if c["name"].startswith("ceph-osd."))


def test_init_with_a_disk_osd_survives_a_restart(tmp_path: Path) -> None:
    with member("mc-it-disks-") as m, loop_device(tmp_path / "disk.img", 8 << 30) as dev:
        subprocess.run(["mkfs.ext4", "-q", dev], check=True)
        d = m.start()

        # Mounted: refused even with wipe, and nothing changes.
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", dev, str(mnt)], check=True)
        try:
            r = m.init_preseed(f"storage:\n  wipe: true\n  disks: [{dev}]\n", ok=False)
            assert r.returncode == 1 and f"{dev}: disk in use: mounted at {mnt}" in r.stderr, r.stderr
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
        assert not (m.state / "init").exists() and disks.contents(dev) == "ext4 file system"

        m.init_preseed(f"storage:\n  wipe: true\n  disks: [{dev}]\nnetwork:\n  uplink: nat\n")
        local = LocalCeph(m.lay.ceph_dir)
        devices = local.osd_devices()
        assert list(devices) == [dev]
        osd_id = devices[dev]
        assert disks.contents(dev) == "ceph_bluestore"
        status = json.loads(d.cli("status", "--format", "json", check=True).stdout)
        osd = _osd(status)
        assert osd["name"] == f"ceph-osd.{osd_id}" and osd["state"] == "running" and osd["healthy"]
        d.cli("storage", "volume", "create", "v1", "64MiB", check=True)

        d = m.restart()
        m.wait_ready()
        assert local.osd_devices() == {dev: osd_id}
        osd = wait_until("the OSD healthy again",
                         lambda: (o := _osd(json.loads(d.cli("status", "--format", "json", check=True)
                                                       .stdout)))["healthy"] and o)
        assert osd["name"] == f"ceph-osd.{osd_id}"
        assert "v1" in d.cli("storage", "volume", "list", check=True).stdout
        m.stop()
