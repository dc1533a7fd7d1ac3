"""The OVN network driver: networks, ports, ACLs and forwards in the OVN Northbound database.

ovsdbapp's connection runs in its own thread; every public method is async and hands one
change function (ovn_network, ovn_ports, ...) to that thread as one transaction through
asyncio.to_thread. Everything created is tagged with this driver's owner and a revision in
external_ids, which is how `reconcile` finds drift and orphans.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from ovsdbapp import api as ovsdbapp_api
from ovsdbapp import exceptions as ovsdbapp_exc
from ovsdbapp.backend import ovs_idl
from ovsdbapp.backend.ovs_idl import connection, idlutils

from microcloudd.api.errors import (
    AlreadyExists,
    Internal,
    InUse,
    InvalidArgument,
    MicrocloudError,
    Unavailable,
)
from microcloudd.drivers.network import codec, ovn_acls, ovn_forwards, ovn_network, ovn_ports
from microcloudd.drivers.network.base import (
    AclSpec,
    DesiredState,
    ForwardSpec,
    Lease,
    NetworkDriver,
    NetworkInfo,
    NetworkSpec,
    PortInfo,
    PortSpec,
    ReconcileReport,
    UplinkSpec,
)
from microcloudd.drivers.network.ovn_names import Names
from microcloudd.drivers.network.ovn_reconcile import reconcile
from microcloudd.drivers.network.ovn_txn import NAME, NETWORK, SPEC, Change, ChangeFn, Nb, Read

log = logging.getLogger(__name__)
# The replica keeps every registered column of every row as python-ovs objects (~300 bytes
# an empty one): of a logical switch port, one per NIC, only what we read or write.
PORT_COLUMNS = ["name", "type", "addresses", "dynamic_addresses", "port_security", "options",
                "external_ids", "up", "dhcpv4_options", "dhcpv6_options"]

T = TypeVar("T")
# How long create_port waits for northd to allocate a dynamic address (for its DNS record).
DYNAMIC_ADDRESS_WAIT = 5.0


class _NbBackend(ovs_idl.Backend, ovsdbapp_api.API):
    """ovsdbapp's generic backend on the NB schema (connection, replica, transactions, indexes).
    Our change functions write rows themselves (ovn_txn), so ovsdbapp's NB command library
    (impl_idl, which brings netaddr) is not loaded: ~1.5 MB less resident in the daemon."""

    schema = "OVN_Northbound"
    # The name indexes ovsdbapp's NB API creates (Nb.find goes through them).
    lookup_table = {table: idlutils.RowLookup(table, "name", None)
                    for table in ("Logical_Switch", "Logical_Router", "Load_Balancer")}


class OvnNetworkDriver(NetworkDriver):
    def __init__(self, api: Any, owner: str, names: Names) -> None:
        self._api, self.owner, self.names = api, owner, names

    @classmethod
    async def connect(cls, nb_remote: str, owner: str, *, prefix: str = "mc", timeout: float = 30.0,
                      max_backoff_ms: int = 1000) -> OvnNetworkDriver:
        """Connect to the NB database (`nb_remote` may list every Raft member, comma-separated)."""
        names = Names(prefix)
        if not owner:
            raise InvalidArgument("the network driver needs an owner to tag what it creates")

        def _connect() -> Any:
            try:
                helper = idlutils.get_schema_helper(nb_remote, "OVN_Northbound")
                for table in helper.schema_json["tables"]:
                    if table != "Logical_Switch_Port":
                        helper.register_table(table)
                helper.register_columns("Logical_Switch_Port", PORT_COLUMNS)
                idl = connection.OvsdbIdl(nb_remote, helper, leader_only=True)
            except Exception as e:
                raise Unavailable(f"cannot reach the OVN northbound database at {nb_remote}: {e}") from e
            # python-ovs backs off up to 8 s between reconnects; a leader change must not stall us.
            reconnect = getattr(getattr(idl, "_session", None), "reconnect", None)
            if reconnect is not None:
                reconnect.set_backoff(min(250, max_backoff_ms), max_backoff_ms)
            conn = connection.Connection(idl, timeout=int(timeout))
            # ovsdbapp keeps the connection on the API *class*: a subclass per driver keeps two
            # drivers (two databases, or one closed and one new) from sharing one.
            api_class = type("OvnNbApi", (_NbBackend,), {"_ovsdb_connection": None})
            return api_class(conn)

        api = await asyncio.to_thread(_connect)
        return cls(api, owner, names)

    async def close(self) -> None:
        await asyncio.to_thread(self._api.ovsdb_connection.stop)

    # ------------------------------------------------------------ plumbing

    def _execute(self, cmd: Change) -> Any:
        try:
            return cmd.execute(check_error=True, log_errors=False)
        except MicrocloudError:
            raise
        except ovsdbapp_exc.TimeoutException as e:
            raise Unavailable("the OVN northbound database did not answer in time") from e
        except RuntimeError as e:  # ovsdbapp's "OVSDB Error: ..." (constraint violations and the like)
            raise Unavailable(f"the OVN northbound database refused the change: {e}") from e
        except Exception as e:  # a bug of ours: keep the cause, never leak a backend type
            raise Internal(f"OVN network driver failed: {type(e).__name__}: {e}") from e

    async def _change(self, fn: ChangeFn, *args: Any) -> Any:
        return await asyncio.to_thread(self._execute, Change(self._api, self.owner, fn, args))

    async def _read(self, fn: ChangeFn, *args: Any) -> Any:
        return await asyncio.to_thread(self._execute, Read(self._api, self.owner, fn, args))

    # ------------------------------------------------------------ uplink

    async def ensure_uplink(self, spec: UplinkSpec) -> None:
        await self._change(ovn_network.ensure_uplink, self.names, spec)

    async def get_uplink(self) -> UplinkSpec:
        return await self._read(ovn_network.uplink_spec)

    # ------------------------------------------------------------ networks

    @staticmethod
    def _info(nb: Nb, name: str) -> NetworkInfo:
        row = ovn_network.network_row(nb, name)
        return NetworkInfo(spec=ovn_network.spec_of(row), ports=len(ovn_network.instance_ports(row)))

    async def create_network(self, spec: NetworkSpec, *, may_exist: bool = False) -> NetworkInfo:
        names = self.names

        def change(nb: Nb) -> NetworkInfo:
            if spec.name in ovn_network.network_rows(nb):
                if may_exist:
                    return self._info(nb, spec.name)
                raise AlreadyExists(f"network {spec.name!r} already exists")
            checked = ovn_network.check_network(nb, spec)
            ovn_network.create_network(nb, names, checked)
            return NetworkInfo(spec=checked, ports=0)

        return await self._change(change)

    async def update_network(self, spec: NetworkSpec) -> NetworkInfo:
        names = self.names

        def change(nb: Nb) -> NetworkInfo:
            row = ovn_network.network_row(nb, spec.name)
            old = ovn_network.spec_of(row)
            checked = ovn_network.check_network(
                nb, dataclasses.replace(spec, uplink_address=spec.uplink_address or old.uplink_address),
                replacing=spec.name)
            ports = len(ovn_network.instance_ports(row))
            same_addressing = (checked.ipv4_address, checked.ipv6_address, checked.ipv6_mode,
                               checked.uplink_address) == (old.ipv4_address, old.ipv6_address, old.ipv6_mode,
                                                           old.uplink_address)
            if same_addressing:
                ovn_network.update_network_in_place(nb, checked)
            elif ports:
                raise InUse(f"network {spec.name!r} has {ports} port(s): its addresses cannot change now")
            else:  # nothing attached: rebuild the topology with the new addresses, same transaction
                ovn_network.delete_network(nb, spec.name)
                ovn_network.create_network(nb, names, checked)
            return NetworkInfo(spec=checked, ports=ports)

        return await self._change(change)

    async def get_network(self, name: str) -> NetworkInfo:
        return await self._read(self._info, name)

    async def list_networks(self) -> list[NetworkInfo]:
        def read(nb: Nb) -> list[NetworkInfo]:
            return [self._info(nb, n) for n in sorted(ovn_network.network_rows(nb))]

        return await self._read(read)

    async def delete_network(self, name: str, *, if_exists: bool = False) -> None:
        def change(nb: Nb) -> None:
            if if_exists and name not in ovn_network.network_rows(nb):
                return
            ovn_network.delete_network(nb, name)

        await self._change(change)

    # ------------------------------------------------------------ ports

    async def create_port(self, spec: PortSpec, *, may_exist: bool = False) -> PortInfo:
        prefix = self.names.prefix

        def change(nb: Nb) -> PortSpec | PortInfo:
            if spec.id:
                existing = nb.find("Logical_Switch_Port", name=ovn_ports.check_port_id(spec.id))
                if existing is not None:
                    if may_exist and existing.external_ids.get(NETWORK) == spec.network:
                        return ovn_ports.port_info(nb, existing)
                    raise AlreadyExists(f"port {spec.id} already exists")
            checked = ovn_ports.check_port(nb, spec)
            ovn_ports.create_port(nb, prefix, checked)
            return checked

        done = await self._change(change)
        if isinstance(done, PortInfo):
            return done
        info = await self.get_port(done.id)
        if info.dynamic and done.hostname:
            # Also when northd was quick enough that the address is already there: the DNS
            # record of a dynamic address is written only once it is known.
            info = await self._wait_dynamic(done.id)
        return info

    async def create_ports(self, specs: Sequence[PortSpec], *, may_exist: bool = False) -> list[PortInfo]:
        """Many ports in one transaction (all or none). DNS records of dynamic addresses
        follow at the next reconcile (this does not wait for northd)."""
        prefix = self.names.prefix

        def change(nb: Nb) -> list[str]:
            indexes: dict[str, ovn_ports.PortIndex] = {}
            ids, touched = [], set()
            for spec in specs:
                if spec.id and may_exist:
                    existing = nb.find("Logical_Switch_Port", name=ovn_ports.check_port_id(spec.id))
                    if existing is not None and existing.external_ids.get(NETWORK) == spec.network:
                        ids.append(existing.name)
                        continue
                if spec.network not in indexes:
                    ls = ovn_network.network_row(nb, spec.network)
                    indexes[spec.network] = ovn_ports.PortIndex.of(nb, ls)
                checked = ovn_ports.check_port(nb, spec, indexes[spec.network])
                ovn_ports.create_port(nb, prefix, checked, dns=False, index=indexes[spec.network])
                ids.append(str(checked.id))
                touched.add(spec.network)
            for network in touched:
                ovn_ports.sync_dns(nb, network)
            return ids

        ids = await self._change(change)

        def read(nb: Nb) -> list[PortInfo]:
            return [ovn_ports.port_info(nb, ovn_ports.port_row(nb, i)) for i in ids]

        return await self._read(read)

    async def _wait_dynamic(self, port_id: str) -> PortInfo:
        """northd fills dynamic_addresses shortly after the port appears; then the DNS record
        can name it. A slow northd only delays the record: reconcile() adds it later."""
        deadline = time.monotonic() + DYNAMIC_ADDRESS_WAIT
        while True:
            info = await self.get_port(port_id)
            if info.ipv4 is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if info.ipv4 is not None:
            await self._change(ovn_ports.sync_dns, info.network)
        return info

    async def get_port(self, port_id: str) -> PortInfo:
        def read(nb: Nb) -> PortInfo:
            return ovn_ports.port_info(nb, ovn_ports.port_row(nb, port_id))

        return await self._read(read)

    async def list_ports(self, network: str) -> list[PortInfo]:
        def read(nb: Nb) -> list[PortInfo]:
            ls = ovn_network.network_row(nb, network)
            acls = ovn_ports.acl_membership(nb)
            return sorted((ovn_ports.port_info(nb, p, acls) for p in ovn_network.instance_ports(ls, nb)),
                          key=lambda p: (p.name, p.id))

        return await self._read(read)

    async def set_port_acls(self, port_id: str, acls: tuple[str, ...]) -> PortInfo:
        prefix = self.names.prefix

        def change(nb: Nb) -> None:
            ovn_ports.apply_acls(nb, prefix, ovn_ports.port_row(nb, port_id), tuple(acls))

        await self._change(change)
        return await self.get_port(port_id)

    async def delete_port(self, port_id: str, *, if_exists: bool = False) -> None:
        def change(nb: Nb) -> None:
            try:
                row = ovn_ports.port_row(nb, port_id)
            except MicrocloudError:
                gone = nb.find("Logical_Switch_Port", name=ovn_ports.check_port_id(port_id)) is None
                if if_exists and gone:
                    return
                raise
            ovn_ports.delete_port(nb, row)

        await self._change(change)

    async def leases(self, network: str) -> list[Lease]:
        return await self._read(ovn_ports.leases, network)

    # ------------------------------------------------------------ ACLs

    async def create_acl(self, spec: AclSpec, *, may_exist: bool = False) -> AclSpec:
        return await self._change(ovn_acls.create_acl, self.names.prefix, spec, may_exist)

    async def update_acl(self, spec: AclSpec) -> AclSpec:
        return await self._change(ovn_acls.update_acl, self.names.prefix, spec)

    async def get_acl(self, name: str) -> AclSpec:
        def read(nb: Nb) -> AclSpec:
            return codec.acl(ovn_acls.acl_row(nb, name).external_ids[SPEC])

        return await self._read(read)

    async def list_acls(self) -> list[AclSpec]:
        return await self._read(ovn_acls.list_acls)

    async def delete_acl(self, name: str, *, if_exists: bool = False) -> None:
        def change(nb: Nb) -> None:
            if if_exists and nb.one_owned("Port_Group", "acl", **{NAME: name}) is None:
                return
            ovn_acls.delete_acl(nb, name)

        await self._change(change)

    # ------------------------------------------------------------ forwards

    async def create_forward(
        self, network: str, spec: ForwardSpec, *, may_exist: bool = False
    ) -> ForwardSpec:
        return await self._change(
            ovn_forwards.create_forward, self.names, network, spec, may_exist)

    async def list_forwards(self, network: str) -> list[ForwardSpec]:
        return await self._read(ovn_forwards.list_forwards, network)

    async def delete_forward(self, network: str, listen_address: str, *, if_exists: bool = False) -> None:
        await self._change(ovn_forwards.delete_forward, network, listen_address, if_exists)

    # ------------------------------------------------------------ drift repair

    async def reconcile(self, desired: DesiredState) -> ReconcileReport:
        return await reconcile(self._change, self.names, desired)
