"""components/ceph.py: offline bootstrap is idempotent, the session cluster is usable, an
external cluster is described from its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microcloudd.api.errors import InvalidArgument, NotFound
from microcloudd.components.ceph import LocalCeph, external, read_key
from tests.fixtures.ceph import CephCluster


def test_bootstrap_is_idempotent_and_resumes(tmp_path: Path) -> None:
    local = LocalCeph(tmp_path / "c")
    first = local.bootstrap(base_port=23000, objectstore="bluestore", osd_bytes=1 << 30, mon_id="m1")
    key = first.key
    # a crash mid-mkfs leaves a side directory: the next run replaces it, never uses it
    (tmp_path / "c" / "mon.m1.creating").mkdir()
    again = local.bootstrap(base_port=24000, objectstore="memstore")
    assert again == first and again.key == key  # earlier settings win over new arguments
    assert again.mon_host == "127.0.0.1:23000"
    conf = first.conf_path.read_text()
    assert "mon host = [v2:127.0.0.1:23000,v1:127.0.0.1:23001]" in conf
    assert "osd objectstore = bluestore" in conf and "paxos propose interval = 0.1" in conf
    assert (tmp_path / "c" / "mon.m1" / "store.db").is_dir()
    assert read_key(tmp_path / "c" / "mgr.m1" / "keyring", "mgr.m1")
    specs = local.specs()
    assert [s.name for s in specs] == ["ceph-mon.m1", "ceph-mgr.m1"]  # no OSD created yet
    assert all("-f" in s.argv for s in specs)  # foreground: children of microcloudd


def test_bootstrap_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="object store"):
        LocalCeph(tmp_path).bootstrap(base_port=23000, objectstore="filestore")
    with pytest.raises(InvalidArgument, match="port"):
        LocalCeph(tmp_path).bootstrap(base_port=80)
    assert not (tmp_path / "ceph.json").exists()
    with pytest.raises(NotFound, match="No Ceph cluster"):
        LocalCeph(tmp_path).settings()


def test_session_cluster_is_healthy(ceph: CephCluster) -> None:
    assert ceph.user == "admin" and len(ceph.fsid) == 36
    assert ceph.mon_host.startswith("127.0.0.1:") and ceph.admin_key.startswith("AQ")
    status = json.loads(ceph.command("status", format="json"))
    assert status["fsid"] == ceph.fsid
    assert status["osdmap"]["num_up_osds"] == 1


def test_external_reads_conf_and_keyring(ceph: CephCluster, tmp_path: Path) -> None:
    ext = external(ceph.conf_path, ceph.keyring_path, "admin")
    assert ext.fsid == ceph.fsid and ext.mon_host == ceph.mon_host and ext.key == ceph.admin_key
    with pytest.raises(NotFound, match="not found"):
        external(tmp_path / "nope.conf", ceph.keyring_path)
    with pytest.raises(NotFound, match=r"no key for client\.bob"):
        external(ceph.conf_path, ceph.keyring_path, "bob")


def test_rbd_pool_fixture(ceph: CephCluster, rbd_pool: str) -> None:
    pools = json.loads(ceph.command("osd pool ls", format="json"))
    assert rbd_pool in pools
    apps = json.loads(ceph.command("osd pool application get", pool=rbd_pool, format="json"))
    assert "rbd" in apps
