"""Disk discovery on this machine's real /sys/block."""

from __future__ import annotations

import os
from pathlib import Path

from microcloudd.init import disks


def _root_device() -> str:
    """The /dev path of the file system holding / (from /proc/self/mounts)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        dev, mnt = line.split()[:2]
        if mnt == "/":
            return dev
    return ""


def test_every_listed_device_matches_sysfs() -> None:
    found = disks.discover()
    assert found, "a machine has at least one disk"
    for d in found:
        name = d.path.removeprefix("/dev/")
        sysdir = Path("/sys/class/block", name)
        assert sysdir.exists(), d.path
        assert d.size == int((sysdir / "size").read_text()) * 512
        assert d.type == ("partition" if (sysdir / "partition").exists() else "disk")
        assert not name.startswith(("loop", "ram", "zram"))


def test_the_root_file_system_disk_is_in_use() -> None:
    root = _root_device()
    found = disks.by_path(disks.discover())
    if root in found:  # / on a plain disk or partition: that device says it is mounted
        assert found[root].in_use == "mounted at /"
    # Whatever holds / (directly, through partitions or LVM), its whole disk is never offered free.
    real = os.path.realpath(root) if root.startswith("/dev/") else ""
    holders = [d for d in found.values() if d.type == "disk" and real.startswith(d.path)]
    assert all(d.in_use for d in holders)


def test_partitions_make_their_disk_unavailable_but_are_listed() -> None:
    found = disks.discover()
    for d in found:
        if d.type == "partition":
            parent = next(p for p in found if p.type == "disk" and d.path.startswith(p.path))
            assert parent.in_use.startswith(("has partitions", "mounted", "held by", "used as swap"))
