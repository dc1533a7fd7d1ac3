"""Changing an instance: config (limits), devices (NICs, custom volumes, root size), profiles.
Checks and backend work use the expansions (profile_expand) of the row before and after.

The new row is validated and written first; then new ports and volume attachments are made,
the persistent domain is re-defined from the row (so every change holds from the next start,
on any libvirt), and on a running instance each change is also tried live, where libvirt
can (the test:/// driver cannot hot-plug: there it waits for the next start).
"""

from __future__ import annotations

import logging

import msgspec

from microcloudd.api import instances as api
from microcloudd.api.errors import InvalidArgument, MicrocloudError, NotFound
from microcloudd.db.records import Instance, Network
from microcloudd.drivers.compute.types import PowerState
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.services import instance_config as ic
from microcloudd.services import instance_launch as launch
from microcloudd.services import instance_spec as isp
from microcloudd.services import instances, network_ports
from microcloudd.services import profile_expand as pe
from microcloudd.services.cloud import Cloud

log = logging.getLogger(__name__)


def _system_keys(config: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in config.items() if k.startswith(ic.READONLY_PREFIXES)}


async def plan(cloud: Cloud, rec: Instance, body: api.InstancePut, merge: bool) -> Instance:
    """The row after the change (validated on its expansion; nothing written yet)."""
    launch.check_final(rec)
    user = {k: v for k, v in rec.config.items() if not k.startswith(ic.READONLY_PREFIXES)}
    if body.config is not None:
        bad = [k for k, v in body.config.items()
               if k.startswith(ic.READONLY_PREFIXES) and rec.config.get(k) != v]
        if bad:
            raise InvalidArgument(f"config key(s) {', '.join(sorted(bad))} are set by microcloud and "
                                  "cannot be changed")
        given = {k: v for k, v in body.config.items() if not k.startswith(ic.READONLY_PREFIXES)}
        user = {**user, **given} if merge else given
        user = {k: v for k, v in user.items() if v != ""} if merge else user
    ic.check_user_config(user)
    devices = {k: dict(v) for k, v in rec.devices.items()}
    if body.devices is not None:
        devices = {**devices, **body.devices} if merge else {k: dict(v) for k, v in body.devices.items()}
    ic.check_devices(devices)
    profiles = pe.all_profiles(cloud)
    names = list(body.profiles) if body.profiles is not None else list(rec.profiles)
    pe.lookup(cloud, names, profiles)
    old_x = pe.expanded(cloud, rec, profiles)
    for dev in devices.values():
        if dev.get("type") == "disk" and dev.get("path") == "/" and not dev.get("pool"):
            dev["pool"] = _root_of(old_x)[1].get("pool", "")  # an own root without a pool stays put
    new = msgspec.structs.replace(
        rec, config={**user, **_system_keys(rec.config)}, devices=devices, profiles=names,
        description=body.description if body.description is not None else rec.description)
    new_x = pe.expanded(cloud, new, profiles)
    await check_change(cloud, old_x, new_x)
    return msgspec.structs.replace(new, config=instances._fill_volatile(rec.name, new.config, new_x.devices))


def _root_of(rec: Instance) -> tuple[str, dict[str, str]]:
    try:
        return ic.root_device(rec.devices)
    except InvalidArgument:
        raise InvalidArgument(f"Instance {rec.name!r} would have no root disk (profiles: "
                              f"{', '.join(rec.profiles) or 'none'})") from None


async def check_change(cloud: Cloud, old: Instance, new: Instance) -> None:
    """Refuse a change an existing instance cannot take; both rows expanded. Used for an
    instance's own edits and for every user of an edited profile."""
    ic.check_user_config(new.config, allow_volatile=True)
    ic.check_devices(new.devices)
    old_root_name, old_root = _root_of(old)
    new_root_name, new_root = _root_of(new)
    if (new_root_name != old_root_name or new_root.get("pool", old_root.get("pool")) != old_root.get("pool")
            or new_root.get("path") != "/"):
        raise InvalidArgument(f"The root disk of instance {new.name!r} cannot be replaced or moved to "
                              "another pool")
    if new_root.get("size") and old_root.get("size"):
        if ic.parse_size(new_root["size"], "root size") < ic.parse_size(old_root["size"], "root size"):
            raise InvalidArgument(f"The root disk of instance {new.name!r} cannot shrink")
    db = cloud.need_db()
    for name, dev in ic.nic_devices(new.devices).items():
        if old.devices.get(name) != dev and db.get_or_none(Network, dev["network"]) is None:
            raise NotFound(f"Network {dev['network']!r} (device {name!r}) not found")
        if name in old.devices and old.devices[name] != dev:
            raise InvalidArgument(f"NIC {name!r} of instance {new.name!r} cannot be changed in place: "
                                  "remove it and add a new one")
    added_volumes = {n: d for n, d in ic.volume_devices(new.devices).items() if old.devices.get(n) != d}
    await instances._check_references(cloud, added_volumes, new.name)


async def apply(cloud: Cloud, old: Instance, new: Instance, *,
                profiles_before: pe.Profiles | None = None) -> Instance:
    """Write row `new` and bring the backends from `old`'s expansion to `new`'s.
    `profiles_before`: the profiles `old` was expanded with, when a profile edit changed them."""
    db, storage, compute = cloud.need_db(), cloud.need_storage(), cloud.need_compute()
    name = new.name
    old = pe.expanded(cloud, old, profiles_before)
    stored = await db.update(Instance, name, config=new.config, devices=new.devices, profiles=new.profiles,
                             description=new.description)
    new = pe.expanded(cloud, stored)
    running = (await compute.state(name)).state is not PowerState.STOPPED
    old_nics, new_nics = ic.nic_devices(old.devices), ic.nic_devices(new.devices)
    old_vols, new_vols = ic.volume_devices(old.devices), ic.volume_devices(new.devices)
    for dev_name, dev in new_nics.items():
        await network_ports.attach_port(cloud, dev["network"], name, dev_name, mac=isp.mac(new, dev_name),
                                        ipv4=dev.get("ipv4.address") or None)
    for dev in new_vols.values():
        await storage.set_attached(dev.get("pool") or isp.default_pool(cloud), dev["source"], name, True)
    size = isp.root_size(new)
    if size and size != isp.root_size(old):
        await storage.resize_volume(isp.root_pool(cloud, new), name, size, type=VolumeType.VM)
    old_lim, new_lim = ic.limits(old.config), ic.limits(new.config)
    if running:
        await _live(cloud, old, new, old_lim != new_lim)
    await compute.define(isp.domain_spec(cloud, new), may_exist=True)
    for dev_name in old_nics.keys() - new_nics.keys():
        await network_ports.detach_port(cloud, old_nics[dev_name]["network"], name, dev_name)
    for dev_name, dev in old_vols.items():
        if dev_name not in new_vols:
            try:
                await storage.set_attached(dev.get("pool") or isp.default_pool(cloud), dev["source"],
                                           name, False)
            except NotFound:
                pass
    return stored


async def _live(cloud: Cloud, old: Instance, new: Instance, limits_changed: bool) -> None:
    """Best effort on the running domain; whatever libvirt refuses waits for the next start."""
    compute, name = cloud.need_compute(), new.name
    try:
        if limits_changed:
            lim = ic.limits(new.config)
            await compute.set_limits(name, vcpus=lim.vcpus, memory_mib=lim.memory_mib)
        spec = isp.domain_spec(cloud, new)
        for nic in spec.nics:
            if nic.mac not in {isp.mac(old, n) for n in ic.nic_devices(old.devices)}:
                await compute.attach_nic(name, nic)
        for dev_name in ic.nic_devices(old.devices).keys() - ic.nic_devices(new.devices).keys():
            await compute.detach_nic(name, isp.mac(old, dev_name))
        old_disks = {d["source"] for d in ic.volume_devices(old.devices).values()}
        new_disks = {d["source"] for d in ic.volume_devices(new.devices).values()}
        for disk in spec.disks:
            if naming.parse_backend_name(disk.source.image) and disk.source.image.removeprefix("custom_") \
                    not in old_disks:
                await compute.attach_disk(name, disk)
        if old_disks - new_disks:
            parsed = await compute.get(name)
            for d in parsed.disks:
                if d.source.image.removeprefix("custom_") in old_disks - new_disks and d.target:
                    await compute.detach_disk(name, d.target)
    except MicrocloudError as e:
        log.info("instance %s: a change could not be applied live (%s); it applies at the next start",
                 name, e)



