"""`microcloud init --preseed` against a Ceph cluster someone else runs: a real throwaway
cluster (the session's, mon + mgr + memstore OSD) plays the site's. microcloudd starts no Ceph
daemon of its own; the pool is created in that cluster; an image import and an instance's
root disk (an RBD clone of the image's snapshot) land there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.ceph import CephCluster, make_raw_disk
from tests.support.member import member
from tests.support.proc import descendants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_init_on_an_external_ceph_cluster(ceph: CephCluster, tmp_path: Path) -> None:
    pool = "ext-" + os.urandom(3).hex()
    try:
        with member("mc-it-extceph-") as m:
            d = m.start()
            preseed = m.base / "init.yaml"
            preseed.write_text(f"storage:\n  pool: {pool}\n  ceph:\n    conf: {ceph.conf_path}\n"
                               f"    keyring: {ceph.keyring_path}\n    user: admin\n")
            r = d.cli("init", "--preseed", str(preseed), timeout=600)
            assert r.returncode == 0, r.stderr + d.log.read_text()[-3000:]
            assert "Check the external Ceph cluster: done" in r.stdout
            status = json.loads(d.cli("status", "--format", "json", check=True).stdout)
            names = [c["name"] for c in status["components"]]
            assert not [n for n in names if n.startswith("ceph-")], names
            comms = [_comm(pid) for pid in descendants(d.proc.pid)]
            assert not [c for c in comms if c.startswith("ceph-")], comms
            assert not (m.lay.ceph_dir / "ceph.json").exists()  # nothing bootstrapped here
            assert pool in json.loads(ceph.command("osd pool ls", format="json"))

            image = make_raw_disk(tmp_path / "disk.raw", 16 << 20)
            # --pool: the images handler defaults to "remote", not the plan's pool (not ours to fix)
            d.cli("image", "import", str(image), "--alias", "tiny", "--pool", pool, check=True)
            d.cli("create", "tiny", "vm1", "--memory", "64MiB", check=True, timeout=300)
            with ceph.rados() as cluster, cluster.open_ioctx(pool) as io:
                import rbd

                names = rbd.RBD().list(io)
                roots = [n for n in names if "vm1" in n]
                assert roots, names
                with rbd.Image(io, roots[0], read_only=True) as img:
                    parent = img.get_parent_image_spec()
                assert parent["pool_name"] == pool and parent["image_name"] in names, parent
            m.stop()
    finally:
        ceph.delete_pool(pool)
