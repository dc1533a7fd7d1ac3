"""The member's network namespace and its veth link to the host (blocking: call off the loop).

Everything is idempotent: `ensure()` after a reboot (the namespace and veth are gone) or after
a crash (they are still there) ends in the same state; `remove()` takes it all away.

The link's addresses are link-local (169.254/16): enough for what the namespace reaches on
this host (our Ceph monitor and OSDs listen on the host end). When QEMU in the namespace must
reach machines beyond the host (an external Ceph cluster), `ensure_egress()` turns on
forwarding and masquerades the namespace's address behind the host's own.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from microcloudd.api.errors import Internal, Unavailable
from microcloudd.stack.layout import Layout


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    except FileNotFoundError as e:
        raise Unavailable("the `ip` command (iproute2) is not installed") from e
    if check and done.returncode != 0:
        raise Internal(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _exists(netns: str) -> bool:
    return Path("/run/netns", netns).exists()


def ensure(lay: Layout) -> None:
    """The namespace with lo up, the veth pair with its /30, a default route to the host."""
    ns = lay.netns
    if not _exists(ns):
        _ip("netns", "add", ns)
    _ip("-n", ns, "link", "set", "lo", "up")
    if _ip("link", "show", lay.host_link, check=False).returncode != 0:
        # A half-made pair (crash between the two steps) has its peer in the namespace.
        _ip("-n", ns, "link", "del", lay.ns_link, check=False)
        _ip("link", "add", lay.host_link, "type", "veth", "peer", "name", lay.ns_link, "netns", ns)
    prefix = lay.link_net.prefixlen
    _ip("addr", "replace", f"{lay.host_ip}/{prefix}", "dev", lay.host_link)
    _ip("link", "set", lay.host_link, "up")
    _ip("-n", ns, "addr", "replace", f"{lay.ns_ip}/{prefix}", "dev", lay.ns_link)
    _ip("-n", ns, "link", "set", lay.ns_link, "up")
    _ip("-n", ns, "route", "replace", "default", "via", lay.host_ip)


def egress_table(lay: Layout) -> str:
    return f"microcloud_{lay.tag}_link"


def _nft(script: str) -> None:
    try:
        done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=20)
    except FileNotFoundError as e:
        raise Unavailable("the `nft` command (nftables) is not installed") from e
    if done.returncode != 0:
        raise Internal(f"nft failed: {done.stderr.strip()}")


def ensure_egress(lay: Layout) -> None:
    """Traffic from the namespace to other machines leaves with the host's address: forwarding
    on and a masquerade rule, the table replaced atomically (re-running never duplicates it)."""
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    table = egress_table(lay)
    _nft(f"table ip {table} {{}}\n"
         f"delete table ip {table}\n"
         f"table ip {table} {{\n"
         "  chain postrouting {\n"
         "    type nat hook postrouting priority srcnat; policy accept;\n"
         f'    ip saddr {lay.ns_ip} oifname != "{lay.host_link}" masquerade\n'
         "  }\n"
         "}\n")


def remove_egress(lay: Layout) -> None:
    with contextlib.suppress(FileNotFoundError):
        subprocess.run(["nft", "delete", "table", "ip", egress_table(lay)], capture_output=True, timeout=20)


def remove(lay: Layout) -> None:
    """Delete the egress rule, the veth pair and the namespace (nothing must run in it any more)."""
    remove_egress(lay)
    _ip("link", "del", lay.host_link, check=False)
    if _exists(lay.netns):
        _ip("netns", "del", lay.netns, check=False)


def exec_prefix(lay: Layout) -> list[str]:
    return ["ip", "netns", "exec", lay.netns]
