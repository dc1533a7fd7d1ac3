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
from pathlib import Path

from microcloudd.drivers.network import host
from microcloudd.stack.layout import NETNS_PREFIX, Layout


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


FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")


def note_forwarding(lay: Layout) -> None:
    """Keep the host's IPv4 forwarding setting from before this member first turned it on (the
    NAT uplink, the egress rule), so `purge` can put it back."""
    if not lay.forwarding_note.exists():
        lay.forwarding_note.write_text(FORWARDING.read_text())


def restore_forwarding(lay: Layout) -> bool:
    """After the member is gone: forwarding back off if it was off before us and no other
    microcloud on this host has its namespace (it may route through the host too)."""
    note = lay.forwarding_note
    if not note.exists():
        return False
    before = note.read_text().strip()
    note.unlink()
    if before != "0" or other_microclouds(lay):
        return False
    FORWARDING.write_text("0\n")
    return True


def other_microclouds(lay: Layout) -> list[str]:
    """The namespaces of the other microclouds on this host (as `ip netns`, from /run/netns)."""
    run = Path("/run/netns")
    names = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
    return [n for n in names if n.startswith(NETNS_PREFIX) and n != lay.netns]


def ensure_egress(lay: Layout) -> None:
    """Traffic from the namespace to other machines leaves with the host's address: forwarding
    on and a masquerade rule for the namespace's address on any other way out."""
    note_forwarding(lay)
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
