"""Names of the OVN rows behind our objects. Rows are found by their external_ids tags;
names are for people reading `ovn-nbctl show` (and must be unique where OVN indexes them)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from microcloudd.api.errors import InvalidArgument


@dataclass(frozen=True)
class Names:
    prefix: str = "mc"  # alphanumeric: it also starts port group names

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9]{0,15}", self.prefix):
            raise InvalidArgument(f"OVN name prefix {self.prefix!r} must be 1-16 letters and digits")

    @property
    def uplink_switch(self) -> str:
        return f"{self.prefix}-uplink"

    @property
    def uplink_localnet(self) -> str:
        return f"{self.prefix}-uplink-localnet"

    def switch(self, net: str) -> str:
        return f"{self.prefix}-net-{net}"

    def router(self, net: str) -> str:
        return f"{self.prefix}-net-{net}-lr"

    def router_port_internal(self, net: str) -> str:
        return f"{self.prefix}-net-{net}-lrp-int"

    def router_port_uplink(self, net: str) -> str:
        return f"{self.prefix}-net-{net}-lrp-ext"

    def switch_router_port(self, net: str) -> str:
        return f"{self.prefix}-net-{net}-ls-lr"

    def uplink_router_port(self, net: str) -> str:
        return f"{self.prefix}-net-{net}-ls-ext"

    def forward_lb(self, net: str, listen: str, protocol: str) -> str:
        return f"{self.prefix}-fwd-{net}-{listen}-{protocol}"
