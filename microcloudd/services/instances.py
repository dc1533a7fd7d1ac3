"""Instances: create, read, update, delete. Requests are validated here, up front (a bad one
fails with a 4xx and creates nothing), the wanted state is written to the database, then an
operation realises it (instance_launch). Power actions: instance_power; snapshots:
instance_snapshots; the reconciler: instance_reconciler."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from microcloudd.api import instances as api
from microcloudd.api.errors import AlreadyExists, Conflict, InUse, InvalidArgument, NotFound
from microcloudd.api.names import check_name
from microcloudd.api.server import Operation
from microcloudd.db.records import Image, ImageAlias, Instance, Network, Volume
from microcloudd.drivers.compute.types import PowerState
from microcloudd.drivers.storage.base import VolumeType
from microcloudd.events import now
from microcloudd.operations import OperationContext
from microcloudd.services import images, network_store, volumes
from microcloudd.services import instance_config as ic
from microcloudd.services import instance_launch as launch
from microcloudd.services import instance_spec as isp
from microcloudd.services import instance_view as view
from microcloudd.services import profile_expand as pe
from microcloudd.services.cloud import Cloud
from microcloudd.services.instance_locks import locks


def resolve_image(cloud: Cloud, source: api.InstanceSource) -> Image:
    """The image a source names: alias, else fingerprint (or a unique prefix of one)."""
    db = cloud.need_db()
    if source.type not in ("image", ""):
        raise InvalidArgument(f"Unsupported instance source type {source.type!r} (only \"image\")")
    if source.server:
        raise InvalidArgument("Remote image servers are not supported: import the image first")
    if source.alias:
        alias = db.get_or_none(ImageAlias, source.alias)
        if alias is None:
            raise NotFound(f"Image alias {source.alias!r} not found")
        return images.require_ready(db.get(Image, alias.image))
    if not source.fingerprint:
        raise InvalidArgument("The source needs an image alias or fingerprint")
    return images.require_ready(images.resolve_now(cloud, source.fingerprint))


def check_instance_name(name: str) -> str:
    check_name("instance", name)
    if len(name) > isp.MAX_NAME or name.endswith(isp.SEED_SUFFIX):
        raise InvalidArgument(f"Invalid instance name {name!r}: at most {isp.MAX_NAME} characters, "
                              f"not ending in {isp.SEED_SUFFIX!r} (reserved for cloud-init seeds)")
    return name


async def _check_references(cloud: Cloud, devices: dict[str, dict[str, str]], name: str) -> None:
    db = cloud.need_db()
    for dev_name, dev in ic.nic_devices(devices).items():
        if db.get_or_none(Network, dev["network"]) is None:
            raise NotFound(f"Network {dev['network']!r} (device {dev_name!r}) not found")
    storage = cloud.need_storage()
    for dev_name, dev in ic.volume_devices(devices).items():
        check_name("volume", dev["source"])
        pool = dev.get("pool") or isp.default_pool(cloud)
        row = db.get_or_none(Volume, (pool, VolumeType.CUSTOM.value, dev["source"]))
        if row is not None and row.status != volumes.READY:
            raise InvalidArgument(f"Volume {dev['source']!r} (device {dev_name!r}) is still being created; "
                                  "wait for its operation and try again")
        info = await storage.volume_info(pool, dev["source"], type=VolumeType.CUSTOM)
        others = [i for i in info.attached_to if i != name]
        if others:
            raise InUse(f"Volume {dev['source']!r} (device {dev_name!r}) is attached to {', '.join(others)}")


def _fill_volatile(name: str, config: dict[str, str], devices: dict[str, dict[str, str]]) -> dict[str, str]:
    """Choose MACs and OVN port ids of new NICs now, so every retry makes the same objects.
    `devices` are the expanded ones (a profile's NICs get their ids in the instance's config)."""
    out = dict(config)
    for dev_name, dev in ic.nic_devices(devices).items():
        out.setdefault(f"volatile.{dev_name}.hwaddr", (dev.get("hwaddr") or isp.new_mac()).lower())
        out[f"volatile.{dev_name}.port"] = network_store.port_id(dev["network"], name, dev_name)
    for key in [k for k in out if k.startswith("volatile.") and k.count(".") == 2]:
        dev_name = key.split(".")[1]
        if key.endswith((".hwaddr", ".port")) and dev_name not in devices:
            del out[key]  # a removed NIC's ids
    return out


def _root_of(devices: dict[str, dict[str, str]], profiles: list[str]) -> tuple[str, dict[str, str]]:
    try:
        return ic.root_device(devices)
    except InvalidArgument:
        applied = ", ".join(profiles) or "none"
        raise InvalidArgument(f"The instance has no root disk once its profiles ({applied}) are applied: "
                              "give it a profile with one, or a device such as "
                              "root: {type: disk, path: /, pool: POOL}") from None


async def prepare(cloud: Cloud, body: api.InstancesPost) -> Instance:
    """Validate a create request and build its row; raises before anything exists.
    The row keeps the request's own config and devices; the checks run on the expansion."""
    db = cloud.need_db()
    name = check_instance_name(body.name)
    if body.type not in ("virtual-machine", ""):
        raise InvalidArgument(f"Instance type {body.type!r} is not supported: "
                              "microcloud runs virtual machines")
    if db.get_or_none(Instance, name) is not None:
        raise AlreadyExists(f"Instance {name!r} already exists", name=name)
    image = resolve_image(cloud, body.source)
    profile_names = list(body.profiles) if body.profiles is not None else [pe.DEFAULT]
    profiles = pe.lookup(cloud, profile_names)
    ic.check_user_config(body.config)
    devices = {k: dict(v) for k, v in body.devices.items()}
    ic.check_devices(devices)
    image_pool = image.pool or isp.default_pool(cloud)
    own_root = next((d for d in devices.values() if d.get("type") == "disk" and d.get("path") == "/"), None)
    if own_root is not None and not own_root.get("pool"):
        # An own root disk without a pool (a size, say) stays where the profiles' root is.
        inherited = next((d for d in pe.expand_devices(profiles, {}).values()
                          if d.get("type") == "disk" and d.get("path") == "/"), {})
        own_root["pool"] = inherited.get("pool") or image_pool
    config = pe.expand_config(profiles, body.config)
    all_devices = pe.expand_devices(profiles, devices)
    ic.check_user_config(config)
    ic.check_devices(all_devices)
    _, root = _root_of(all_devices, profile_names)
    if image.pool and root.get("pool", image_pool) != image.pool:
        raise InvalidArgument(f"The root disk must be in pool {image.pool!r}, where image "
                              f"{image.fingerprint[:12]} is (requested {root['pool']!r})")
    if root.get("size") and ic.parse_size(root["size"], "root size") < image.size:
        raise InvalidArgument(f"Root disk size {root['size']} is smaller than the image ({image.size} bytes)")
    await _check_references(cloud, all_devices, name)
    instance_uuid = str(uuidlib.uuid4())
    own_config = {
        **body.config,
        **{f"image.{k}": v for k, v in image.properties.items()},
        "volatile.base_image": image.fingerprint,
        "volatile.uuid": instance_uuid,
        "volatile.cloud-init.instance-id": str(uuidlib.uuid4()),
    }
    own_config = _fill_volatile(name, own_config, all_devices)
    return Instance(name=name, uuid=instance_uuid, type="virtual-machine",
                    status="Running" if body.start else "Stopped", location=cloud.server_name,
                    image=image.fingerprint, config=own_config, devices=devices, profiles=profile_names,
                    description=body.description, created_at=now(), stage=launch.CREATING)


async def create(cloud: Cloud, body: api.InstancesPost) -> Operation:
    rec = await prepare(cloud, body)
    # Launches are this member's: the row says so, and the reconciler here finishes a crashed one.
    rec = await launch.insert_row(cloud, rec)
    name = rec.name

    async def work(op: OperationContext) -> dict[str, Any] | None:
        async with locks(cloud).hold(name):
            op.progress(stage="creating")
            await launch.launch(cloud, rec)
        cloud.events.lifecycle("instance-created", view.url(name), type="virtual-machine",
                               **{"storage-pool": isp.root_pool(cloud, rec)})
        return None

    return cloud.operations.start("Creating instance", work, resources={"instances": [view.url(name)]},
                                  may_cancel=False)


def get_record(cloud: Cloud, name: str) -> Instance:
    rec = cloud.need_db().get_or_none(Instance, name)
    if rec is None:
        raise NotFound("Instance not found", name=name)
    return rec


async def delete(cloud: Cloud, name: str) -> Operation:
    rec = get_record(cloud, name)
    if rec.stage == launch.CREATING:
        raise Conflict(f"Instance {name!r} is still being created")
    if rec.location == cloud.server_name and cloud.compute is not None and rec.stage == launch.CREATED:
        if await cloud.compute.exists(name):
            st = await cloud.compute.state(name)
            if st.state is not PowerState.STOPPED:
                raise Conflict("Instance is running", name=name)

    async def work(op: OperationContext) -> dict[str, Any] | None:
        async with locks(cloud).hold(name):
            await launch.remove(cloud, name)
        cloud.events.lifecycle("instance-deleted", view.url(name))
        return None

    return cloud.operations.start("Deleting instance", work, resources={"instances": [view.url(name)]},
                                  may_cancel=False)


async def list_instances(cloud: Cloud, recursion: int, flt: str = "") -> list[Any]:
    db = cloud.need_db()
    recs = sorted((r for r in db.all(Instance) if view.matches(r, flt)), key=lambda r: r.name)
    if recursion <= 0:
        return [view.url(r.name) for r in recs]
    if recursion == 1:
        return view.listing(cloud, recs)
    return await view.full(cloud, recs)


async def get(cloud: Cloud, name: str, recursion: int) -> Any:
    rec = get_record(cloud, name)
    if recursion >= 1:
        return (await view.full(cloud, [rec]))[0]
    return view.instances(cloud, [rec], cls=api.InstanceFull)[0]


async def state(cloud: Cloud, name: str) -> api.InstanceState:
    rec = get_record(cloud, name)
    return (await view.full(cloud, [rec]))[0].state  # type: ignore[return-value]
