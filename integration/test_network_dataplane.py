"""Real packets through a microcloud network: namespaces bound as OVN ports take DHCP leases
from OVN, ping each other, an ACL blocks one port and not another, and traffic leaves
through the router's SNAT and the host NAT uplink (both "host" and "outside" are namespaces
made here; nothing goes near the machine's own network)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from microcloudd.drivers.network import host
from microcloudd.drivers.network.base import (
    AclRule,
    AclSpec,
    DesiredState,
    ForwardPort,
    ForwardSpec,
    NetworkSpec,
    PortSpec,
    UplinkSpec,
)
from microcloudd.drivers.network.ovn import OvnNetworkDriver

pytestmark = pytest.mark.slow

UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc hook: apply the lease and record what OVN offered
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "$router"
    echo "ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu lease=$lease domain=$domain" > "$LEASE_FILE"
    ;;
esac
"""

# Accepts connections and answers each with the address it came from.
ECHO_PEER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8); s.settimeout(120)
    print("ready", flush=True)
    while True:
        c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
""")
CONNECT = textwrap.dedent("""
    import socket, sys
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
        print(c.recv(100).decode())
    except OSError as e:
        print("FAIL", type(e).__name__)
""")


def sh(ns: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=check, timeout=timeout)


def pings(ns: str, addr: str) -> bool:
    return sh(ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", addr, check=False).returncode == 0


def connect(ns: str, addr: str, port: int) -> str:
    return sh(ns, sys.executable, "-c", CONNECT, addr, str(port)).stdout.strip()


@contextlib.contextmanager
def echo_server(ns: str, addr: str, port: int) -> Any:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO_PEER, addr, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Site:
    driver: OvnNetworkDriver
    chassis: Any
    network: str
    host_ns: str  # holds the uplink gateway 192.0.2.1 and masquerades
    outside_ns: str  # 198.51.100.2, reachable only through the host's masquerade
    tmp: Path
    nb_remote: str


@pytest_asyncio.fixture
async def site(ovn_central: Any, ovs_chassis: Any, tmp_path: Path) -> AsyncIterator[Site]:
    tag = uuid.uuid4().hex[:6]
    host_ns, outside_ns = f"mch-{tag}", f"mco-{tag}"
    uplink = host.HostNatUplink(gateway="192.0.2.1/24", name=f"mu{tag}", netns=host_ns)
    driver = await OvnNetworkDriver.connect(ovn_central.nb_remote, owner=f"it-{tag}", prefix=f"i{tag}")
    try:
        await asyncio.to_thread(_outside_world, host_ns, outside_ns, tag)
        await uplink.apply(ovs_chassis.config)
        await uplink.apply(ovs_chassis.config)  # idempotent
        await driver.ensure_uplink(UplinkSpec(
            cidr="192.0.2.0/24", gateway="192.0.2.1", ip_range=("192.0.2.100", "192.0.2.199"),
            gateway_chassis=(ovs_chassis.chassis_name,), dns_servers=("192.0.2.53",)))
        name = f"dp{tag}"
        await driver.create_network(NetworkSpec(name=name, ipv4_address="10.70.0.1/24", lease_time=300))
        yield Site(driver, ovs_chassis, name, host_ns, outside_ns, tmp_path, ovn_central.nb_remote)
    finally:
        with contextlib.suppress(Exception):
            await driver.reconcile(DesiredState())
            await driver._change(_drop_uplink)
        await driver.close()
        await uplink.remove(ovs_chassis.config)
        await host.delete_namespace(host_ns)
        await host.delete_namespace(outside_ns)


def _outside_world(host_ns: str, outside_ns: str, tag: str) -> None:
    """host_ns (198.51.100.1) <-> outside_ns (198.51.100.2), which has no route back to the uplink."""
    host.ensure_netns(host_ns)
    host.ensure_netns(outside_ns)
    for argv in (
        ["-n", host_ns, "link", "add", f"ho{tag}", "type", "veth",
         "peer", "name", f"oh{tag}", "netns", outside_ns],
        ["-n", host_ns, "addr", "add", "198.51.100.1/24", "dev", f"ho{tag}"],
        ["-n", host_ns, "link", "set", f"ho{tag}", "up"],
        ["-n", outside_ns, "addr", "add", "198.51.100.2/24", "dev", f"oh{tag}"],
        ["-n", outside_ns, "link", "set", f"oh{tag}", "up"],
    ):
        subprocess.run(["ip", *argv], check=True)


def _drop_uplink(nb: Any) -> None:
    for table in ("Logical_Switch", "Port_Group"):
        for row in nb.owned(table):
            row.delete()


async def _wait_up(driver: OvnNetworkDriver, port_id: str, within: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (await driver.get_port(port_id)).up:
        assert loop.time() < deadline, f"port {port_id} never came up"
        await asyncio.sleep(0.1)


def dhcp(site: Site, ns: str) -> dict[str, str]:
    script = site.tmp / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    lease_file = site.tmp / f"{ns}.lease"
    subprocess.run(["ip", "netns", "exec", ns, "env", f"LEASE_FILE={lease_file}", "busybox", "udhcpc",
                    "-i", "eth0", "-n", "-q", "-f", "-t", "10", "-T", "1", "-s", str(script)],
                   check=True, capture_output=True, timeout=30)
    return dict(kv.split("=", 1) for kv in lease_file.read_text().split())


async def test_dhcp_ping_acl_snat_and_forward(site: Site) -> None:
    d, chassis = site.driver, site.chassis.config
    web_only = AclRule(action="allow", protocol="tcp", destination_port="8080")
    acl = AclSpec(name="web-only", ingress=(web_only,))
    await d.create_acl(acl)
    ports = [await d.create_port(PortSpec(network=site.network, name=f"vm{i}/eth0", hostname=f"vm{i}"))
             for i in (1, 2, 3)]
    tag = uuid.uuid4().hex[:6]
    bound = []
    try:
        for i, p in enumerate(ports, 1):
            bound.append(await host.bind_namespace_port(chassis, p.id, p.mac, f"mcv{i}-{tag}"))
        for p in ports:
            await _wait_up(d, p.id)

        # DHCP from OVN: the lease is the address OVN allocated, with our options
        leases = []
        for b, p in zip(bound, ports, strict=True):
            lease = dhcp(site, b.netns)
            assert lease["ip"] == p.ipv4 and lease["router"] == "10.70.0.1" and lease["mask"] == "24"
            assert lease["dns"] == "192.0.2.53" and lease["mtu"] == "1442" and lease["lease"] == "300"
            assert lease["domain"] == "microcloud"
            leases.append(lease["ip"])
        ns1, ns2, ns3 = (b.netns for b in bound)
        assert {(le.hostname, le.address) for le in await d.leases(site.network) if le.type == "dynamic"} == {
            ("vm1", leases[0]), ("vm2", leases[1]), ("vm3", leases[2])}

        # L2 within the network, L3 to the router
        assert pings(ns1, leases[1]) and pings(ns1, leases[2]) and pings(ns1, "10.70.0.1")

        with echo_server(ns2, leases[1], 8080), echo_server(ns3, leases[2], 8080):
            assert connect(ns1, leases[1], 8080) == leases[0]  # TCP works (checksums fixed)
            # the ACL on vm2 only: ping to vm2 blocked, TCP 8080 allowed; vm3 untouched
            await d.set_port_acls(ports[1].id, ("web-only",))
            await _sync_hv(site)
            assert not pings(ns1, leases[1])
            assert connect(ns1, leases[1], 8080) == leases[0]
            assert pings(ns1, leases[2])
            # forward: 192.0.2.150:80 on the uplink -> vm2:8080, reached from the host side
            to_vm2 = ForwardPort(protocol="tcp", listen_port="80", target_address=leases[1],
                                 target_port="8080")
            await d.create_forward(site.network, ForwardSpec(listen_address="192.0.2.150", ports=(to_vm2,)))
            await _sync_hv(site)
            assert connect(site.host_ns, "192.0.2.150", 80) == "192.0.2.1"

        # out through the router's SNAT to the uplink side, and on through the host's masquerade
        with echo_server(site.host_ns, "192.0.2.1", 9000), echo_server(site.outside_ns, "198.51.100.2", 9000):
            assert pings(ns1, "192.0.2.1")
            assert connect(ns1, "192.0.2.1", 9000) == "192.0.2.100"  # the network's SNAT address
            assert connect(ns3, "198.51.100.2", 9000) == "198.51.100.1"  # masqueraded by the host
    finally:
        for b in bound:
            await host.unbind_namespace_port(chassis, b)


async def _sync_hv(site: Site) -> None:
    """ovn-nbctl --wait=hv: returns once every chassis has installed the flows for the change."""
    proc = await asyncio.create_subprocess_exec(
        "ovn-nbctl", f"--db={site.nb_remote}", "--timeout=20", "--wait=hv", "sync",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err
