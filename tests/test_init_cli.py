"""`microcloud init` asks its questions and sends the answers as a plan (here with --dry-run,
so nothing changes); --show and --list-disks."""

from __future__ import annotations

import os
import subprocess

import yaml

from microcloudd.init import disks
from tests.fixtures.daemon import VENV_BIN, RunningDaemon


def test_interactive_answers_become_the_plan(daemon: RunningDaemon) -> None:
    free = [d for d in disks.discover() if not d.in_use and not d.read_only]
    answers = ["node7", "192.0.2.10", ""]  # name, address, no external Ceph
    if free:
        answers.append("")  # no disks: a file-backed OSD
    answers += ["8GiB", "remote", "nat", "10.44.0.1/24", "default"]
    r = subprocess.run([str(VENV_BIN / "microcloud"), "init", "--dry-run"], input="\n".join(answers) + "\n",
                       env={**os.environ, "MICROCLOUD_DIR": str(daemon.state_dir)}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    plan = yaml.safe_load(r.stdout[r.stdout.index("address:") - len("member: node7\n"):])
    assert plan["member"] == "node7" and plan["address"] == "192.0.2.10"
    assert plan["storage"]["file_osd_size"] == 8 << 30 and plan["storage"]["pool"] == "remote"
    assert {k: plan["network"][k] for k in ("name", "uplink", "subnet")} == {
        "name": "default", "uplink": "nat", "subnet": "10.44.0.1/24"}
    assert not (daemon.state_dir / "init").exists()


def test_show_and_list_disks(daemon: RunningDaemon) -> None:
    shown = yaml.safe_load(daemon.cli("init", "--show", check=True).stdout)
    assert shown["initialized"] is False and shown["plan"] is None
    listing = daemon.cli("init", "--list-disks", check=True).stdout
    for d in disks.discover():
        assert d.path in listing
    r = daemon.cli("init", "--auto", "--preseed", "x.yaml")
    assert r.returncode != 0 and "at most one of" in r.stderr


def test_interactive_physical_uplink_questions(daemon: RunningDaemon) -> None:
    near = f"hci{os.urandom(3).hex()}"
    subprocess.run(["ip", "link", "add", near, "type", "veth", "peer", "name", near + "p"], check=True)
    try:
        free = [d for d in disks.discover() if not d.in_use and not d.read_only]
        answers = ["node7", "192.0.2.10", ""] + ([""] if free else [])
        answers += ["8GiB", "remote", near, "198.51.100.1/24", "198.51.100.100-198.51.100.150",
                    "198.51.100.53", "", "default"]
        r = subprocess.run([str(VENV_BIN / "microcloud"), "init", "--dry-run"],
                           input="\n".join(answers) + "\n", capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MICROCLOUD_DIR": str(daemon.state_dir)})
        assert r.returncode == 0, r.stderr
        plan = yaml.safe_load(r.stdout[r.stdout.index("address:") - len("member: node7\n"):])
        assert plan["network"]["uplink"] == near
        assert plan["network"]["uplink_gateway"] == "198.51.100.1/24"
        assert plan["network"]["uplink_range"] == "198.51.100.100-198.51.100.150"
        assert plan["network"]["uplink_dns"] == ["198.51.100.53"]
    finally:
        subprocess.run(["ip", "link", "del", near], capture_output=True)
