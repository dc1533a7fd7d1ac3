"""`microcloud init --preseed` against a Ceph cluster someone else runs on another machine: a
real throwaway cluster (mon + mgr + memstore OSD) in a network namespace of its own, routed
from the host through a veth (198.18.x.0/30), plays the site's. microcloudd starts no Ceph
daemon of its own; the pool is created in that cluster; an image import and an instance's
root disk (an RBD clone of the image's snapshot) land there; and the guest boots from it:
QEMU, in the member's namespace, reaches the other machine through the host (forwarding and
the member's masquerade rule, stack/netns.ensure_egress).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from microcloudd.stack import netns
from tests.fixtures.ceph import CephCluster, running_ceph
from tests.support.member import member, wait_until
from tests.support.proc import descendants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def site_ceph() -> Iterator[CephCluster]:
    """A Ceph cluster on "another machine": a namespace with a /30 to the host and no route
    back to the host's link-local addresses (as a real site router would not have)."""
    tag = os.urandom(3).hex()
    ns, host_end, site_end = f"mc-site-{tag}", f"mcs{tag}h", f"mcs{tag}s"
    net = f"198.18.{int(tag[:2], 16)}"
    try:
        for argv in (["netns", "add", ns], ["-n", ns, "link", "set", "lo", "up"],
                     ["link", "add", host_end, "type", "veth", "peer", "name", site_end, "netns", ns],
                     ["addr", "add", f"{net}.1/30", "dev", host_end], ["link", "set", host_end, "up"],
                     ["-n", ns, "addr", "add", f"{net}.2/30", "dev", site_end],
                     ["-n", ns, "link", "set", site_end, "up"]):
            subprocess.run(["ip", *argv], check=True, capture_output=True)
        with running_ceph(address=f"{net}.2", netns=ns) as cluster:
            yield cluster
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _egress_rule(table: str) -> bool:
    return subprocess.run(["nft", "list", "table", "ip", table], capture_output=True).returncode == 0


def test_init_on_an_external_ceph_cluster_on_another_machine(site_ceph: CephCluster) -> None:
    ceph, pool = site_ceph, "ext-" + os.urandom(3).hex()
    assert not ceph.mon_host.startswith("127."), ceph.mon_host
    with member("mc-it-extceph-") as m:
        d = m.start()
        r = m.init_preseed(f"storage:\n  pool: {pool}\n  ceph:\n    conf: {ceph.conf_path}\n"
                           f"    keyring: {ceph.keyring_path}\n    user: admin\n")
        assert "Check the external Ceph cluster: done" in r.stdout
        status = json.loads(d.cli("status", "--format", "json", check=True).stdout)
        names = [c["name"] for c in status["components"]]
        assert not [n for n in names if n.startswith("ceph-")], names
        comms = [_comm(pid) for pid in descendants(d.proc.pid)]
        assert not [c for c in comms if c.startswith("ceph-")], comms
        assert not (m.lay.ceph_dir / "ceph.json").exists()  # nothing bootstrapped here
        assert pool in json.loads(ceph.command("osd pool ls", format="json"))
        assert _egress_rule(netns.egress_table(m.lay))

        m.import_test_image()
        d.cli("launch", "testimage", "vm1", check=True, timeout=300)
        with ceph.rados() as cluster, cluster.open_ioctx(pool) as io:
            import rbd

            names = rbd.RBD().list(io)
            roots = [n for n in names if "vm1" in n]
            assert roots, names
            with rbd.Image(io, roots[0], read_only=True) as img:
                parent = img.get_parent_image_spec()
            assert parent["pool_name"] == pool and parent["image_name"] in names, parent
        # The guest read its root disk and its seed from the other machine's OSD.
        log = m.state / "logs" / "vm1.console.log"
        wait_until("vm1 booted from the site's cluster",
                   lambda: "MCTEST: READY" in log.read_text(errors="replace"), 300, every=1)
        seen = log.read_text(errors="replace")
        assert re.search(r"MCTEST: SEED dev=\S+ instance-id=\S+ hostname=vm1", seen), seen[-2000:]
        d.cli("delete", "--force", "vm1", check=True, timeout=300)
        m.stop()
    assert not _egress_rule(netns.egress_table(m.lay))  # purged with the member
