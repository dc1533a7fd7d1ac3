"""Checking and choosing addresses: subnets, gateways, overlap, MACs, uplink addresses."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable

from microcloudd.api.errors import InvalidArgument, QuotaExceeded

IPv4If = ipaddress.IPv4Interface
IPv6If = ipaddress.IPv6Interface
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def gateway_v4(value: str, what: str = "ipv4.address") -> IPv4If:
    """"10.1.0.1/24" -> the gateway interface; refuses host bits all zero/one, odd prefixes."""
    try:
        iface = ipaddress.IPv4Interface(value)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{what} {value!r} is not an IPv4 address/prefix (10.1.0.1/24)") from None
    net = iface.network
    if "/" not in str(value) or not 8 <= net.prefixlen <= 30:
        raise InvalidArgument(f"{what} {value!r} needs a prefix length between /8 and /30")
    if iface.ip in (net.network_address, net.broadcast_address):
        raise InvalidArgument(f"{what} {value!r}: the gateway cannot be the network or broadcast address")
    if iface.ip.is_multicast or iface.ip.is_loopback or iface.ip.is_link_local or iface.ip.is_unspecified:
        raise InvalidArgument(f"{what} {value!r} is not a unicast subnet")
    return iface


def gateway_v6(value: str, what: str = "ipv6.address") -> IPv6If:
    try:
        iface = ipaddress.IPv6Interface(value)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{what} {value!r} is not an IPv6 address/prefix (fd42:1::1/64)") from None
    if "/" not in str(value) or iface.network.prefixlen != 64:
        raise InvalidArgument(f"{what} {value!r} must be a /64 (router advertisements need it)")
    if iface.ip == iface.network.network_address or iface.ip.is_multicast or iface.ip.is_link_local:
        raise InvalidArgument(f"{what} {value!r} is not a usable gateway address")
    return iface


def overlap(
    candidate: ipaddress.IPv4Network | ipaddress.IPv6Network,
    taken: Iterable[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]],
) -> str | None:
    """The label of the first taken subnet `candidate` overlaps, or None."""
    for label, net in taken:
        if net.version == candidate.version and net.overlaps(candidate):
            return label
    return None


def check_mac(mac: str) -> str:
    m = mac.lower()
    if not _MAC.match(m) or int(m[:2], 16) & 1:
        raise InvalidArgument(f"MAC address {mac!r} is not a unicast MAC like 0a:12:34:56:78:9a")
    return m


def random_mac() -> str:
    # Locally administered, unicast (0x0a first octet), as OVN's own dynamic MACs.
    return "0a:" + ":".join(f"{random.randrange(256):02x}" for _ in range(5))


def host_address(value: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network, what: str) -> str:
    """`value` as an address inside `net` (not its network/broadcast address)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidArgument(f"{what} {value!r} is not an IP address") from None
    if ip.version != net.version or ip not in net:
        raise InvalidArgument(f"{what} {value} is not inside {net}")
    if ip == net.network_address or (net.version == 4 and ip == net.broadcast_address):
        raise InvalidArgument(f"{what} {value} is the network or broadcast address of {net}")
    return str(ip)


MAX_FORWARD_PORTS = 1000


def port_list(value: str, what: str) -> list[int]:
    """The ports of a forward's "80,443,8000-8010": each 1-65535, at most MAX_FORWARD_PORTS
    (counted before the ranges are expanded)."""
    ranges: list[tuple[int, int]] = []
    for item in (x.strip() for x in value.split(",")):
        lo_s, _, hi_s = item.partition("-")
        try:
            lo, hi = int(lo_s), int(hi_s or lo_s)
        except ValueError:
            raise InvalidArgument(f"forward {what} {item!r} is not a port or port range") from None
        if not 0 < lo <= hi <= 65535:
            raise InvalidArgument(f"forward {what} {item!r} is out of range 1-65535")
        ranges.append((lo, hi))
    if sum(hi - lo + 1 for lo, hi in ranges) > MAX_FORWARD_PORTS:
        raise InvalidArgument(f"forward {what} {value!r} names more than {MAX_FORWARD_PORTS} ports")
    return [port for lo, hi in ranges for port in range(lo, hi + 1)]


def pick_from_range(first: str, last: str, used: set[str]) -> str:
    lo, hi = ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)
    ip = lo
    while ip <= hi:
        if str(ip) not in used:
            return str(ip)
        ip += 1
    raise QuotaExceeded(f"no free address left on the uplink between {first} and {last}")
