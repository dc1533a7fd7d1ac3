"""Preseed validation: every problem reported with its line and key, before anything changes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from microcloudd.api.errors import InvalidArgument
from microcloudd.init import disks, preseed
from tests.fixtures.daemon import RunningDaemon


def problems(text: str) -> list[dict[str, object]]:
    with pytest.raises(InvalidArgument) as e:
        preseed.parse(textwrap.dedent(text), "init.yaml")
    assert "init.yaml:" in str(e.value)
    return list(e.value.details["problems"])


def in_use_disk() -> str:
    used = [d for d in disks.discover() if d.in_use]
    assert used, "this machine's root file system should be on a disk /sys/block lists"
    return used[0].path


def test_a_good_preseed_becomes_a_plan() -> None:
    plan = preseed.parse(textwrap.dedent("""\
        member: node1
        address: 192.0.2.10
        storage:
          pool: remote
          file_osd_size: 8GiB
        network:
          uplink: nat
          subnet: 10.20.30.1/24
        """), "init.yaml")
    assert plan.member == "node1"
    assert plan.storage.file_osd_size == 8 << 30
    assert plan.network.subnet == "10.20.30.1/24"
    assert plan.compute.libvirt == "private"


def test_unknown_key_points_at_its_line() -> None:
    [p] = problems("""\
        member: node1
        storage:
          file_osd_size: 4GiB
          fast: true
        """)
    assert p["line"] == 4 and p["key"] == "storage.fast"
    assert "unknown key" in str(p["message"]) and "file_osd_size" in str(p["message"])


def test_wrong_type_points_at_its_line() -> None:
    ps = problems("""\
        member: node1
        storage:
          disks: /dev/sdb
          file_osd_size: lots
        """)
    by_key = {p["key"]: p for p in ps}
    assert by_key["storage.disks"]["line"] == 3
    assert "expected a list" in str(by_key["storage.disks"]["message"])
    assert by_key["storage.file_osd_size"]["line"] == 4
    assert "not a size" in str(by_key["storage.file_osd_size"]["message"])


def test_missing_disk_is_named() -> None:
    [p] = problems("""\
        member: node1
        storage:
          disks:
            - /dev/does-not-exist-7
        """)
    assert p["key"] == "storage.disks[0]" and p["line"] == 4
    assert "no such disk" in str(p["message"])


def test_disk_in_use_is_refused_with_the_reason() -> None:
    dev = in_use_disk()
    [p] = problems(f"""\
        member: node1
        storage:
          disks: [{dev}]
        """)
    assert p["key"] == "storage.disks[0]" and p["line"] == 3
    assert "disk in use" in str(p["message"])


def test_every_problem_at_once_and_semantic_checks() -> None:
    ps = problems("""\
        member: "no_underscores"
        address: not-an-ip
        storage: {}
        network:
          subnet: 10.0.0.0/24
          uplink: nosuchif0
        compute:
          libvirt: cloud
        """)
    keys = {p["key"] for p in ps}
    assert {"member", "address", "storage", "network.subnet", "network.uplink", "compute.libvirt"} <= keys
    subnet = next(p for p in ps if p["key"] == "network.subnet")
    assert subnet["line"] == 5 and "gateway address" in str(subnet["message"])


def test_bad_yaml_and_wrong_top_level() -> None:
    [p] = problems("member: [unclosed\n")
    assert "not valid YAML" in str(p["message"])
    [p] = problems("- a\n- b\n")
    assert p["message"] == "expected a mapping"


def test_the_daemon_refuses_a_bad_preseed_before_changing_anything(daemon: RunningDaemon,
                                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("member: node1\nstorage:\n  disks: [/dev/does-not-exist-7]\n  colour: blue\n")
    r = daemon.cli("init", "--preseed", str(bad))
    assert r.returncode == 1
    assert f"{bad}:3: storage.disks[0]: /dev/does-not-exist-7: no such disk" in r.stderr
    assert f"{bad}:4: storage.colour: unknown key" in r.stderr
    assert not (daemon.state_dir / "init").exists()  # nothing recorded
    status = json.loads(daemon.cli("status", "--format", "json", check=True).stdout)
    names = [c["name"] for c in status["components"]]
    assert names == ["database"]  # nothing started
    # --dry-run validates a good one and changes nothing either
    good = tmp_path / "good.yaml"
    good.write_text("member: node1\nstorage:\n  file_osd_size: 2GiB\n")
    r = daemon.cli("init", "--preseed", str(good), "--dry-run", check=True)
    assert "file_osd_size: 2147483648" in r.stdout
    assert not (daemon.state_dir / "init").exists()
