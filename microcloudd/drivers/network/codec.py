"""Specs to and from the JSON kept in OVN external_ids, so the NB row says what it was made from."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from microcloudd.drivers.network.base import (
    AclRule,
    AclSpec,
    ForwardPort,
    ForwardSpec,
    NetworkSpec,
    UplinkSpec,
)


def dump(spec: Any) -> str:
    return json.dumps(dataclasses.asdict(spec), sort_keys=True, separators=(",", ":"))


def network(text: str) -> NetworkSpec:
    d = json.loads(text)
    d["dns_servers"] = tuple(d.get("dns_servers", ()))
    return NetworkSpec(**d)


def uplink(text: str) -> UplinkSpec:
    d = json.loads(text)
    for k in ("ip_range", "gateway_chassis", "dns_servers"):
        d[k] = tuple(d.get(k, ()))
    return UplinkSpec(**d)


def acl(text: str) -> AclSpec:
    d = json.loads(text)
    for k in ("ingress", "egress"):
        d[k] = tuple(AclRule(**r) for r in d.get(k, ()))
    return AclSpec(**d)


def forward(text: str) -> ForwardSpec:
    d = json.loads(text)
    d["ports"] = tuple(ForwardPort(**p) for p in d.get("ports", ()))
    return ForwardSpec(**d)
