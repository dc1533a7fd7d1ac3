"""The network driver interface: what services/networks needs from a network backend.

A network is an L2 segment with an IPv4 (and optionally IPv6) subnet behind a router that
SNATs to the cluster's uplink; ports are instance NICs on it; ACLs are named rule sets
applied to ports; forwards send a listen address on the uplink to an address on a network.
Every call is async, create/delete are idempotent (`may_exist`/`if_exists`), and only
errors from microcloudd.api.errors are raised.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

AclAction = Literal["allow", "allow-stateless", "reject", "drop"]
Ipv6Mode = Literal["slaac", "dhcpv6-stateful"]


@dataclass(frozen=True)
class UplinkSpec:
    """The external network the networks' routers attach to (set at cluster init)."""

    cidr: str  # "192.0.2.0/24"
    gateway: str  # next hop of every network's default route, "192.0.2.1"
    ip_range: tuple[str, str]  # addresses routers and forwards may take, inclusive
    physical_network: str = "uplink"  # name in ovn-bridge-mappings on the chassis
    gateway_chassis: tuple[str, ...] = ()  # chassis that carry the NAT, highest priority first
    dns_servers: tuple[str, ...] = ()  # handed to instances unless a network overrides them


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    ipv4_address: str  # the gateway address and prefix, as LXD's ipv4.address: "10.1.0.1/24"
    ipv6_address: str | None = None  # "fd42:1::1/64": router advertisements on this subnet
    ipv6_mode: Ipv6Mode = "slaac"
    dns_servers: tuple[str, ...] = ()  # empty: the uplink's, else the gateway address
    dns_domain: str = "microcloud"
    lease_time: int = 3600  # seconds
    mtu: int = 1442  # Geneve takes 58 bytes of a 1500-byte underlay
    uplink_address: str | None = None  # the router's address on the uplink; None: allocated
    description: str = ""
    revision: int = 1


@dataclass(frozen=True)
class NetworkInfo:
    spec: NetworkSpec  # uplink_address filled in
    ports: int  # instance ports on the network


@dataclass(frozen=True)
class PortSpec:
    network: str
    name: str  # ours, e.g. "web1/eth0"; the OVN port is named by `id`
    id: str | None = None  # a UUID (libvirt's interfaceid); generated when None
    mac: str | None = None  # generated when None
    ipv4: str | None = None  # static address; None: allocated by OVN
    ipv6: str | None = None  # static address; None: SLAAC/DHCPv6 where the network has IPv6
    hostname: str | None = None  # DNS record in the network's domain
    acls: tuple[str, ...] = ()
    revision: int = 1


@dataclass(frozen=True)
class PortInfo:
    id: str
    name: str
    network: str
    mac: str
    ipv4: str | None  # None while OVN has not allocated the dynamic address yet
    ipv6: str | None
    dynamic: bool
    hostname: str | None
    acls: tuple[str, ...]
    up: bool | None  # bound to a chassis and ready (OVN's `up` column)
    revision: int


@dataclass(frozen=True)
class Lease:
    hostname: str
    address: str
    mac: str
    type: Literal["static", "dynamic", "gateway"]
    port_id: str | None = None


@dataclass(frozen=True)
class AclRule:
    """One rule in LXD's network ACL syntax. Addresses and ports are comma-separated lists;
    ports may be ranges ("8000-8080"). An empty field matches anything."""

    action: str
    source: str = ""
    destination: str = ""
    protocol: str = ""  # tcp, udp, icmp4, icmp6
    source_port: str = ""
    destination_port: str = ""
    icmp_type: str = ""
    icmp_code: str = ""
    state: str = "enabled"  # enabled, disabled, logged
    description: str = ""


@dataclass(frozen=True)
class AclSpec:
    name: str
    ingress: tuple[AclRule, ...] = ()  # traffic towards the ports the ACL is applied to
    egress: tuple[AclRule, ...] = ()  # traffic leaving those ports
    description: str = ""
    revision: int = 1


@dataclass(frozen=True)
class ForwardPort:
    protocol: str  # tcp or udp
    listen_port: str  # "80", "8000-8010" or "80,443"
    target_address: str
    target_port: str = ""  # same shape as listen_port (or one port); empty: the listen ports


@dataclass(frozen=True)
class ForwardSpec:
    listen_address: str  # on the uplink
    target_address: str | None = None  # every other port/protocol goes here (1:1 NAT)
    ports: tuple[ForwardPort, ...] = ()
    description: str = ""
    revision: int = 1


@dataclass(frozen=True)
class DesiredState:
    """Everything this member's reconciler owns, as the cluster database says it should be."""

    networks: tuple[NetworkSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()  # ids set
    acls: tuple[AclSpec, ...] = ()
    forwards: tuple[tuple[str, ForwardSpec], ...] = ()  # (network, forward)


@dataclass
class ReconcileReport:
    created: list[str] = field(default_factory=list)  # "network web", "port <uuid>", ...
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.removed)


class NetworkDriver(abc.ABC):
    @abc.abstractmethod
    async def ensure_uplink(self, spec: UplinkSpec) -> None: ...

    @abc.abstractmethod
    async def create_network(self, spec: NetworkSpec, *, may_exist: bool = False) -> NetworkInfo: ...

    @abc.abstractmethod
    async def update_network(self, spec: NetworkSpec) -> NetworkInfo: ...

    @abc.abstractmethod
    async def get_network(self, name: str) -> NetworkInfo: ...

    @abc.abstractmethod
    async def list_networks(self) -> list[NetworkInfo]: ...

    @abc.abstractmethod
    async def delete_network(self, name: str, *, if_exists: bool = False) -> None: ...

    @abc.abstractmethod
    async def create_port(self, spec: PortSpec, *, may_exist: bool = False) -> PortInfo: ...

    @abc.abstractmethod
    async def create_ports(self, specs: Sequence[PortSpec], *, may_exist: bool = False) -> list[PortInfo]:
        """Many ports at once, all or none."""

    @abc.abstractmethod
    async def get_port(self, port_id: str) -> PortInfo: ...

    @abc.abstractmethod
    async def list_ports(self, network: str) -> list[PortInfo]: ...

    @abc.abstractmethod
    async def set_port_acls(self, port_id: str, acls: tuple[str, ...]) -> PortInfo: ...

    @abc.abstractmethod
    async def delete_port(self, port_id: str, *, if_exists: bool = False) -> None: ...

    @abc.abstractmethod
    async def create_acl(self, spec: AclSpec, *, may_exist: bool = False) -> AclSpec: ...

    @abc.abstractmethod
    async def update_acl(self, spec: AclSpec) -> AclSpec: ...

    @abc.abstractmethod
    async def get_acl(self, name: str) -> AclSpec: ...

    @abc.abstractmethod
    async def list_acls(self) -> list[AclSpec]: ...

    @abc.abstractmethod
    async def delete_acl(self, name: str, *, if_exists: bool = False) -> None: ...

    @abc.abstractmethod
    async def create_forward(
        self, network: str, spec: ForwardSpec, *, may_exist: bool = False
    ) -> ForwardSpec: ...

    @abc.abstractmethod
    async def list_forwards(self, network: str) -> list[ForwardSpec]: ...

    @abc.abstractmethod
    async def delete_forward(self, network: str, listen_address: str, *, if_exists: bool = False) -> None: ...

    @abc.abstractmethod
    async def leases(self, network: str) -> list[Lease]: ...

    @abc.abstractmethod
    async def reconcile(self, desired: DesiredState) -> ReconcileReport: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
