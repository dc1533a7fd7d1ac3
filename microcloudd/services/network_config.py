"""A network's LXD-style config keys: checked up front, `auto` subnets chosen, turned into the
driver's NetworkSpec.

Checks here run against the cluster database (the desired state) before anything changes, so
a refused request leaves nothing behind and its error names both sides of a clash.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from microcloudd.api.errors import InvalidArgument
from microcloudd.drivers.network import addressing
from microcloudd.drivers.network.base import NetworkSpec, UplinkSpec

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

# The router's address on the uplink, allocated by the driver at creation and kept so a
# network rebuilt by the reconciler gets the same one (LXD's key for the same fact).
UPLINK_ADDRESS = "volatile.network.ipv4.address"
_BOOL = ("true", "false", "1", "0", "yes", "no", "on", "off")
_TRUE = ("true", "1", "yes", "on")
KEYS = {
    "ipv4.address": "the gateway address and prefix (10.1.0.1/24) or auto",
    "ipv4.nat": "true (OVN networks always SNAT to the uplink)",
    "ipv4.dhcp": "true (OVN answers DHCPv4 on every network)",
    "ipv4.dhcp.expiry": "DHCP lease time: seconds, or 30m, 1h, 1d",
    "ipv6.address": "the gateway address and /64 (fd42:1::1/64), auto or none",
    "ipv6.dhcp.stateful": "true: DHCPv6 hands out addresses; false: SLAAC",
    "dns.domain": "the domain instances' names are registered in",
    "dns.nameservers": "comma-separated DNS servers handed to instances",
    "bridge.mtu": "MTU handed to instances (1280-9000)",
}
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
AUTO_POOL = ipaddress.IPv4Network("10.0.0.0/8")


def _is_true(value: str) -> bool:
    return value.strip().lower() in _TRUE


def check_keys(network: str, config: Mapping[str, str]) -> None:
    for key, value in config.items():
        if key.startswith(("user.", "volatile.")):
            continue
        if key not in KEYS:
            raise InvalidArgument(
                f"Invalid option for network {network!r}: unknown key {key!r} "
                f"(known: {', '.join(sorted(KEYS))}, user.*)", key=key)
        if key in ("ipv4.nat", "ipv4.dhcp", "ipv6.dhcp.stateful") and value.strip().lower() not in _BOOL:
            raise InvalidArgument(f"Invalid value for network {network!r} {key}: {value!r} "
                                  "is not true or false")
        if key in ("ipv4.nat", "ipv4.dhcp") and not _is_true(value):
            raise InvalidArgument(f"Network {network!r}: {key}=false is not supported: {KEYS[key]}")


def lease_time(value: str) -> int:
    m = _DURATION.match(value.strip())
    if not m:
        raise InvalidArgument(f"ipv4.dhcp.expiry {value!r} is not a duration (3600, 30m, 1h, 1d)")
    return int(m.group(1)) * _UNIT[m.group(2)]


def to_spec(name: str, description: str, config: Mapping[str, str]) -> NetworkSpec:
    """The driver's spec for a network whose config is resolved (no `auto` left)."""
    try:
        mtu = int(config.get("bridge.mtu", "1442"))
    except ValueError:
        raise InvalidArgument(f"bridge.mtu {config['bridge.mtu']!r} is not a number") from None
    servers = tuple(s.strip() for s in config.get("dns.nameservers", "").split(",") if s.strip())
    for s in servers:
        try:
            ipaddress.ip_address(s)
        except ValueError:
            raise InvalidArgument(f"dns.nameservers: {s!r} is not an IP address") from None
    v6 = config.get("ipv6.address") or None
    spec = NetworkSpec(
        name=name,
        ipv4_address=config.get("ipv4.address", ""),
        ipv6_address=None if v6 == "none" else v6,
        ipv6_mode="dhcpv6-stateful" if _is_true(config.get("ipv6.dhcp.stateful", "false")) else "slaac",
        dns_servers=servers,
        dns_domain=config.get("dns.domain", "microcloud"),
        lease_time=lease_time(config.get("ipv4.dhcp.expiry", "3600")),
        mtu=mtu,
        uplink_address=config.get(UPLINK_ADDRESS) or None,
        description=description,
    )
    # The driver's own checks of the other fields (MTU, lease time, domain), before any change.
    if not 1280 <= spec.mtu <= 9000:
        raise InvalidArgument(f"bridge.mtu {spec.mtu} is outside 1280-9000")
    if not 60 <= spec.lease_time <= 7 * 86400:
        raise InvalidArgument(f"ipv4.dhcp.expiry {spec.lease_time}s is outside 60s-7 days")
    if not spec.dns_domain or not all(p and p.replace("-", "").isalnum() for p in spec.dns_domain.split(".")):
        raise InvalidArgument(f"dns.domain {spec.dns_domain!r} is not a domain name")
    return spec


def taken_subnets(others: Iterable[tuple[str, Mapping[str, str]]], uplink: UplinkSpec | None
                  ) -> list[tuple[str, IPNet]]:
    """(label, subnet) of every network but the one being checked, and of the uplink."""
    taken: list[tuple[str, IPNet]] = []
    if uplink is not None:
        taken.append(("the uplink", ipaddress.IPv4Network(uplink.cidr)))
    for name, config in others:
        for key in ("ipv4.address", "ipv6.address"):
            value = config.get(key, "")
            if value and value not in ("auto", "none"):
                try:
                    taken.append((f"network {name!r}", ipaddress.ip_interface(value).network))
                except ValueError:
                    continue
    return taken


def check_subnets(config: Mapping[str, str], taken: list[tuple[str, IPNet]]) -> None:
    """Malformed or overlapping subnets -> InvalidArgument naming both subnets."""
    v4 = addressing.gateway_v4(config.get("ipv4.address", ""))
    nets: list[tuple[str, IPNet]] = [("ipv4.address", v4.network)]
    v6_value = config.get("ipv6.address", "")
    if v6_value and v6_value != "none":
        nets.append(("ipv6.address", addressing.gateway_v6(v6_value).network))
    for key, net in nets:
        for label, other in taken:
            if other.version == net.version and other.overlaps(net):
                raise InvalidArgument(f"{key} subnet {net} overlaps {other}, the subnet of {label}",
                                      key=key, subnet=str(net), other=str(other))


def host_routes(path: Path = Path("/proc/net/route")) -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes but the default one (read, never probed)."""
    out: list[ipaddress.IPv4Network] = []
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) < 8:
            continue
        dest, mask = int(f[1], 16), int(f[7], 16)
        if mask == 0:
            continue
        # The file holds little-endian hex words.
        d = ipaddress.IPv4Address(dest.to_bytes(4, "little"))
        m = ipaddress.IPv4Address(mask.to_bytes(4, "little"))
        try:
            out.append(ipaddress.IPv4Network(f"{d}/{m}", strict=False))
        except ValueError:
            continue
    return out


def auto_ipv4(taken: list[tuple[str, IPNet]], routes: list[ipaddress.IPv4Network]) -> str:
    """A free 10.x.y.1/24: no overlap with other networks, the uplink or the host's routes."""
    busy = [n for _, n in taken if n.version == 4] + list(routes)
    rng = random.Random()
    count = 1 << 16  # /24s in 10.0.0.0/8
    start, step = rng.randrange(count), 40503  # an odd step walks every /24 once
    for i in range(count):
        idx = (start + i * step) % count
        net = ipaddress.IPv4Network((int(AUTO_POOL.network_address) + (idx << 8), 24))
        if not any(net.overlaps(b) for b in busy):
            return f"{net.network_address + 1}/24"
    raise InvalidArgument("ipv4.address=auto: no free /24 left in 10.0.0.0/8; give a subnet")


def auto_ipv6(taken: list[tuple[str, IPNet]]) -> str:
    """A random unique local /64 (RFC 4193), checked against the others."""
    for _ in range(100):
        prefix = (0xFD << 120) | (random.getrandbits(40) << 80)
        net = ipaddress.IPv6Network((prefix, 64))
        if not any(n.version == 6 and n.overlaps(net) for _, n in taken):
            return f"{net.network_address + 1}/64"
    raise InvalidArgument("ipv6.address=auto: could not find a free /64")
