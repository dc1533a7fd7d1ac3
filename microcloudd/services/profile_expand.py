"""An instance's expanded config and devices, as LXD computes them: its profiles applied in
order (a later profile's key or device replaces an earlier one's), then the instance's own
config keys and devices on top, by key and by device name (a device is replaced whole).

The row keeps only the instance's own config and devices; every backend step (launch, domain
spec, update, view) works on the expansion, recomputed from the current profiles, so an edit
of a profile reaches each instance that uses it.

Expansion is idempotent: expanding an already expanded row gives the same row.

The "default" profile always exists, as in LXD: `microcloud init` writes it; a database that
has none (before init, or a test cloud) gets the built-in one from the settings: a root disk
on `storage.pool` and eth0 on `network.default`, what prepare() added before profiles existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from microcloudd.api.errors import InvalidArgument, NotFound
from microcloudd.db.records import Instance, Profile
from microcloudd.services.cloud import Cloud

DEFAULT = "default"

Devices = dict[str, dict[str, str]]
Profiles = Mapping[str, Profile]


def builtin_default(cloud: Cloud) -> Profile:
    devices: Devices = {"root": {"type": "disk", "path": "/",
                                 "pool": cloud.default_pool}}
    network = cloud.settings.get("network.default")
    if network:
        devices["eth0"] = {"type": "nic", "network": network, "name": "eth0"}
    return Profile(name=DEFAULT, devices=devices, description="Default profile")


def all_profiles(cloud: Cloud) -> dict[str, Profile]:
    """Every profile by name (the built-in default when the database has none): one replica read."""
    out = {p.name: p for p in cloud.need_db().all(Profile)}
    if DEFAULT not in out:
        out[DEFAULT] = builtin_default(cloud)
    return out


def lookup(cloud: Cloud, names: Iterable[str], profiles: Profiles | None = None) -> list[Profile]:
    """The named profiles, in order; an unknown or repeated name is refused (a request's check)."""
    names = list(names)
    known = profiles if profiles is not None else all_profiles(cloud)
    seen: set[str] = set()
    out = []
    for name in names:
        if not isinstance(name, str) or name in seen:
            raise InvalidArgument(f"Duplicate profile {name!r} in the request")
        seen.add(name)
        prof = known.get(name)
        if prof is None:
            raise NotFound(f"Profile {name!r} not found", name=name)
        out.append(prof)
    return out


def expand_config(profiles: Sequence[Profile], config: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for prof in profiles:
        out.update(prof.config)
    out.update(config)
    return out


def expand_devices(profiles: Sequence[Profile], devices: Mapping[str, Mapping[str, str]]) -> Devices:
    out: Devices = {}
    for prof in profiles:
        out.update({name: dict(dev) for name, dev in prof.devices.items()})
    out.update({name: dict(dev) for name, dev in devices.items()})
    return out


def expanded(cloud: Cloud, rec: Instance, profiles: Profiles | None = None) -> Instance:
    """`rec` with its expanded config and devices. A profile the row names but the database
    lacks is skipped: one in use cannot be deleted, so only a hand-edited database has that."""
    known = profiles if profiles is not None else all_profiles(cloud)
    applied = [known[n] for n in rec.profiles if n in known]
    return msgspec.structs.replace(rec, config=expand_config(applied, rec.config),
                                   devices=expand_devices(applied, rec.devices))
