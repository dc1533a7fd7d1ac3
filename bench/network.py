"""Network driver figures against the raw backend (a throwaway NB/SB + northd):

- network creation latency (switch, router, 2 router ports, SNAT, route, DHCP, DNS, uplink
  port, gateway chassis: one transaction) beside one `ovn-nbctl` call building the same rows;
- 1,000 ports added in one batch (create_ports) beside one `ovn-nbctl` call adding 1,000
  ports with addresses, DHCP options and external_ids (the floor);
- northd catching up on each (nbctl --wait=sb sync).

    .venv/bin/python -m bench.network [--networks 20] [--ports 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from microcloudd.components import ovn
from microcloudd.drivers.network.base import DesiredState, NetworkSpec, PortSpec, UplinkSpec
from microcloudd.drivers.network.ovn import OvnNetworkDriver
from tests.support import proc


def nbctl(env: dict[str, str], *args: str) -> str:
    return subprocess.run(["ovn-nbctl", "--timeout=60", *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def nbctl_network(i: int) -> list[str]:
    """The rows of one network, as one ovn-nbctl command line."""
    n = f"raw{i}"
    sub = f"10.{100 + i // 250}.{i % 250}"
    return [
        "--", "ls-add", f"{n}-ls", "--", "set", "Logical_Switch", f"{n}-ls",
        f"other_config:subnet={sub}.0/24", f"other_config:exclude_ips={sub}.1",
        "--", "lr-add", f"{n}-lr",
        "--", "lrp-add", f"{n}-lr", f"{n}-lrp-int", "0a:00:00:00:01:01", f"{sub}.1/24",
        "--", "lrp-add", f"{n}-lr", f"{n}-lrp-ext", "0a:00:00:00:01:02",
        f"198.18.{i // 250}.{i % 250 + 2}/16",
        "--", "lrp-set-gateway-chassis", f"{n}-lrp-ext", "bench-gw", "1",
        "--", "lsp-add", f"{n}-ls", f"{n}-ls-lr", "--", "lsp-set-type", f"{n}-ls-lr", "router",
        "--", "lsp-set-addresses", f"{n}-ls-lr", "router",
        "--", "lsp-set-options", f"{n}-ls-lr", f"router-port={n}-lrp-int",
        "--", "lsp-add", "raw-uplink", f"{n}-ls-ext", "--", "lsp-set-type", f"{n}-ls-ext", "router",
        "--", "lsp-set-addresses", f"{n}-ls-ext", "router",
        "--", "lsp-set-options", f"{n}-ls-ext", f"router-port={n}-lrp-ext",
        "--", "lr-nat-add", f"{n}-lr", "snat", f"198.18.{i // 250}.{i % 250 + 2}", f"{sub}.0/24",
        "--", "lr-route-add", f"{n}-lr", "0.0.0.0/0", "198.18.0.1",
        "--", "--id=@d", "create", "DHCP_Options", f"cidr={sub}.0/24",
        f'options:router={sub}.1', f'options:server_id={sub}.1', "options:lease_time=3600",
        "--", "--id=@dns", "create", "DNS", "records={}",
        "--", "add", "Logical_Switch", f"{n}-ls", "dns_records", "@dns",
    ]


def main(networks: int, ports: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mcbench-net-") as tmp:
        paths = ovn.CentralPaths(Path(tmp))
        ovn.bootstrap_central(paths)
        running = []
        try:
            t0 = time.perf_counter()
            for spec in ovn.central_specs(paths):
                running.append(proc.start(spec, paths.state_dir / "log"))
            print(f"NB + SB + northd up:                {ms(time.perf_counter() - t0)}")
            env = {**os.environ, **ovn.private_env(paths.run_dir), "OVN_NB_DB": paths.nb_remote,
                   "OVN_SB_DB": paths.sb_remote}
            asyncio.run(run(env, paths.nb_remote, networks, ports))
        finally:
            for r in reversed(running):
                r.stop()


async def run(env: dict[str, str], nb_remote: str, networks: int, ports: int) -> None:
    t0 = time.perf_counter()
    d = await OvnNetworkDriver.connect(nb_remote, owner=f"bench-{uuid.uuid4().hex[:6]}", prefix="bench")
    print(f"driver connect (schema + replica):  {ms(time.perf_counter() - t0)}")
    await d.ensure_uplink(UplinkSpec(cidr="198.18.0.0/16", gateway="198.18.0.1",
                                     ip_range=("198.18.1.2", "198.18.255.254"),
                                     gateway_chassis=("bench-gw",)))
    nbctl(env, "ls-add", "raw-uplink")

    print(f"\n-- network creation ({networks} networks, one at a time)")
    ours, raw = [], []
    for i in range(networks):
        t = time.perf_counter()
        await d.create_network(NetworkSpec(name=f"b{i}", ipv4_address=f"10.{i // 250}.{i % 250}.1/24"))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        nbctl(env, *nbctl_network(i))
        raw.append(time.perf_counter() - t)
    t = time.perf_counter()
    nbctl(env, "--wait=sb", "sync")
    t_sb = time.perf_counter() - t
    m_ours, m_raw = statistics.median(ours), statistics.median(raw)
    print(f"driver create_network median        {ms(m_ours)}  (p90 {ms(sorted(ours)[int(0.9 * len(ours))])})")
    print(f"ovn-nbctl one call median (floor)   {ms(m_raw)}")
    print(f"ratio driver / nbctl                {m_ours / m_raw:8.2f}x")
    print(f"northd catch-up after all of them   {ms(t_sb)}")
    t = time.perf_counter()
    await d.delete_network("b0")
    print(f"driver delete_network               {ms(time.perf_counter() - t)}")

    print(f"\n-- {ports} ports in one batch")
    await d.create_network(NetworkSpec(name="big", ipv4_address="10.250.0.1/16"))
    specs = [PortSpec(network="big", name=f"vm{i}/eth0", ipv4=f"10.250.{(i + 2) // 256}.{(i + 2) % 256}")
             for i in range(ports)]
    t = time.perf_counter()
    made = await d.create_ports(specs)
    t_ours = time.perf_counter() - t
    assert len(made) == ports
    t = time.perf_counter()
    nbctl(env, "--wait=sb", "sync")
    t_sb_ours = time.perf_counter() - t

    nbctl(env, "ls-add", "raw-big", "--", "set", "Logical_Switch", "raw-big",
          "other_config:subnet=10.251.0.0/16")
    dhcp = nbctl(env, "create", "DHCP_Options", "cidr=10.251.0.0/16", "options:router=10.251.0.1").strip()
    argv: list[str] = []
    for i in range(ports):
        p = str(uuid.uuid4())
        addr = f"0a:00:00:fb:{(i + 2) // 256:02x}:{(i + 2) % 256:02x} 10.251.{(i + 2) // 256}.{(i + 2) % 256}"
        argv += ["--", "lsp-add", "raw-big", p, "--", "lsp-set-addresses", p, addr,
                 "--", "lsp-set-port-security", p, addr, "--", "lsp-set-dhcpv4-options", p, dhcp,
                 "--", "set", "Logical_Switch_Port", p, f'external_ids:"microcloud:name"="vm{i}/eth0"']
    t = time.perf_counter()
    nbctl(env, *argv)
    t_raw = time.perf_counter() - t
    t = time.perf_counter()
    nbctl(env, "--wait=sb", "sync")
    t_sb_raw = time.perf_counter() - t
    print(f"driver create_ports (one txn)       {ms(t_ours)}  ({t_ours / ports * 1e6:.0f} us/port)")
    print(f"ovn-nbctl one call (floor)          {ms(t_raw)}  ({t_raw / ports * 1e6:.0f} us/port)")
    print(f"ratio driver / nbctl                {t_ours / t_raw:8.2f}x")
    print(f"northd catch-up: driver ports       {ms(t_sb_ours)}; nbctl ports {ms(t_sb_raw)}")
    t = time.perf_counter()
    listed = await d.list_ports("big")
    print(f"driver list_ports ({len(listed)})            {ms(time.perf_counter() - t)}")
    t = time.perf_counter()
    await d.reconcile(DesiredState())
    print(f"reconcile to empty (delete all)     {ms(time.perf_counter() - t)}")
    await d.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--ports", type=int, default=1000)
    a = ap.parse_args()
    main(a.networks, a.ports)
