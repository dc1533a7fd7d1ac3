"""Profiles: create, read, edit, rename, delete (LXD's rules).

A profile is checked with the same rules as an instance's own config and devices
(instance_config), plus what a profile's root disk needs: a pool that exists. An edit is
checked against every instance that uses the profile (its expansion before and after, as
an edit of the instance itself would be) before anything is written; then the profile is
written and each of those instances brought to its new expansion (new NICs' ports, the
persistent domain re-defined, so limits hold from the next start).
"""

from __future__ import annotations

import msgspec

from microcloudd.api import profiles as api
from microcloudd.api.errors import AlreadyExists, Forbidden, InUse, InvalidArgument, MicrocloudError, NotFound
from microcloudd.api.names import check_name
from microcloudd.db.records import Instance, Network, Profile, StoragePool
from microcloudd.services import config_patch, instance_update, instances
from microcloudd.services import instance_config as ic
from microcloudd.services import instance_launch as launch
from microcloudd.services import instance_spec as isp
from microcloudd.services import instance_view as view
from microcloudd.services import profile_expand as pe
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_locks import locks


def url(name: str) -> str:
    return f"/1.0/profiles/{name}"


def users(cloud: Cloud, name: str) -> list[Instance]:
    return sorted(cloud.need_db().find(Instance, where=lambda r: name in r.profiles), key=lambda r: r.name)


def _to_api(rec: Profile, used_by: list[str]) -> api.Profile:
    return api.Profile(name=rec.name, description=rec.description, config=dict(rec.config),
                       devices={k: dict(v) for k, v in rec.devices.items()}, used_by=used_by)


def list_profiles(cloud: Cloud) -> list[api.Profile]:
    used: dict[str, list[str]] = {}
    for inst in sorted(cloud.need_db().all(Instance), key=lambda r: r.name):
        for name in inst.profiles:
            used.setdefault(name, []).append(view.url(inst.name))
    return [_to_api(p, used.get(p.name, [])) for _, p in sorted(pe.all_profiles(cloud).items())]


def get_record(cloud: Cloud, name: str) -> Profile:
    rec = pe.all_profiles(cloud).get(name)
    if rec is None:
        raise NotFound(f"Profile {name!r} not found", name=name)
    return rec


def get_profile(cloud: Cloud, name: str) -> api.Profile:
    return _to_api(get_record(cloud, name), [view.url(i.name) for i in users(cloud, name)])


def check(cloud: Cloud, config: dict[str, str], devices: dict[str, dict[str, str]]) -> None:
    """A profile's config and devices, on their own (its users are checked by `_plan_users`)."""
    ic.check_user_config(config)
    ic.check_devices(devices)
    db = cloud.need_db()
    pools = {p.name for p in db.all(StoragePool)} | {isp.default_pool(cloud)}
    for name, dev in devices.items():
        if dev.get("type") == "disk" and dev.get("path") == "/":
            if not dev.get("pool"):
                raise InvalidArgument(f"device {name!r}: a root disk in a profile needs `pool`")
            if dev["pool"] not in pools:
                raise NotFound(f"Storage pool {dev['pool']!r} (device {name!r}) not found")
    for name, dev in ic.nic_devices(devices).items():
        if db.get_or_none(Network, dev["network"]) is None:
            raise NotFound(f"Network {dev['network']!r} (device {name!r}) not found")


async def create(cloud: Cloud, body: api.ProfilesPost) -> None:
    check_name("profile", body.name)
    if body.name in pe.all_profiles(cloud):
        raise AlreadyExists(f"Profile {body.name!r} already exists", name=body.name)
    devices = {k: dict(v) for k, v in body.devices.items()}
    check(cloud, body.config, devices)
    await cloud.need_db().insert(Profile(name=body.name, description=body.description,
                                         config=dict(body.config), devices=devices))


async def replace(cloud: Cloud, name: str, *, description: str, config: dict[str, str],
                  devices: dict[str, dict[str, str]]) -> None:
    get_record(cloud, name)
    devices = {k: dict(v) for k, v in devices.items()}
    check(cloud, config, devices)
    await _apply(cloud, Profile(name=name, description=description, config=dict(config), devices=devices))


async def patch(cloud: Cloud, name: str, *, description: str | None, config: dict[str, str] | None,
                devices: dict[str, dict[str, str]] | None) -> None:
    old = get_record(cloud, name)
    merged = config_patch.patched(old.config, config)
    await replace(cloud, name, description=old.description if description is None else description,
                  config=merged, devices={**old.devices, **(devices or {})})


async def _plan_users(cloud: Cloud, new: Profile, before: pe.Profiles,
                      after: pe.Profiles) -> list[tuple[Instance, Instance]]:
    """(row now, row after) of every user of profile `new`; raises, naming the instance, if
    one of them could not take the edit (as an edit of the instance itself)."""
    recs = users(cloud, new.name)
    if recs:  # the backends must be there before the profile is written
        cloud.need_storage(), cloud.need_compute(), cloud.need_network()
    if len(recs) > 1 and ic.volume_devices(new.devices):
        raise InUse(f"Profile {new.name!r} is used by {len(recs)} instances: a custom volume attaches "
                    "to one instance only")
    plans = []
    for rec in recs:
        new_x = pe.expanded(cloud, rec, after)
        try:
            launch.check_final(rec)
            await instance_update.check_change(cloud, pe.expanded(cloud, rec, before), new_x)
        except MicrocloudError as e:
            raise type(e)(f"Instance {rec.name!r} uses profile {new.name!r}: {e}", **e.details) from None
        config = instances._fill_volatile(rec.name, rec.config, new_x.devices)
        plans.append((rec, msgspec.structs.replace(rec, config=config)))
    return plans


async def _apply(cloud: Cloud, new: Profile) -> None:
    before = pe.all_profiles(cloud)
    after = {**before, new.name: new}
    plans = await _plan_users(cloud, new, before, after)
    db = cloud.need_db()
    if db.get_or_none(Profile, new.name) is None:  # the built-in default, written on its first edit
        await db.insert(new, may_exist=True)
    await db.update(Profile, new.name, description=new.description, config=new.config, devices=new.devices)
    for rec, new_rec in plans:
        async with locks(cloud).hold(rec.name):
            await instance_update.apply(cloud, rec, new_rec, profiles_before=before)
        cloud.events.lifecycle("instance-updated", view.url(rec.name))
    cloud.events.lifecycle("profile-updated", url(new.name))


async def rename(cloud: Cloud, name: str, new_name: str) -> None:
    if name == pe.DEFAULT:
        raise Forbidden("The 'default' profile cannot be renamed")
    rec = get_record(cloud, name)
    check_name("profile", new_name)
    if new_name in pe.all_profiles(cloud):
        raise AlreadyExists(f"Name {new_name!r} already in use", name=new_name)
    db = cloud.need_db()
    # One transaction: no instance ever names a profile that does not exist.
    async with db.transaction() as txn:
        txn.insert(msgspec.structs.replace(rec, name=new_name))
        for inst in users(cloud, name):
            txn.update(Instance, inst.name, profiles=[new_name if p == name else p for p in inst.profiles])
        txn.delete(Profile, name)
    cloud.events.lifecycle("profile-renamed", url(new_name), old_name=name)


async def delete(cloud: Cloud, name: str) -> None:
    if name == pe.DEFAULT:
        raise Forbidden("The 'default' profile cannot be deleted")
    get_record(cloud, name)
    used_by = [view.url(i.name) for i in users(cloud, name)]
    if used_by:
        raise InUse("Profile is currently in use", used_by=used_by)
    await cloud.need_db().delete(Profile, name, if_exists=True)
    cloud.events.lifecycle("profile-deleted", url(name))
