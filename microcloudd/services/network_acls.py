"""Network ACLs: LXD-style rule lists, compiled (and so checked) before anything is recorded,
kept in the NetworkACL table and realised as an OVN port group instances' ports join
through their NIC's `security.acls`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import msgspec

from microcloudd.api.errors import AlreadyExists, InUse, InvalidArgument, NotFound
from microcloudd.api.names import check_name
from microcloudd.api.networks import NetworkACL, NetworkACLRule
from microcloudd.db.database import Database
from microcloudd.db.records import Instance, Profile
from microcloudd.db.records import NetworkACL as AclRecord
from microcloudd.drivers.network import acl_rules
from microcloudd.drivers.network.base import AclRule, AclSpec
from microcloudd.services import config_patch
from microcloudd.services import network_store as store
from microcloudd.services.cloud import Cloud
from microcloudd.services.reverter import Reverter

log = logging.getLogger(__name__)


def _rules(rules: Sequence[dict[str, str]]) -> tuple[AclRule, ...]:
    return tuple(AclRule(**r) for r in rules)


def spec_of(rec: AclRecord) -> AclSpec:
    return AclSpec(name=rec.name, ingress=_rules(rec.ingress), egress=_rules(rec.egress),
                   description=rec.description)


def _dicts(rules: Sequence[NetworkACLRule]) -> list[dict[str, str]]:
    return [msgspec.structs.asdict(r) for r in rules]


def _names(value: str) -> list[str]:
    return [a.strip() for a in value.split(",") if a.strip()]


def used_by(db: Database, name: str) -> list[str]:
    """Instances whose ports (or NIC devices) and profiles whose NICs apply the ACL."""
    users = {f"/1.0/instances/{p.instance}" for p in store.ports(db) if name in p.acls}
    for inst in db.all(Instance):
        if any(name in _names(d.get("security.acls", "")) for d in inst.devices.values()):
            users.add(f"/1.0/instances/{inst.name}")
    for prof in db.all(Profile):
        if any(name in _names(d.get("security.acls", "")) for d in prof.devices.values()):
            users.add(f"/1.0/profiles/{prof.name}")
    return sorted(users)


def to_api(db: Database, rec: AclRecord) -> NetworkACL:
    return NetworkACL(name=rec.name, description=rec.description,
                      ingress=[msgspec.convert(r, NetworkACLRule) for r in rec.ingress],
                      egress=[msgspec.convert(r, NetworkACLRule) for r in rec.egress],
                      config=dict(rec.config), used_by=used_by(db, rec.name))


def record(db: Database, name: str) -> AclRecord:
    rec = db.get_or_none(AclRecord, name)
    if rec is None:
        raise NotFound(f"Network ACL {name!r} not found")
    return rec


def check(rec: AclRecord) -> AclRecord:
    """Refuse a bad name, config key or rule (InvalidArgument naming the rule)."""
    check_name("network ACL", rec.name)
    for key in rec.config:
        if not key.startswith("user."):
            raise InvalidArgument(f"Invalid option for network ACL {rec.name!r}: unknown key {key!r} "
                                  "(only user.* keys)")
    spec = spec_of(rec)
    acl_rules.compile_rules(acl_rules.port_group_name("check", rec.name), spec.ingress, spec.egress)
    return rec


def list_acls(cloud: Cloud) -> list[NetworkACL]:
    db = cloud.need_db()
    return [to_api(db, r) for r in sorted(db.all(AclRecord), key=lambda r: r.name)]


def get_acl(cloud: Cloud, name: str) -> NetworkACL:
    db = cloud.need_db()
    return to_api(db, record(db, name))


async def create_acl(cloud: Cloud, name: str, *, description: str = "",
                     ingress: Sequence[NetworkACLRule] = (), egress: Sequence[NetworkACLRule] = (),
                     config: Mapping[str, str] | None = None) -> NetworkACL:
    db, driver = cloud.need_db(), cloud.need_network()
    rec = check(AclRecord(name=name, description=description, ingress=_dicts(ingress), egress=_dicts(egress),
                          config=dict(config or {})))
    if db.get_or_none(AclRecord, name) is not None:
        raise AlreadyExists(f"Network ACL {name!r} already exists")
    async with store.lock(cloud), Reverter() as revert:
        await db.insert(rec)
        revert.add(lambda: db.delete(AclRecord, name, if_exists=True), f"ACL {name} record")
        await driver.create_acl(spec_of(rec), may_exist=True)
        revert.success()
    cloud.events.lifecycle("network-acl-created", f"/1.0/network-acls/{name}")
    return to_api(db, rec)


async def replace_acl(cloud: Cloud, name: str, *, description: str, ingress: Sequence[NetworkACLRule],
                      egress: Sequence[NetworkACLRule], config: Mapping[str, str]) -> NetworkACL:
    db, driver = cloud.need_db(), cloud.need_network()
    old = record(db, name)
    new = check(AclRecord(name=name, description=description, ingress=_dicts(ingress), egress=_dicts(egress),
                          config=dict(config)))
    async with store.lock(cloud), Reverter() as revert:
        rec = await db.update(AclRecord, name, description=new.description, ingress=new.ingress,
                              egress=new.egress, config=new.config)
        revert.add(lambda: db.update(AclRecord, name, description=old.description, ingress=old.ingress,
                                     egress=old.egress, config=old.config))
        await driver.update_acl(spec_of(rec))  # one NB transaction: the old rules go, the new come
        revert.success()
    cloud.events.lifecycle("network-acl-updated", f"/1.0/network-acls/{name}")
    return to_api(db, rec)


async def patch_acl(cloud: Cloud, name: str, *, description: str | None = None,
                    ingress: Sequence[NetworkACLRule] | None = None,
                    egress: Sequence[NetworkACLRule] | None = None,
                    config: Mapping[str, str] | None = None) -> NetworkACL:
    old = to_api(cloud.need_db(), record(cloud.need_db(), name))
    merged = config_patch.patched(old.config, config)
    return await replace_acl(
        cloud, name, description=old.description if description is None else description,
        ingress=old.ingress if ingress is None else ingress, egress=old.egress if egress is None else egress,
        config=merged)


async def delete_acl(cloud: Cloud, name: str) -> None:
    db, driver = cloud.need_db(), cloud.need_network()
    old = record(db, name)
    users = used_by(db, name)
    if users:
        raise InUse(f"Network ACL {name!r} is applied to {', '.join(users)}: remove it from them first",
                    used_by=users)
    async with store.lock(cloud), Reverter() as revert:
        await db.delete(AclRecord, name, if_exists=True)
        revert.add(lambda: db.insert(old, may_exist=True), f"ACL {name} record")
        await driver.delete_acl(name, if_exists=True)
        revert.success()
    cloud.events.lifecycle("network-acl-deleted", f"/1.0/network-acls/{name}")
