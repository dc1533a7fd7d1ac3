"""Init with an external Ceph cluster (the session's real cluster plays the site's) and with a
host libvirtd: the plan is checked against the real cluster and the real libvirtd before
anything changes: a missing file, a wrong key, an unreachable monitor, a libvirtd that does not
answer, is remote or runs in another network namespace are each named."""

from __future__ import annotations

import json
import re
import socket
import textwrap
from pathlib import Path

import pytest

from microcloudd.api.errors import InvalidArgument
from microcloudd.components.ceph import generate_key
from microcloudd.init import preseed
from tests.fixtures.ceph import CephCluster
from tests.fixtures.daemon import RunningDaemon
from tests.fixtures.libvirt import running_libvirtd
from tests.fixtures.ovn import OvsChassis


def plan_text(conf: Path, keyring: Path, user: str = "admin") -> str:
    return textwrap.dedent(f"""\
        member: n1
        storage:
          ceph: {{conf: {conf}, keyring: {keyring}, user: {user}}}
        """)


def problems(text: str) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as e:
        preseed.parse(text, "init.yaml")
    return {str(p["key"]): str(p["message"]) for p in e.value.details["problems"]}


def test_a_reachable_cluster_with_a_good_key_is_a_plan(ceph: CephCluster) -> None:
    """The session's cluster listens on 127.0.0.1: fine for a host libvirtd's QEMU (the host's
    namespace), unreachable for guests in microcloud's namespace. (integration/
    test_init_external.py runs a cluster on another "machine" and boots a guest from it.)"""
    assert ceph.mon_host.startswith("127.0.0.1:")
    with running_libvirtd() as host:
        text = plan_text(ceph.conf_path, ceph.keyring_path)
        text += f"compute: {{libvirt: host, libvirt_uri: '{host.uri}'}}\n"
        plan = preseed.parse(text, "init.yaml")
    assert plan.storage.ceph is not None and plan.storage.ceph.conf == str(ceph.conf_path)
    ps = problems(plan_text(ceph.conf_path, ceph.keyring_path))
    assert list(ps) == ["storage.ceph.conf"], ps
    assert f"the monitor address {ceph.mon_host} is a loopback address" in ps["storage.ceph.conf"]


def test_missing_files_wrong_key_unknown_user_dead_monitor(ceph: CephCluster, tmp_path: Path) -> None:
    ps = problems(plan_text(tmp_path / "nope.conf", ceph.keyring_path))
    assert ps["storage.ceph.conf"] == f"{tmp_path / 'nope.conf'}: file not found"

    wrong = tmp_path / "wrong.keyring"
    wrong.write_text(f"[client.admin]\n\tkey = {generate_key()}\n")
    ps = problems(plan_text(ceph.conf_path, wrong))
    assert f"refused client.admin's key from {wrong} (wrong key or user)" in ps["storage.ceph"]

    ps = problems(plan_text(ceph.conf_path, ceph.keyring_path, "bob"))
    assert "has no key for client.bob" in ps["storage.ceph"]

    dead = tmp_path / "dead.conf"  # a port nothing listens on
    dead.write_text(re.sub(r"mon host = .*", "mon host = [v2:127.0.0.1:9,v1:127.0.0.1:10]",
                           ceph.conf_path.read_text()))
    ps = problems(plan_text(dead, ceph.keyring_path))
    assert "no Ceph monitor answered at 127.0.0.1:9 within 10s" in ps["storage.ceph"]


HOST = "member: n1\nstorage: {file_osd_size: 4GiB}\ncompute: {libvirt: host, libvirt_uri: '%s'}\n"


def test_a_host_libvirtd_that_cannot_serve_is_named(tmp_path: Path) -> None:
    nowhere = f"qemu:///system?socket={tmp_path}/nope-sock"
    assert problems(HOST % nowhere)["compute.libvirt_uri"] == \
        f"no libvirtd listens on {nowhere} ({tmp_path}/nope-sock does not exist)"

    dead = tmp_path / "dead-sock"  # a socket file nobody listens on any more
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))
    msg = problems(HOST % f"qemu:///system?socket={dead}")["compute.libvirt_uri"]
    assert msg.startswith(f"the libvirtd at qemu:///system?socket={dead} does not answer: "), msg

    msg = problems(HOST % "qemu+ssh://elsewhere/system")["compute.libvirt_uri"]
    assert "give a local system URI" in msg
    assert "give a local system URI" in problems(HOST % "qemu:///session")["compute.libvirt_uri"]
    msg = problems("member: n1\nstorage: {file_osd_size: 4GiB}\ncompute: {libvirt_uri: 'qemu:///system'}\n")
    assert msg["compute.libvirt_uri"].startswith("only with libvirt: host")
    assert "use private" in problems("member: n1\nstorage: {file_osd_size: 4GiB}\ncompute: {libvirt: xen}\n")[
        "compute.libvirt"]


def test_a_host_libvirtd_in_our_namespace_is_a_plan_one_elsewhere_is_not(ovs_chassis: OvsChassis) -> None:
    with running_libvirtd() as here:
        plan = preseed.parse(HOST % here.uri, "init.yaml")
        assert plan.compute.libvirt == "host" and plan.compute.libvirt_uri == here.uri
    with running_libvirtd(netns=ovs_chassis.netns) as there:
        msg = problems(HOST % there.uri)["compute.libvirt_uri"]
        assert "runs in another network namespace than microcloudd" in msg, msg


def test_the_daemon_changes_nothing_on_an_unreachable_libvirtd(daemon: RunningDaemon, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HOST % f"qemu:///system?socket={tmp_path}/nope-sock")
    r = daemon.cli("init", "--preseed", str(bad))
    assert r.returncode == 1 and "no libvirtd listens on" in r.stderr, r.stderr
    assert "bad.yaml:3: compute.libvirt_uri:" in r.stderr, r.stderr
    assert not (daemon.state_dir / "init").exists()
    status = json.loads(daemon.cli("status", "--format", "json", check=True).stdout)
    assert [c["name"] for c in status["components"]] == ["database"]


def test_the_daemon_changes_nothing_on_a_wrong_key(daemon: RunningDaemon, ceph: CephCluster,
                                                   tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.keyring"
    wrong.write_text(f"[client.admin]\n\tkey = {generate_key()}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(plan_text(ceph.conf_path, wrong))
    pools = json.loads(ceph.command("osd pool ls", format="json"))
    r = daemon.cli("init", "--preseed", str(bad))
    assert r.returncode == 1 and "wrong key or user" in r.stderr, r.stderr
    assert not (daemon.state_dir / "init").exists()
    status = json.loads(daemon.cli("status", "--format", "json", check=True).stdout)
    assert [c["name"] for c in status["components"]] == ["database"]
    assert json.loads(ceph.command("osd pool ls", format="json")) == pools
