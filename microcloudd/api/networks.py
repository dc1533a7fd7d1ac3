"""The networks API (LXD 1.0 shape): networks, network ACLs, forwards and leases.

Path parameters are {network} and {acl} rather than LXD's {name}: the CLI client's
`call(name, **path_params)` takes `name` itself.

PUT replaces the editable fields; PATCH bodies use UNSET for "not given" so only the
fields a client sends change (LXD merges `config` keys on PATCH the same way).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from microcloudd.api.declare import Op, Recursion

# ------------------------------------------------------------------ networks

class Network(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    type: str = "ovn"
    managed: bool = True
    status: str = "Created"  # Pending while being created, Errored when realising it failed
    config: dict[str, str] = {}
    used_by: list[str] = []
    locations: list[str] = []


class NetworksPost(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    type: str = "ovn"
    config: dict[str, str] = {}


class NetworkPut(msgspec.Struct, kw_only=True):
    description: str = ""
    config: dict[str, str] = {}


class NetworkPatch(msgspec.Struct, kw_only=True):
    description: str | UnsetType = UNSET
    config: dict[str, str] | UnsetType = UNSET  # merged into the current config


class NetworkLease(msgspec.Struct, kw_only=True):
    hostname: str
    hwaddr: str
    address: str
    type: str  # static, dynamic, gateway
    location: str = ""
    project: str = "default"


class NetworkStateAddress(msgspec.Struct, kw_only=True):
    family: str
    address: str
    netmask: str
    scope: str = "global"


class NetworkState(msgspec.Struct, kw_only=True):
    addresses: list[NetworkStateAddress] = []
    counters: dict[str, int] = {}
    hwaddr: str = ""
    mtu: int = 0
    state: str = "up"
    type: str = "broadcast"
    ovn: dict[str, Any] = {}  # uplink address, ports


# ------------------------------------------------------------------ ACLs

class NetworkACLRule(msgspec.Struct, kw_only=True, omit_defaults=False):
    action: str  # allow, allow-stateless, reject, drop
    state: str = "enabled"  # enabled, disabled, logged
    description: str = ""
    source: str = ""
    destination: str = ""
    protocol: str = ""  # tcp, udp, icmp4, icmp6
    source_port: str = ""
    destination_port: str = ""
    icmp_type: str = ""
    icmp_code: str = ""


class NetworkACL(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    ingress: list[NetworkACLRule] = []
    egress: list[NetworkACLRule] = []
    config: dict[str, str] = {}
    used_by: list[str] = []


class NetworkACLsPost(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    ingress: list[NetworkACLRule] = []
    egress: list[NetworkACLRule] = []
    config: dict[str, str] = {}


class NetworkACLPut(msgspec.Struct, kw_only=True):
    description: str = ""
    ingress: list[NetworkACLRule] = []
    egress: list[NetworkACLRule] = []
    config: dict[str, str] = {}


class NetworkACLPatch(msgspec.Struct, kw_only=True):
    description: str | UnsetType = UNSET
    ingress: list[NetworkACLRule] | UnsetType = UNSET
    egress: list[NetworkACLRule] | UnsetType = UNSET
    config: dict[str, str] | UnsetType = UNSET


# ------------------------------------------------------------------ forwards

class NetworkForwardPort(msgspec.Struct, kw_only=True):
    protocol: str  # tcp, udp
    listen_port: str  # "80", "8000-8010", "80,443"
    target_address: str
    target_port: str = ""  # empty: the listen ports
    description: str = ""


class NetworkForward(msgspec.Struct, kw_only=True):
    listen_address: str
    description: str = ""
    config: dict[str, str] = {}  # target_address: where every other port goes
    ports: list[NetworkForwardPort] = []
    location: str = ""


class NetworkForwardsPost(msgspec.Struct, kw_only=True):
    listen_address: str
    description: str = ""
    config: dict[str, str] = {}
    ports: list[NetworkForwardPort] = []


class NetworkForwardPut(msgspec.Struct, kw_only=True):
    description: str = ""
    config: dict[str, str] = {}
    ports: list[NetworkForwardPort] = []


class NetworkForwardPatch(msgspec.Struct, kw_only=True):
    description: str | UnsetType = UNSET
    config: dict[str, str] | UnsetType = UNSET
    ports: list[NetworkForwardPort] | UnsetType = UNSET


_N = "/1.0/networks/{network}"
_F = _N + "/forwards/{listen_address}"
_A = "/1.0/network-acls/{acl}"

OPS: tuple[Op, ...] = (
    Op("GET", "/1.0/networks", "networks_list", "List networks", result=list[Network | str],
       query=Recursion),
    Op("POST", "/1.0/networks", "network_create", "Create a network", body=NetworksPost),
    Op("GET", _N, "network_get", "Show a network", result=Network),
    Op("PUT", _N, "network_put", "Replace a network's description and config", body=NetworkPut),
    Op("PATCH", _N, "network_patch", "Change some of a network's config keys", body=NetworkPatch),
    Op("DELETE", _N, "network_delete", "Delete a network"),
    Op("GET", _N + "/leases", "network_leases", "The addresses handed out on a network",
       result=list[NetworkLease]),
    Op("GET", _N + "/state", "network_state", "A network's run-time state", result=NetworkState),

    Op("GET", "/1.0/network-acls", "network_acls_list", "List network ACLs", result=list[NetworkACL | str],
       query=Recursion),
    Op("POST", "/1.0/network-acls", "network_acl_create", "Create a network ACL", body=NetworkACLsPost),
    Op("GET", _A, "network_acl_get", "Show a network ACL", result=NetworkACL),
    Op("PUT", _A, "network_acl_put", "Replace a network ACL's rules", body=NetworkACLPut),
    Op("PATCH", _A, "network_acl_patch", "Change some fields of a network ACL", body=NetworkACLPatch),
    Op("DELETE", _A, "network_acl_delete", "Delete a network ACL"),

    Op("GET", _N + "/forwards", "network_forwards_list", "List a network's forwards",
       result=list[NetworkForward | str], query=Recursion),
    Op("POST", _N + "/forwards", "network_forward_create", "Create a forward", body=NetworkForwardsPost),
    Op("GET", _F, "network_forward_get", "Show a forward", result=NetworkForward),
    Op("PUT", _F, "network_forward_put", "Replace a forward", body=NetworkForwardPut),
    Op("PATCH", _F, "network_forward_patch", "Change some fields of a forward", body=NetworkForwardPatch),
    Op("DELETE", _F, "network_forward_delete", "Delete a forward"),
)
