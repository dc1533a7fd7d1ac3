"""Handlers of the networks API (microcloudd/api/networks.py): decode, call a service, answer."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from microcloudd.api.declare import Recursion
from microcloudd.api.networks import (
    Network,
    NetworkACL,
    NetworkACLPatch,
    NetworkACLPut,
    NetworkACLsPost,
    NetworkForward,
    NetworkForwardPatch,
    NetworkForwardPut,
    NetworkForwardsPost,
    NetworkLease,
    NetworkPatch,
    NetworkPut,
    NetworksPost,
    NetworkState,
)
from microcloudd.rest.app import Context
from microcloudd.services import network_acls, network_forwards, networks
from microcloudd.services.cloud import Cloud


def _given(value: Any) -> Any:
    return None if value is UNSET else value


class NetworksHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    # ---------------------------------------------------------------- networks

    async def networks_list(self, ctx: Context, query: Recursion) -> list[Network] | list[str]:
        nets = networks.list_networks(self.cloud)
        return nets if query.recursion else [f"/1.0/networks/{n.name}" for n in nets]

    async def network_create(self, ctx: Context, body: NetworksPost) -> None:
        await networks.create_network(self.cloud, body.name, description=body.description, config=body.config,
                                      type_=body.type)

    async def network_get(self, ctx: Context, network: str) -> Network:
        return networks.get_network(self.cloud, network)

    async def network_put(self, ctx: Context, network: str, body: NetworkPut) -> None:
        await networks.replace_network(self.cloud, network, description=body.description, config=body.config)

    async def network_patch(self, ctx: Context, network: str, body: NetworkPatch) -> None:
        await networks.patch_network(self.cloud, network, description=_given(body.description),
                                     config=_given(body.config))

    async def network_delete(self, ctx: Context, network: str) -> None:
        await networks.delete_network(self.cloud, network)

    async def network_leases(self, ctx: Context, network: str) -> list[NetworkLease]:
        return await networks.leases(self.cloud, network)

    async def network_state(self, ctx: Context, network: str) -> NetworkState:
        return await networks.state(self.cloud, network)

    # ---------------------------------------------------------------- ACLs

    async def network_acls_list(self, ctx: Context, query: Recursion) -> list[NetworkACL] | list[str]:
        acls = network_acls.list_acls(self.cloud)
        return acls if query.recursion else [f"/1.0/network-acls/{a.name}" for a in acls]

    async def network_acl_create(self, ctx: Context, body: NetworkACLsPost) -> None:
        await network_acls.create_acl(self.cloud, body.name, description=body.description,
                                      ingress=body.ingress, egress=body.egress, config=body.config)

    async def network_acl_get(self, ctx: Context, acl: str) -> NetworkACL:
        return network_acls.get_acl(self.cloud, acl)

    async def network_acl_put(self, ctx: Context, acl: str, body: NetworkACLPut) -> None:
        await network_acls.replace_acl(self.cloud, acl, description=body.description, ingress=body.ingress,
                                       egress=body.egress, config=body.config)

    async def network_acl_patch(self, ctx: Context, acl: str, body: NetworkACLPatch) -> None:
        await network_acls.patch_acl(self.cloud, acl, description=_given(body.description),
                                     ingress=_given(body.ingress), egress=_given(body.egress),
                                     config=_given(body.config))

    async def network_acl_delete(self, ctx: Context, acl: str) -> None:
        await network_acls.delete_acl(self.cloud, acl)

    # ---------------------------------------------------------------- forwards

    async def network_forwards_list(self, ctx: Context, network: str, query: Recursion
                                    ) -> list[NetworkForward] | list[str]:
        fwds = network_forwards.list_forwards(self.cloud, network)
        if query.recursion:
            return fwds
        return [f"/1.0/networks/{network}/forwards/{f.listen_address}" for f in fwds]

    async def network_forward_create(self, ctx: Context, network: str, body: NetworkForwardsPost) -> None:
        await network_forwards.create_forward(self.cloud, network, body.listen_address,
                                              description=body.description, config=body.config,
                                              ports=body.ports)

    async def network_forward_get(self, ctx: Context, network: str, listen_address: str) -> NetworkForward:
        return network_forwards.get_forward(self.cloud, network, listen_address)

    async def network_forward_put(self, ctx: Context, network: str, listen_address: str,
                                  body: NetworkForwardPut) -> None:
        await network_forwards.replace_forward(self.cloud, network, listen_address,
                                               description=body.description, config=body.config,
                                               ports=body.ports)

    async def network_forward_patch(self, ctx: Context, network: str, listen_address: str,
                                    body: NetworkForwardPatch) -> None:
        await network_forwards.patch_forward(self.cloud, network, listen_address,
                                             description=_given(body.description), config=_given(body.config),
                                             ports=_given(body.ports))

    async def network_forward_delete(self, ctx: Context, network: str, listen_address: str) -> None:
        await network_forwards.delete_forward(self.cloud, network, listen_address)


def make(cloud: Cloud) -> NetworksHandlers:
    return NetworksHandlers(cloud)
