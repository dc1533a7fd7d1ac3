"""The member's network namespace and its veth link to the host (blocking: call off the loop).

Everything is idempotent: `ensure()` after a reboot (the namespace and veth are gone) or after
a crash (they are still there) ends in the same state; `remove()` takes it all away.

The link's addresses are link-local (169.254/16): enough for what the namespace reaches on
this host (our Ceph monitor and OSDs listen on the host end). When QEMU in the namespace must
reach machines beyond the host (an external Ceph cluster), `ensure_egress()` turns on
forwarding and masquerades the namespace's address behind the host's own.
"""

from __future__ import annotations

import subprocess

from microcloudd.drivers.network import host
from microcloudd.stack.layout import Layout


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return host.run_ip(None, *args, check=check)


_exists = host.netns_exists


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


def ensure_egress(lay: Layout) -> None:
    """Traffic from the namespace to other machines leaves with the host's address: forwarding
    on and a masquerade rule for the namespace's address on any other way out."""
    host.masquerade(egress_table(lay), f'ip saddr {lay.ns_ip} oifname != "{lay.host_link}"')


def remove_egress(lay: Layout) -> None:
    host.delete_nft_table(egress_table(lay))


def remove(lay: Layout) -> None:
    """Delete the egress rule, the veth pair and the namespace (nothing must run in it any more)."""
    remove_egress(lay)
    _ip("link", "del", lay.host_link, check=False)
    if _exists(lay.netns):
        _ip("netns", "del", lay.netns, check=False)


def exec_prefix(lay: Layout) -> list[str]:
    return ["ip", "netns", "exec", lay.netns]
