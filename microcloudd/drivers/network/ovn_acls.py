"""Network ACLs: one port group per ACL holding its compiled rules; ports join the groups."""

from __future__ import annotations

from typing import Any

from microcloudd.api.errors import AlreadyExists, InUse, NotFound
from microcloudd.api.names import check_name
from microcloudd.drivers.network import acl_rules, codec
from microcloudd.drivers.network.base import AclSpec
from microcloudd.drivers.network.ovn_txn import NAME, REVISION, SPEC, Nb


def acl_row(nb: Nb, name: str) -> Any:
    pg = nb.one_owned("Port_Group", "acl", **{NAME: name})
    if pg is None:
        raise NotFound(f"network ACL {name!r} not found")
    return pg


def _rows(nb: Nb, prefix: str, spec: AclSpec) -> list[Any]:
    group = acl_rules.port_group_name(prefix, spec.name)
    compiled = acl_rules.compile_rules(group, spec.ingress, spec.egress)
    return [nb.insert("ACL", direction=a.direction, priority=a.priority, match=a.match, action=a.action,
                      log=a.log, external_ids=nb.tags("acl-rule", spec.revision, **{NAME: spec.name}))
            for a in compiled]


def check_acl(spec: AclSpec, prefix: str) -> None:
    check_name("network ACL", spec.name)
    acl_rules.compile_rules(acl_rules.port_group_name(prefix, spec.name), spec.ingress, spec.egress)


def create_acl(nb: Nb, prefix: str, spec: AclSpec, may_exist: bool) -> AclSpec:
    check_acl(spec, prefix)
    existing = nb.one_owned("Port_Group", "acl", **{NAME: spec.name})
    if existing is not None:
        if may_exist:
            return codec.acl(existing.external_ids[SPEC])
        raise AlreadyExists(f"network ACL {spec.name!r} already exists")
    nb.insert("Port_Group", name=acl_rules.port_group_name(prefix, spec.name), acls=_rows(nb, prefix, spec),
              external_ids={**nb.tags("acl", spec.revision, **{NAME: spec.name}), SPEC: codec.dump(spec)})
    return spec


def update_acl(nb: Nb, prefix: str, spec: AclSpec) -> AclSpec:
    check_acl(spec, prefix)
    pg = acl_row(nb, spec.name)
    pg.acls = _rows(nb, prefix, spec)  # the old ACL rows are no longer referenced: OVSDB drops them
    pg.setkey("external_ids", SPEC, codec.dump(spec))
    pg.setkey("external_ids", REVISION, str(spec.revision))
    return spec


def delete_acl(nb: Nb, name: str, force: bool = False) -> None:
    pg = acl_row(nb, name)
    if pg.ports and not force:
        raise InUse(f"network ACL {name!r} is applied to {len(pg.ports)} port(s)")
    pg.delete()


def list_acls(nb: Nb) -> list[AclSpec]:
    return sorted((codec.acl(pg.external_ids[SPEC]) for pg in nb.owned("Port_Group", "acl")),
                  key=lambda a: a.name)
