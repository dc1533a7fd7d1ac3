"""`microcloud init --preseed` with a physical uplink, through the real dataplane.

The site's upstream router is a test-owned network namespace holding one address on the far
end of a veth pair; the near end, on the host, is the interface the preseed names. After
init that interface sits in the member's namespace on the OVS provider bridge, the default
network's OVN router holds an address from uplink_range, and the upstream namespace pings
it (ARP and ICMP answered by OVN on our chassis). Also after a daemon restart. A bad uplink
(unknown, addressed) is refused before anything changes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.member import member, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

UPSTREAM_IP = "198.51.100.1"
PRESEED = """\
storage:
  file_osd_size: 4GiB
network:
  uplink: {uplink}
  uplink_gateway: 198.51.100.1/24
  uplink_range: 198.51.100.100-198.51.100.150
  uplink_dns: [198.51.100.1]
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@pytest.fixture
def upstream() -> Iterator[tuple[str, str]]:
    """(the host end of the wire, the upstream router's namespace)."""
    tag = os.urandom(3).hex()
    ns, near = f"hcup-{tag}", f"hcu{tag}"
    try:
        ip("netns", "add", ns)
        ip("link", "add", near, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", ns, "addr", "add", f"{UPSTREAM_IP}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield near, ns
    finally:
        ip("link", "del", near, check=False)  # still on the host if init never took it
        ip("netns", "del", ns, check=False)  # the veth goes with it


def pings(ns: str, address: str) -> bool:
    return ip("netns", "exec", ns, "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


def test_physical_uplink_reaches_the_router(upstream: tuple[str, str], tmp_path: Path) -> None:
    near, ns = upstream
    with member("mc-it-uplink-") as m:
        d = m.start()

        # Bad input: nothing changes.
        r = m.init_preseed(PRESEED.format(uplink="hcnosuch0"), ok=False)
        assert r.returncode == 1 and "hcnosuch0: no such network interface" in r.stderr, r.stderr
        ip("addr", "add", "203.0.113.9/24", "dev", near)
        r = m.init_preseed(PRESEED.format(uplink=near), ok=False)
        assert r.returncode == 1 and f"{near}: has address 203.0.113.9/24" in r.stderr, r.stderr
        assert not (m.state / "init").exists() and Path("/sys/class/net", near).exists()
        ip("addr", "del", "203.0.113.9/24", "dev", near)

        assert not pings(ns, "198.51.100.100")  # nothing answers there before init
        m.init_preseed(PRESEED.format(uplink=near))
        assert not Path("/sys/class/net", near).exists()  # moved into the member's namespace
        assert ip("-n", m.lay.netns, "link", "show", near).returncode == 0
        net = json.loads(d.cli("network", "show", "default", "--format", "json", check=True).stdout)
        router = net["config"]["volatile.network.ipv4.address"]
        assert router.startswith("198.51.100.1") and 100 <= int(router.rsplit(".", 1)[1]) <= 150, router
        wait_until(f"{router} answering ping from the upstream router", lambda: pings(ns, router), 90, 1)
        status = json.loads(d.cli("status", "--format", "json", check=True).stdout)
        assert status["network"]["uplink"] == "198.51.100.0/24 via 198.51.100.1"

        m.restart()
        m.wait_ready()
        wait_until(f"{router} answering again after a restart", lambda: pings(ns, router), 90, 1)
        m.stop()
