"""One real VM, end to end: a private libvirtd boots the test image under TCG from an RBD clone
in real Ceph, its NIC on br-int bound to an OVN logical switch port with DHCP. The test reads
the seed's instance-id and the DHCP lease from the serial log, fetches http://LEASE/ from a
namespace port on the same switch, talks to the interactive console, hot-plugs and unplugs a
disk, and stops it gracefully (the ACPI power button; the guest powers itself off). Every RBD
disk (root, seed, the hot-plugged one) names the guest ceph.conf the daemon writes
(stack/guest_ceph.py, bounded Ceph timeouts): QEMU boots and hot-plugs with it.

Network plumbing: the OVS chassis (and so libvirtd and QEMU) live in a network namespace of
their own, while Ceph listens on the host's 127.0.0.1. A small forwarder listens on Ceph's
port block on the namespace's 127.0.0.1 and relays to the host's, so QEMU's librbd reaches
the mons and OSDs at the addresses the cluster advertises.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.seed import Seed, build_seed_iso
from microcloudd.drivers.compute.types import CephMonitor, Disk, DomainSpec, Nic, PowerState, RbdImage
from microcloudd.stack import guest_ceph
from microcloudd.stack.layout import Layout
from tests.fixtures.libvirt import random_mac, unique

pytestmark = pytest.mark.timeout(600)

CLONE_NEWNET = 0x40000000
SUBNET = "10.77.0"


# ---- Ceph ports inside the chassis namespace ---------------------------------------------

def listen_in_netns(netns: str, ports: range) -> list[socket.socket]:
    """Listening sockets bound in `netns` (setns is per thread: a helper thread enters it,
    the sockets keep their namespace after the thread is gone)."""
    out: list[socket.socket] = []
    errors: list[BaseException] = []

    def enter_and_listen() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            for port in ports:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                s.listen(64)
                s.setblocking(False)
                out.append(s)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=enter_and_listen)
    t.start()
    t.join()
    if errors:
        for s in out:
            s.close()
        raise errors[0]
    return out


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def forward_ports(netns: str, ports: range) -> AsyncIterator[None]:
    servers = []

    def handler(port: int) -> Any:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                ur, uw = await asyncio.open_connection("127.0.0.1", port)  # the host's loopback
            except OSError:
                w.close()
                return
            await asyncio.gather(_pipe(r, uw), _pipe(ur, w))

        return handle

    socks = await asyncio.to_thread(listen_in_netns, netns, ports)
    try:
        for s in socks:
            servers.append(await asyncio.start_server(handler(s.getsockname()[1]), sock=s))
        yield
    finally:
        for srv in servers:
            srv.close()
        for s in socks:
            s.close()


# ---- OVN switch with DHCP and a probe port in its own namespace ---------------------------

@dataclass
class GuestNet:
    ls: str
    dhcp: str
    probe_ns: str
    nbctl: Any

    def add_vm_port(self, mac: str) -> tuple[str, str]:
        """An LSP named by a UUID (libvirt wants one) with a dynamic address; returns (id, ip)."""
        lsp = str(uuid.uuid4())
        self.nbctl("lsp-add", self.ls, lsp, "--", "lsp-set-addresses", lsp, f"{mac} dynamic",
                   "--", "lsp-set-dhcpv4-options", lsp, self.dhcp)
        dyn = self.nbctl("get", "Logical_Switch_Port", lsp, "dynamic_addresses").strip().strip('"')
        return lsp, dyn.split()[1]


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def guest_net(ovn_central: Any, ovs_chassis: Any) -> Iterator[GuestNet]:
    tag = uuid.uuid4().hex[:8]
    ls, probe_ns, host_if, ns_if = f"mc-ls-{tag}", f"mcprobe-{tag}", f"mcp{tag}", f"mcq{tag}"
    nb = ovn_central.nbctl
    nb("ls-add", ls, "--", "set", "Logical_Switch", ls, f"other_config:subnet={SUBNET}.0/24",
       f'other_config:exclude_ips="{SUBNET}.1..{SUBNET}.9"')
    try:
        dhcp = nb("create", "DHCP_Options", f"cidr={SUBNET}.0/24",
                  f'options="lease_time"="3600" "router"="{SUBNET}.1" "server_id"="{SUBNET}.1" '
                  f'"server_mac"="0a:00:00:77:00:01" "mtu"="1400"').strip()
        nb("lsp-add", ls, f"probe-{tag}", "--", "lsp-set-addresses", f"probe-{tag}",
           f"0a:00:00:77:00:05 {SUBNET}.5")
        sh("ip", "netns", "add", probe_ns)
        try:
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", probe_ns)
            sh("ip", "link", "set", host_if, "netns", ovs_chassis.netns)
            sh("ip", "-n", ovs_chassis.netns, "link", "set", host_if, "up")
            sh("ip", "-n", probe_ns, "link", "set", "lo", "up")
            sh("ip", "-n", probe_ns, "link", "set", ns_if, "address", "0a:00:00:77:00:05")
            sh("ip", "-n", probe_ns, "addr", "add", f"{SUBNET}.5/24", "dev", ns_if)
            sh("ip", "-n", probe_ns, "link", "set", ns_if, "up")
            # the userspace datapath does not fill in partial checksums from the veth
            sh("ip", "netns", "exec", probe_ns, "ethtool", "-K", ns_if, "tx", "off")
            ovs_chassis.vsctl("add-port", "br-int", host_if, "--", "set", "Interface", host_if,
                              f"external_ids:iface-id=probe-{tag}")
            yield GuestNet(ls, dhcp, probe_ns, nb)
        finally:
            with contextlib.suppress(Exception):
                ovs_chassis.vsctl("--if-exists", "del-port", "br-int", host_if)
            subprocess.run(["ip", "-n", ovs_chassis.netns, "link", "del", host_if], capture_output=True)
            subprocess.run(["ip", "netns", "del", probe_ns], capture_output=True)
    finally:
        nb("--if-exists", "ls-del", ls)
        with contextlib.suppress(Exception):
            nb("destroy", "DHCP_Options", dhcp)


# ---- RBD: golden image, COW clone, seed, a data volume ------------------------------------

@dataclass
class GuestDisks:
    pool: str
    root: str
    seed: str
    data: str


def prepare_rbd(ceph: Any, pool: str, image: Path, seed_iso: bytes, name: str) -> GuestDisks:
    import rbd

    with ceph.rados() as cluster, cluster.open_ioctx(pool) as io:
        r = rbd.RBD()
        size = image.stat().st_size
        r.create(io, "golden", size, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(io, "golden") as img:
            img.write(image.read_bytes(), 0)
            img.create_snap("base")
            img.protect_snap("base")
        r.clone(io, "golden", "base", io, f"{name}-root", features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(io, f"{name}-root") as img:
            img.resize(256 << 20)
        r.create(io, f"{name}-seed", len(seed_iso), old_format=False, features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(io, f"{name}-seed") as img:
            img.write(seed_iso, 0)
        r.create(io, f"{name}-data", 64 << 20, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    return GuestDisks(pool, f"{name}-root", f"{name}-seed", f"{name}-data")


# ---- the guest ---------------------------------------------------------------------------

DIAG: dict[str, Callable[[], str]] = {}


async def wait_log(drv: LibvirtDriver, name: str, pattern: str, timeout: float = 60.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while True:
        text = (await drv.read_console_log(name)).decode(errors="replace")
        if m := rx.search(text):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not on the serial console after {timeout}s:\n{text[-3000:]}\n"
                                 f"{DIAG.get('qemu_log', lambda: '')()}")
        await asyncio.sleep(0.25)


async def wait_disks(drv: LibvirtDriver, name: str, ok: Callable[[list[str]], bool],
                     timeout: float = 60.0) -> None:
    """Until the guest's latest "BLOCKDEVS [...]" report satisfies `ok`."""
    deadline = time.monotonic() + timeout
    while True:
        text = (await drv.read_console_log(name)).decode(errors="replace")
        reports = re.findall(r"MCTEST: BLOCKDEVS \[([^\]]*)\]", text)
        if reports and ok(reports[-1].split()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"guest disks never matched; reports: {reports[-5:]}")
        await asyncio.sleep(0.25)


async def http_get(netns: str, url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, "curl", "-s", "--max-time", "5", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode() if proc.returncode == 0 else ""


async def console_roundtrip(drv: LibvirtDriver, name: str) -> str:
    token = uuid.uuid4().hex[:8]
    console = await drv.open_console(name)
    try:
        await console.write(f"\necho console-{token}-$((6*7))\n".encode())
        seen = b""
        async with asyncio.timeout(20):
            while f"console-{token}-42".encode() not in seen:
                chunk = await console.read()
                assert chunk, "console closed early"
                seen += chunk
        return seen.decode(errors="replace")
    finally:
        await console.close()


async def test_guest_boots_from_rbd_gets_ovn_dhcp_and_serves_http(
        ceph: Any, rbd_pool: str, private_libvirtd: Any, ovs_chassis: Any, guest_net: GuestNet,
        test_image: Path, tmp_path: Path) -> None:
    name = unique("guest")
    iid = f"iid-{uuid.uuid4().hex[:12]}"
    seed = await asyncio.to_thread(build_seed_iso, Seed(iid, name))
    disks = await asyncio.to_thread(prepare_rbd, ceph, rbd_pool, test_image, seed, name)
    mac = random_mac()
    lsp, expected_ip = await asyncio.to_thread(guest_net.add_vm_port, mac)
    mon_host, mon_port = ceph.mon_host.rsplit(":", 1)
    secret = str(uuid.uuid4())

    def rbd(image: str) -> RbdImage:
        return RbdImage(rbd_pool, image, (CephMonitor(mon_host, int(mon_port)),), ceph.user, secret)

    spec = DomainSpec(instance=name, uuid=str(uuid.uuid4()), vcpus=1, memory_mib=256,
                      root=rbd(disks.root), seed=rbd(disks.seed), nics=(Nic(mac=mac, port_id=lsp),),
                      console_log=tmp_path / "console.log")
    qlog = private_libvirtd.state_dir / "log" / "qemu" / f"{spec.name}.log"
    DIAG["qemu_log"] = lambda: f"--- {qlog}:\n" + (qlog.read_text()[-3000:] if qlog.exists() else "(none)")
    # the guest ceph.conf the daemon writes (stack/guest_ceph.py): the guest boots with it
    conf = await asyncio.to_thread(guest_ceph.write, Layout(tmp_path / "member"), ceph.mon_host,
                                   host_libvirt=False)
    assert conf is not None
    drv = await LibvirtDriver.connect(private_libvirtd.uri, owner=unique("it-owner"), guest_ceph_conf=conf)
    try:
        async with forward_ports(ovs_chassis.netns, range(ceph.base_port, ceph.base_port + 100)):
            await drv.ensure_ceph_secret(secret, ceph.user, ceph.admin_key)
            await drv.ensure_ceph_secret(secret, ceph.user, ceph.admin_key)  # idempotent
            await drv.define(spec)
            with drv.subscribe() as events:
                await drv.start(spec.name)
                kinds = []
                while "started" not in kinds:  # QEMU starts paused: RESUMED may come first
                    ev = await events.get(wait=30)
                    if ev.name == spec.name:
                        kinds.append(ev.kind)
            st = await drv.state(spec.name)
            assert st.state == PowerState.RUNNING and st.virt_type == drv.virt_type
            live = await drv._lt.call(lambda: drv._c.lookupByName(spec.name).XMLDesc(0))
            assert live.count(f"<config file='{conf}'/>") == 2, live  # root and seed

            seen = await wait_log(drv, spec.name, r"MCTEST: SEED dev=\S+ instance-id=(\S+) hostname=(\S+)")
            assert (seen.group(1), seen.group(2)) == (iid, name)
            lease = await wait_log(drv, spec.name, r"MCTEST: LEASE ip=(\S+)")
            assert lease.group(1) == expected_ip
            await wait_log(drv, spec.name, r"MCTEST: HTTP-UP")

            body = ""
            for _ in range(20):
                body = await http_get(guest_net.probe_ns, f"http://{expected_ip}/")
                if body:
                    break
                await asyncio.sleep(0.5)
            assert f"instance-id={iid}" in body

            assert "console-" in await console_roundtrip(drv, spec.name)

            # live attach / detach of a custom volume: the guest reports its disks change
            target = await drv.attach_disk(spec.name, Disk(rbd(disks.data)))
            assert target == "vdb"
            assert target in [d.target for d in (await drv.get(spec.name)).disks]
            await wait_disks(drv, spec.name, lambda devs: "vdb" in devs)
            live = await drv._lt.call(lambda: drv._c.lookupByName(spec.name).XMLDesc(0))
            assert live.count(f"<config file='{conf}'/>") == 3, live  # and the hot-plugged disk
            assert await drv.detach_disk(spec.name, target)
            await wait_disks(drv, spec.name, lambda devs: "vdb" not in devs)
            assert (await drv.get(spec.name)).disks == []

            # stop: the ACPI power button; the guest powers itself off within the grace period
            t0 = time.monotonic()
            assert await drv.stop(spec.name, grace=30), "the guest ignored the power button"
            assert time.monotonic() - t0 < 30
            await wait_log(drv, spec.name, r"MCTEST: POWER-BUTTON", 5)
            assert (await drv.state(spec.name)).state == PowerState.STOPPED
            assert await drv.undefine(spec.name)
            assert await drv.delete_ceph_secret(secret)
    finally:
        with contextlib.suppress(Exception):
            await drv.undefine(spec.name, force=True)
        with contextlib.suppress(Exception):
            await drv.delete_ceph_secret(secret)
        await drv.close()
        await asyncio.to_thread(guest_net.nbctl, "--if-exists", "lsp-del", lsp)
