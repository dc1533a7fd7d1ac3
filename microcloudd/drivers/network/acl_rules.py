"""LXD-style network ACL rules -> OVN ACL match expressions.

Every field is checked here, so a rule that does not parse is refused with InvalidArgument
before anything is written (northd would otherwise only log a parse error and drop it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from microcloudd.api.errors import InvalidArgument
from microcloudd.drivers.network.base import AclRule

# Deny rules outrank allow rules (as in LXD); both outrank the default for ports with ACLs.
PRIORITY = {"drop": 1300, "reject": 1300, "allow": 1200, "allow-stateless": 1200}
OVN_ACTION = {"allow": "allow-related", "allow-stateless": "allow-stateless",
              "reject": "reject", "drop": "drop"}
PROTOCOLS = ("tcp", "udp", "icmp4", "icmp6")
STATES = ("enabled", "disabled", "logged")


@dataclass(frozen=True)
class OvnAcl:
    direction: str  # to-lport (ingress) or from-lport (egress)
    priority: int
    match: str
    action: str
    log: bool


def _bad(where: str, msg: str) -> InvalidArgument:
    return InvalidArgument(f"ACL rule {where}: {msg}")


def _addresses(where: str, field_name: str, value: str) -> dict[int, list[str]]:
    """"10.0.0.0/24,10.1.0.5,fd00::/8" -> {4: [...], 6: [...]}"""
    out: dict[int, list[str]] = {}
    for item in (x.strip() for x in value.split(",")):
        if not item:
            raise _bad(where, f"{field_name} has an empty entry in {value!r}")
        try:
            if "-" in item:  # a range "a-b"
                lo_s, hi_s = item.split("-", 1)
                lo, hi = ipaddress.ip_address(lo_s.strip()), ipaddress.ip_address(hi_s.strip())
                if lo.version != hi.version or lo > hi:  # type: ignore[operator]
                    raise ValueError
                nets = list(ipaddress.summarize_address_range(lo, hi))
                out.setdefault(lo.version, []).extend(str(n) for n in nets)
            else:
                net = ipaddress.ip_network(item, strict=False)
                out.setdefault(net.version, []).append(
                    str(net.network_address) if net.num_addresses == 1 else str(net))
        except ValueError:
            raise _bad(where, f"{field_name} {item!r} is not an IP address, range or subnet") from None
    return out


def _ports(where: str, field_name: str, value: str) -> list[tuple[int, int]]:
    out = []
    for item in (x.strip() for x in value.split(",")):
        lo_s, _, hi_s = item.partition("-")
        try:
            lo, hi = int(lo_s), int(hi_s or lo_s)
        except ValueError:
            raise _bad(where, f"{field_name} {item!r} is not a port or port range") from None
        if not (0 < lo <= hi <= 65535):
            raise _bad(where, f"{field_name} {item!r} is out of range 1-65535")
        out.append((lo, hi))
    return out


def _port_match(proto: str, key: str, ranges: list[tuple[int, int]]) -> str:
    singles = [str(lo) for lo, hi in ranges if lo == hi]
    parts = []
    if singles:
        parts.append(f"{proto}.{key} == {{{', '.join(singles)}}}")
    parts += [f"({proto}.{key} >= {lo} && {proto}.{key} <= {hi})" for lo, hi in ranges if lo != hi]
    return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"


def _set(values: list[str]) -> str:
    return values[0] if len(values) == 1 else "{" + ", ".join(values) + "}"


def rule_match(rule: AclRule, where: str = "") -> str:
    """The protocol/address part of the OVN match for `rule` (no port group part)."""
    proto = rule.protocol.strip()
    if proto and proto not in PROTOCOLS:
        raise _bad(where, f"unknown protocol {proto!r} (use one of {', '.join(PROTOCOLS)})")
    src = _addresses(where, "source", rule.source) if rule.source.strip() else None
    dst = _addresses(where, "destination", rule.destination) if rule.destination.strip() else None
    families = {4, 6}
    if proto == "icmp4":
        families = {4}
    elif proto == "icmp6":
        families = {6}
    for addrs in (src, dst):
        if addrs is not None:
            families &= set(addrs)
    if not families:
        raise _bad(where, "source, destination and protocol name different IP versions, so it never matches")

    if (rule.source_port or rule.destination_port) and proto not in ("tcp", "udp"):
        raise _bad(where, "source_port and destination_port need protocol tcp or udp")
    if (rule.icmp_type or rule.icmp_code) and proto not in ("icmp4", "icmp6"):
        raise _bad(where, "icmp_type and icmp_code need protocol icmp4 or icmp6")

    l4: list[str] = []
    if proto in ("tcp", "udp"):
        l4.append(proto)
        if rule.source_port:
            l4.append(_port_match(proto, "src", _ports(where, "source_port", rule.source_port)))
        if rule.destination_port:
            l4.append(_port_match(proto, "dst", _ports(where, "destination_port", rule.destination_port)))
    elif proto:
        l4.append(proto)
        for key, val in (("type", rule.icmp_type), ("code", rule.icmp_code)):
            if val:
                if not val.isdigit() or int(val) > 255:
                    raise _bad(where, f"icmp_{key} {val!r} is not a number 0-255")
                l4.append(f"{proto}.{key} == {int(val)}")

    per_family = []
    if src is None and dst is None and families == {4, 6}:
        per_family.append("ip")
    for fam in sorted(families) if not per_family else ():
        parts = [f"ip{fam}"]
        if src is not None:
            parts.append(f"ip{fam}.src == {_set(src[fam])}")
        if dst is not None:
            parts.append(f"ip{fam}.dst == {_set(dst[fam])}")
        per_family.append(" && ".join(parts))
    ip_part = per_family[0] if len(per_family) == 1 else "(" + " || ".join(f"({p})" for p in per_family) + ")"
    return " && ".join([ip_part, *l4])


def compile_rule(port_group: str, direction: str, rule: AclRule, index: int) -> OvnAcl | None:
    """The OVN ACL for one rule (None for a disabled rule). direction: ingress or egress."""
    where = f"{direction} #{index + 1}"
    if rule.action not in OVN_ACTION:
        raise _bad(where, f"unknown action {rule.action!r} (use allow, allow-stateless, reject or drop)")
    if rule.state not in STATES:
        raise _bad(where, f"unknown state {rule.state!r} (use enabled, disabled or logged)")
    match = rule_match(rule, where)
    if rule.state == "disabled":
        return None
    if direction == "ingress":
        return OvnAcl("to-lport", PRIORITY[rule.action], f"outport == @{port_group} && {match}",
                      OVN_ACTION[rule.action], rule.state == "logged")
    return OvnAcl("from-lport", PRIORITY[rule.action], f"inport == @{port_group} && {match}",
                  OVN_ACTION[rule.action], rule.state == "logged")


def compile_rules(port_group: str, ingress: tuple[AclRule, ...], egress: tuple[AclRule, ...]) -> list[OvnAcl]:
    """Every rule compiled; raises InvalidArgument on the first one that does not parse."""
    out = []
    for direction, rules in (("ingress", ingress), ("egress", egress)):
        for i, rule in enumerate(rules):
            acl = compile_rule(port_group, direction, rule, i)
            if acl is not None:
                out.append(acl)
    return out


def default_group_name(prefix: str) -> str:
    """Ports with at least one ACL are in this group too: unmatched traffic towards them is
    dropped (replies to their own connections still pass through conntrack)."""
    return f"{prefix}_acl_default"


def default_acls(prefix: str) -> list[OvnAcl]:
    return [OvnAcl("to-lport", 1000, f"outport == @{default_group_name(prefix)} && ip", "drop", False)]


def port_group_name(prefix: str, acl: str) -> str:
    # ACL names are hostname-like (no "_"), so "-" -> "_" cannot collide.
    return f"{prefix}_acl_" + acl.replace("-", "_")
