"""Disk discovery on this machine's real /sys/block, and the safety checks on real block
devices (loop devices over sparse files): in use, holding data, missing; a refused disk is
left exactly as it was."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from microcloudd.api.errors import InvalidArgument
from microcloudd.init import disks, preseed
from tests.fixtures.daemon import RunningDaemon
from tests.support.loopdev import loop_device


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
            # in use when a partition is; else its partition table is contents (wipe: true erases it)
            assert parent.in_use or parent.contents


def _plan_problems(text: str) -> list[str]:
    with pytest.raises(InvalidArgument) as e:
        preseed.parse(textwrap.dedent(text), "init.yaml")
    return [f"{p['line']}: {p['key']}: {p['message']}" for p in e.value.details["problems"]]


def test_a_blank_device_is_accepted_and_loop_devices_are_not_listed(tmp_path: Path) -> None:
    with loop_device(tmp_path / "d.img", 2 << 30) as dev:
        assert disks.problem(dev, wipe=False) == ""
        plan = preseed.parse(f"member: n1\nstorage:\n  disks: [{dev}]\n", "init.yaml")
        assert plan.storage.disks == [dev] and not plan.storage.wipe
        assert dev not in {d.path for d in disks.discover()}
        found = disks.find(dev)
        assert found is not None and found.size == 2 << 30 and found.contents == ""


def test_data_needs_wipe_and_a_mounted_disk_is_refused_even_with_it(tmp_path: Path) -> None:
    with loop_device(tmp_path / "d.img", 1 << 30) as dev:
        subprocess.run(["mkfs.ext4", "-q", dev], check=True)
        [p] = _plan_problems(f"""\
            member: n1
            storage:
              disks: [{dev}]
            """)
        assert p == f"3: storage.disks[0]: {dev}: disk holds data (ext4 file system): set storage.wipe: " \
                    "true to erase it"
        plan = preseed.parse(f"member: n1\nstorage:\n  wipe: true\n  disks: [{dev}]\n", "init.yaml")
        assert plan.storage.wipe
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", dev, str(mnt)], check=True)
        try:
            [p] = _plan_problems(f"""\
                member: n1
                storage:
                  wipe: true
                  disks: [{dev}]
                """)
            assert f"{dev}: disk in use: mounted at {mnt}" in p
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
        assert disks.contents(dev) == "ext4 file system"  # validation changed nothing


def test_missing_twice_and_too_many_kinds(tmp_path: Path) -> None:
    with loop_device(tmp_path / "d.img", 1 << 30) as dev:
        ps = _plan_problems(f"""\
            member: n1
            storage:
              file_osd_size: 4GiB
              disks: [/dev/nosuchdisk, {dev}, {dev}]
            """)
    assert "4: storage.disks[0]: /dev/nosuchdisk: no such disk (see `microcloud init --list-disks`)" in ps
    assert f"4: storage.disks[2]: {dev}: listed twice" in ps
    assert "3: storage.file_osd_size: give disks or file_osd_size, not both" in ps


def test_the_daemon_refuses_a_disk_with_data_and_changes_nothing(daemon: RunningDaemon,
                                                                 tmp_path: Path) -> None:
    with loop_device(tmp_path / "d.img", 1 << 30) as dev:
        subprocess.run(["mkfs.ext4", "-q", dev], check=True)
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"member: node1\nstorage:\n  disks: [{dev}]\n")
        r = daemon.cli("init", "--preseed", str(bad))
        assert r.returncode == 1
        assert f"{bad}:3: storage.disks[0]: {dev}: disk holds data (ext4 file system)" in r.stderr
        assert disks.contents(dev) == "ext4 file system"
    assert not (daemon.state_dir / "init").exists()
    status = json.loads(daemon.cli("status", "--format", "json", check=True).stdout)
    assert [c["name"] for c in status["components"]] == ["database"]
