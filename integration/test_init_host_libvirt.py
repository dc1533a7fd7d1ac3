"""`microcloud init --preseed` with `compute: {libvirt: host}`: a throwaway libvirtd in the host
namespace plays the host's (its own socket and run dirs under a temp dir, configured like a
Debian host's: QEMU runs as libvirt-qemu with dynamic ownership). microcloudd starts no libvirtd
of its own; an instance launched through the API boots in that libvirtd from its RBD clone,
its NIC macvtap on a veth whose peer is the br-int port of its OVN port, takes its DHCP lease
from OVN and answers TCP from a port on the same switch. A daemon restart shuts it down, leaves
the host libvirtd running, starts it again (its veth made again) and removes a leftover veth;
deleting it leaves no domain, veth, OVS port or OVN port behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from microcloudd.components import libvirtd
from microcloudd.drivers.compute.host_nic import HostNics
from tests.support import proc
from tests.support.member import Member, member, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NAME = "hostvm1"

# a host's QEMU policy (Debian's defaults, less AppArmor, absent here, and virtlogd, which needs systemd)
HOST_QEMU_CONF = """\
user = "libvirt-qemu"
group = "libvirt-qemu"
dynamic_ownership = 1
security_driver = "none"
stdio_handler = "file"
"""


@contextlib.contextmanager
def host_libvirtd() -> Iterator[libvirtd.LibvirtdPaths]:
    base = Path(tempfile.mkdtemp(prefix="mc-hostlv-", dir="/tmp"))
    try:
        spec = libvirtd.libvirtd_spec(base / "d", name="host-libvirtd")  # host namespace, no OVS
        (base / "d" / "etc" / "qemu.conf").write_text(HOST_QEMU_CONF)
        running = proc.start(spec, base / "log")
        try:
            yield libvirtd.LibvirtdPaths(base / "d")
        finally:
            running.stop()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def veths() -> dict[str, str]:
    return {link["ifname"]: link.get("ifalias", "")
            for link in json.loads(sh("ip", "-j", "link", "show", "type", "veth"))}


def domains(uri: str) -> dict[str, str]:
    conn = libvirt.open(uri)
    try:
        return {d.name(): d.XMLDesc(0) for d in conn.listAllDomains()}
    finally:
        conn.close()


def active(uri: str, name: str) -> bool:
    """The domain runs (raises if it is gone: the host libvirtd answers and still has it)."""
    conn = libvirt.open(uri)
    try:
        return bool(conn.lookupByName(name).isActive())
    finally:
        conn.close()


def qemu_uid(paths: libvirtd.LibvirtdPaths, name: str) -> int:
    pid = (paths.qemu_pid_dir / f"{name}.pid").read_text().strip()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


@contextlib.contextmanager
def probe_port(m: Member, switch: str, mac: str, ip: str) -> Iterator[str]:
    """A namespace on OVN switch `switch` at `ip`/24 (a port of its own on br-int)."""
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if, lsp = f"mchp-{tag}", f"mchp{tag}a", f"mchp{tag}b", f"probe-{tag}"
    nb = ["ovn-nbctl", f"--db=unix:{m.state}/ovn/run/ovnnb_db.sock"]
    vsctl = ["ovs-vsctl", f"--db=unix:{m.state}/ovs/run/db.sock"]
    sh(*nb, "lsp-add", switch, lsp, "--", "lsp-set-addresses", lsp, f"{mac} {ip}")
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
        sh("ip", "link", "set", host_if, "netns", m.lay.netns)
        sh("ip", "-n", m.lay.netns, "link", "set", host_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", ns_if, "address", mac, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ethtool", "-K", ns_if, "tx", "off")
        sh(*vsctl, "add-port", "br-int", host_if, "--", "set", "Interface", host_if,
           f"external_ids:iface-id={lsp}")
        yield ns
    finally:
        subprocess.run([*vsctl, "--if-exists", "del-port", "br-int", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run([*nb, "--if-exists", "lsp-del", lsp], capture_output=True)


def http_get(ns: str, url: str) -> str:
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    for _ in range(10):
        r = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout
        time.sleep(1)
    raise AssertionError(f"GET {url} from {ns}: {r.stderr[-500:]}")


def test_init_and_a_guest_on_a_host_libvirtd() -> None:
    t0 = time.monotonic()
    with host_libvirtd() as host, member("mc-it-hostlv-") as m:
        d = m.start()
        r = m.init_preseed(f"storage: {{file_osd_size: 4GiB}}\ncompute: {{libvirt: host, libvirt_uri: "
                           f"'{host.uri}'}}\n")
        assert "Check the host's libvirtd: done" in r.stdout, r.stdout
        status = json.loads(d.cli("status", "--format", "json", check=True).stdout)
        assert "libvirtd" not in [c["name"] for c in status["components"]], status
        assert not (m.lay.libvirt_dir / "sock").exists()  # no libvirtd of ours
        m.import_test_image()

        d.cli("launch", "testimage", NAME, "--memory", "256MiB", check=True, timeout=300)
        xml = ET.fromstring(domains(host.uri)[NAME])
        (iface,) = xml.findall("devices/interface")
        assert iface.get("type") == "direct", ET.tostring(iface)
        dev = iface.find("source").get("dev")  # type: ignore[union-attr]
        port = iface.find("alias").get("name", "").removeprefix("ua-")  # type: ignore[union-attr]
        nics = HostNics(m.lay.netns, m.state / "ovs" / "run" / "db.sock")
        assert dev == nics.names(port)[0] and veths()[dev] == nics.alias(port)
        rbd = xml.find("devices/disk/source[@protocol='rbd']")
        assert rbd is not None and NAME in rbd.get("name", "")
        assert qemu_uid(host, NAME) != 0  # the host's QEMU user, not root
        # ... which read the guest ceph.conf (0644 in a 0755 directory) to open its disks
        conf = rbd.find("config")
        assert conf is not None and conf.get("file") == str(m.lay.guest_ceph_conf), ET.tostring(rbd)

        log = m.state / "logs" / f"{NAME}.console.log"
        ready = wait_until("the guest's READY line", lambda: re.search(
            r"MCTEST: READY ip=(\S+)", log.read_text(errors="replace") if log.exists() else ""), 180, 0.5)
        ip = ready.group(1)
        text = log.read_text(errors="replace")
        assert f"MCTEST: LEASE ip={ip} " in text and "instance-id=" in text, text[-2000:]
        listed = json.loads(d.cli("list", "--format", "json", check=True).stdout)
        assert any(ip in json.dumps(i) for i in listed if i["name"] == NAME), listed
        print(f"guest READY at {ip} after {time.monotonic() - t0:.0f}s")

        subnet = ip.rsplit(".", 1)[0]
        with probe_port(m, "mc-net-default", "0a:00:00:77:00:05", f"{subnet}.250") as ns:
            body = http_get(ns, f"http://{ip}/")  # TCP through macvtap, veth, OVS and OVN
        assert "instance-id=" in body and f"hostname={NAME}" in body, body

        # -- a daemon restart: guests down, the host libvirtd left running; then up again,
        # the veth made again, a leftover of ours removed, someone else's left alone
        stale = str(uuid.uuid4())
        asyncio.run(nics.ensure(stale, "00:16:3e:00:00:99"))
        foreign = HostNics("microcloud-someone-else", m.state / "ovs" / "run" / "db.sock")
        other_dev = foreign.names(stale)[0]
        sh("ip", "link", "add", other_dev, "type", "veth", "peer", "name", foreign.names(stale)[1])
        try:
            sh("ip", "link", "set", other_dev, "alias", foreign.alias(stale))
            sh("ip", "link", "del", dev)  # as after a host reboot: the start must make it again
            m.stop()
            assert not active(host.uri, NAME)  # shut down by the daemon's stop, still defined
            m.start()
            m.wait_ready()
            wait_until("the guest started again", lambda: active(host.uri, NAME), 120, 0.5)
            assert dev in veths()
            wait_until("the leftover veth removed", lambda: nics.names(stale)[0] not in veths(), 30, 0.5)
            assert other_dev in veths()
        finally:
            subprocess.run(["ip", "link", "del", other_dev], capture_output=True)

        m.d.cli("delete", NAME, "--force", check=True, timeout=120)
        assert NAME not in domains(host.uri)
        assert not [n for n, a in veths().items() if a.startswith(f"microcloud:{m.lay.netns}:")]
        ports = sh("ovs-vsctl", f"--db=unix:{m.state}/ovs/run/db.sock", "list-ports", "br-int").split()
        assert not [p for p in ports if p.startswith("mcw")], ports
        lsps = sh("ovn-nbctl", f"--db=unix:{m.state}/ovn/run/ovnnb_db.sock", "--bare", "--columns=name",
                  "list", "Logical_Switch_Port").split()
        assert port not in lsps
        m.stop()
        print(f"whole test {time.monotonic() - t0:.0f}s")
