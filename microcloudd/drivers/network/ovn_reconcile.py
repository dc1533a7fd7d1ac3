"""Drift repair: make the NB database hold exactly what the cluster database says we own.

Run in stages, one transaction each (a row created in a transaction cannot be found by name
until it commits): create missing networks and ACLs; create missing ports and fix their ACL
membership and DNS records; create missing forwards; then remove what we own but nobody
wants any more. Every stage is idempotent, so an interrupted run is simply run again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from microcloudd.drivers.network import codec, ovn_acls, ovn_forwards, ovn_network, ovn_ports
from microcloudd.drivers.network.base import DesiredState, ReconcileReport
from microcloudd.drivers.network.ovn_names import Names
from microcloudd.drivers.network.ovn_txn import NAME, NETWORK, SPEC, Nb

Run = Callable[..., Awaitable[Any]]


async def reconcile(run: Run, names: Names, desired: DesiredState) -> ReconcileReport:
    report = ReconcileReport()
    prefix = names.prefix

    def create_parents(nb: Nb) -> None:
        have = ovn_network.network_rows(nb)
        for spec in desired.networks:
            if spec.name not in have:
                ovn_network.create_network(nb, names, ovn_network.check_network(nb, spec))
                report.created.append(f"network {spec.name}")
        acls = {pg.external_ids[NAME]: pg for pg in nb.owned("Port_Group", "acl")}
        for acl in desired.acls:
            pg = acls.get(acl.name)
            if pg is None:
                ovn_acls.create_acl(nb, prefix, acl, may_exist=False)
                report.created.append(f"acl {acl.name}")
            elif codec.acl(pg.external_ids[SPEC]) != acl:
                ovn_acls.update_acl(nb, prefix, acl)
                report.created.append(f"acl {acl.name} (rules)")

    def create_ports(nb: Nb) -> None:
        for spec in desired.ports:
            assert spec.id, "desired ports carry their id"
            row = nb.find("Logical_Switch_Port", name=spec.id)
            if row is None:
                ovn_ports.create_port(nb, prefix, ovn_ports.check_port(nb, spec))
                report.created.append(f"port {spec.id}")
            elif ovn_ports.port_acls(nb, row) != tuple(sorted(spec.acls)):
                ovn_ports.apply_acls(nb, prefix, row, tuple(spec.acls))
                report.created.append(f"port {spec.id} (acls)")

    def sync_dns(nb: Nb) -> None:
        for spec in desired.networks:
            if ovn_ports.sync_dns(nb, spec.name):
                report.created.append(f"dns {spec.name}")

    def create_forwards(nb: Nb) -> None:
        for network, fwd in desired.forwards:
            have = {f.listen_address: f for f in ovn_forwards.list_forwards(nb, network)}
            if have.get(fwd.listen_address) != fwd:
                if fwd.listen_address in have:
                    ovn_forwards.delete_forward(nb, network, fwd.listen_address, if_exists=True)
                ovn_forwards.create_forward(nb, names, network, fwd, may_exist=False)
                report.created.append(f"forward {network} {fwd.listen_address}")

    def remove_orphans(nb: Nb) -> None:
        want_ports = {p.id for p in desired.ports}
        want_nets = {n.name for n in desired.networks}
        want_fwds = {(n, f.listen_address) for n, f in desired.forwards}
        want_acls = {a.name for a in desired.acls}
        doomed = [row for row in nb.owned("Logical_Switch_Port", "port") if row.name not in want_ports]
        report.removed += [f"port {row.name}" for row in doomed]
        # ports of networks that go away go with their switch
        ovn_ports.delete_ports(nb, [r for r in doomed if r.external_ids.get(NETWORK) in want_nets])
        for name in ovn_network.network_rows(nb):
            if name not in want_nets:
                continue
            for fwd in ovn_forwards.list_forwards(nb, name):
                if (name, fwd.listen_address) not in want_fwds:
                    ovn_forwards.delete_forward(nb, name, fwd.listen_address, if_exists=True)
                    report.removed.append(f"forward {name} {fwd.listen_address}")
        for name in list(ovn_network.network_rows(nb)):
            if name not in want_nets:
                ovn_network.delete_network(nb, name, force=True)
                report.removed.append(f"network {name}")
        for pg in nb.owned("Port_Group", "acl"):
            if pg.external_ids[NAME] not in want_acls:
                report.removed.append(f"acl {pg.external_ids[NAME]}")
                pg.delete()

    for stage in (create_parents, create_ports, sync_dns, create_forwards, remove_orphans):
        await run(stage)
    return report


