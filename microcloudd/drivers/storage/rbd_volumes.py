"""Volumes (custom volumes and instance disks): create, inspect, resize, copy, attach marks,
delete, snapshots, orphan listing. Blocking; run from the driver's thread pool.

Attachment is recorded on the volume itself (metadata "microcloud.attached"), so the
refusal to delete an attached volume holds whoever asks; a volume open by a running QEMU
(an RBD watcher) is refused too.
"""

from __future__ import annotations

from datetime import UTC

import rados
import rbd

from microcloudd.api.errors import AlreadyExists, Conflict, InUse, InvalidArgument, NotFound
from microcloudd.api.names import check_name
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.base import OwnedObject, SnapshotInfo, VolumeInfo, VolumeType
from microcloudd.drivers.storage.rbd_errors import translated
from microcloudd.drivers.storage.rbd_session import (
    Session,
    SyncProgress,
    exists,
    open_image,
    remove_quietly,
    set_tags,
    tags,
)


def describe(vtype: VolumeType, name: str, pool: str) -> str:
    kind = {VolumeType.CUSTOM: "Volume", VolumeType.VM: "Instance disk", VolumeType.IMAGE: "Image"}[vtype]
    return f"{kind} {name!r} in storage pool {pool!r}"


def _check_size(size: int, what: str) -> int:
    if not isinstance(size, int) or size <= 0:
        raise InvalidArgument(f"{what}: size must be a positive number of bytes, not {size!r}")
    if size % 512:
        raise InvalidArgument(f"{what}: size must be a multiple of 512 bytes")
    return size


def open_elsewhere(image: rbd.Image) -> bool:
    """Whether another client (a QEMU) has the image open; `image` must be opened
    read-write by us, which makes us one of its watchers."""
    return len(list(image.watchers_list())) > 1


def _used_bytes(image: rbd.Image, size: int) -> int:
    used = 0

    def count(offset: int, length: int, exists: bool) -> None:
        nonlocal used
        used += length if exists else 0

    # whole_object with fast-diff reads the object map only: cheap even for big volumes.
    image.diff_iterate(0, size, None, count, include_parent=False, whole_object=True)
    return used


def _info_open(image: rbd.Image, pool: str, vtype: VolumeType, name: str, backend: str) -> VolumeInfo:
    meta = tags(image)
    size = image.size()
    try:
        p = image.get_parent_image_spec()
        parent = f"{p['pool_name']}/{p['image_name']}@{p['snap_name']}"
    except rbd.ImageNotFound:
        parent = ""
    attached = tuple(a for a in meta.get("attached", "").split(",") if a)
    snaps = tuple(sn["name"] for sn in image.list_snaps() if naming.is_user_snapshot(sn["name"]))
    return VolumeInfo(pool=pool, type=vtype, name=name, backend_name=backend, size=size,
                      used_bytes=_used_bytes(image, size), parent=parent, attached_to=attached,
                      snapshots=snaps, metadata=meta)


def volume_info(s: Session, pool: str, name: str, vtype: VolumeType) -> VolumeInfo:
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    with s.ioctx(pool) as io, open_image(io, backend, what, read_only=True) as image, translated(what):
        return _info_open(image, pool, vtype, name, backend)


def _volumes(io: rados.Ioctx, pool: str, vtype: VolumeType | None) -> list[tuple[str, VolumeType, str]]:
    """(backend name, type, name) of the pool's volumes of `vtype` (any type: None), sorted."""
    with translated(f"Storage pool {pool!r}"):
        names = rbd.RBD().list(io)
    out = []
    for backend in sorted(names):
        parsed = naming.parse_backend_name(backend)
        if parsed and (vtype is None or parsed[0] is vtype):
            out.append((backend, parsed[0], parsed[1]))
    return out


def volume_names(s: Session, pool: str, vtype: VolumeType | None) -> list[str]:
    with s.ioctx(pool) as io:
        return [name for _, _, name in _volumes(io, pool, vtype)]


def list_volumes(s: Session, pool: str, vtype: VolumeType | None) -> list[VolumeInfo]:
    out = []
    with s.ioctx(pool) as io:
        for backend, parsed_type, name in _volumes(io, pool, vtype):
            try:
                with rbd.Image(io, backend, read_only=True) as image:
                    out.append(_info_open(image, pool, parsed_type, name, backend))
            except rbd.ImageNotFound:
                continue  # deleted while we listed
    return out


def create_volume(s: Session, pool: str, name: str, size: int, vtype: VolumeType,
                  may_exist: bool) -> VolumeInfo:
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    _check_size(size, what)
    with s.ioctx(pool) as io:
        if exists(io, backend):
            if may_exist:
                return volume_info(s, pool, name, vtype)
            raise AlreadyExists(f"{what} already exists")
        with translated(what):
            rbd.RBD().create(io, backend, size, old_format=False)
        try:
            with open_image(io, backend, what) as image, translated(what):
                set_tags(image, {"owner": s.owner, "kind": vtype.value, "name": name})
        except BaseException:
            remove_quietly(io, backend)
            raise
    return volume_info(s, pool, name, vtype)


def resize_volume(s: Session, pool: str, name: str, size: int, vtype: VolumeType, force: bool) -> VolumeInfo:
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    _check_size(size, what)
    with s.ioctx(pool) as io, open_image(io, backend, what) as image, translated(what):
        current = image.size()
        if size < current and not force:
            raise InvalidArgument(f"{what}: shrinking from {current} to {size} bytes destroys the data "
                                  "past the new end; use force to do it anyway")
        if size != current:
            image.resize(size, allow_shrink=True)
    return volume_info(s, pool, name, vtype)


def copy_volume(s: Session, pool: str, source: str, target: str, vtype: VolumeType, target_pool: str,
                progress: SyncProgress) -> VolumeInfo:
    src_backend = naming.backend_name(vtype, source)
    dst_backend = naming.backend_name(vtype, target)
    what = describe(vtype, target, target_pool)
    with s.ioctx(pool) as io, s.ioctx(target_pool) as dst_io:
        if exists(dst_io, dst_backend):
            raise AlreadyExists(f"{what} already exists")
        with open_image(io, src_backend, describe(vtype, source, pool), read_only=True) as image:
            size = image.size()
            progress(0, size)
            try:
                with translated(what):
                    image.copy(dst_io, dst_backend)  # full, flattened copy; no snapshots
                with open_image(dst_io, dst_backend, what) as copy, translated(what):
                    for key, _ in list(copy.metadata_list()):
                        if key.startswith(naming.TAG):
                            copy.metadata_remove(key)
                    set_tags(copy, {"owner": s.owner, "kind": vtype.value, "name": target})
            except BaseException:
                remove_quietly(dst_io, dst_backend)
                raise
            progress(size, size)
    return volume_info(s, target_pool, target, vtype)


def set_attached(s: Session, pool: str, name: str, instance: str, attached: bool,
                 vtype: VolumeType) -> VolumeInfo:
    check_name("instance", instance)
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    with s.ioctx(pool) as io, open_image(io, backend, what) as image, translated(what):
        current = [a for a in tags(image).get("attached", "").split(",") if a]
        wanted = sorted(set(current) | {instance}) if attached else [a for a in current if a != instance]
        if wanted != current:
            if wanted:
                image.metadata_set(naming.ATTACHED, ",".join(wanted))
            else:
                image.metadata_remove(naming.ATTACHED)
    return volume_info(s, pool, name, vtype)


def delete_volume(s: Session, pool: str, name: str, vtype: VolumeType, if_exists: bool) -> None:
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    with s.ioctx(pool) as io:
        if not exists(io, backend):
            if if_exists:
                return
            raise NotFound(f"{what} not found")
        with open_image(io, backend, what) as image, translated(what):
            attached = [a for a in tags(image).get("attached", "").split(",") if a]
            if attached:
                raise InUse(f"{what} is attached to instance(s) {', '.join(attached)}; detach it first",
                            instances=attached)
            if open_elsewhere(image):
                raise InUse(f"{what} is open by a running instance; stop it first")
            for snap in image.list_snaps():
                if image.is_protected_snap(snap["name"]):
                    image.unprotect_snap(snap["name"])
                image.remove_snap(snap["name"])
        with translated(what):
            rbd.RBD().remove(io, backend)


# -- snapshots ----------------------------------------------------------------------------

def _snapshot_info(image: rbd.Image, snap: dict[str, object]) -> SnapshotInfo:
    ts = image.get_snap_timestamp(snap["id"])
    return SnapshotInfo(name=str(snap["name"]), size=int(snap["size"]),  # type: ignore[call-overload]
                        created_at=ts.timestamp())


def create_snapshot(s: Session, pool: str, name: str, snapshot: str, vtype: VolumeType,
                    may_exist: bool) -> SnapshotInfo:
    naming.check_snapshot_name(snapshot)
    what = f"Snapshot {snapshot!r} of {describe(vtype, name, pool).lower()}"
    backend = naming.backend_name(vtype, name)
    with s.ioctx(pool) as io, open_image(io, backend, describe(vtype, name, pool)) as image, translated(what):
        if image.snap_exists(snapshot):
            if not may_exist:
                raise AlreadyExists(f"{what} already exists")
        else:
            image.create_snap(snapshot)
        return next(_snapshot_info(image, sn) for sn in image.list_snaps() if sn["name"] == snapshot)


def list_snapshots(s: Session, pool: str, name: str, vtype: VolumeType) -> list[SnapshotInfo]:
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    with s.ioctx(pool) as io, open_image(io, backend, what, read_only=True) as image, translated(what):
        return [_snapshot_info(image, sn) for sn in image.list_snaps() if naming.is_user_snapshot(sn["name"])]


def restore_snapshot(s: Session, pool: str, name: str, snapshot: str, vtype: VolumeType) -> None:
    naming.check_snapshot_name(snapshot)
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    with s.ioctx(pool) as io, open_image(io, backend, what) as image, translated(what):
        if not image.snap_exists(snapshot):
            raise NotFound(f"Snapshot {snapshot!r} of {what.lower()} not found")
        if open_elsewhere(image):
            raise Conflict(f"{what} is open by a running instance; stop it before restoring a snapshot")
        image.rollback_to_snap(snapshot)


def delete_snapshot(s: Session, pool: str, name: str, snapshot: str, vtype: VolumeType,
                    if_exists: bool) -> None:
    naming.check_snapshot_name(snapshot)
    backend = naming.backend_name(vtype, name)
    what = describe(vtype, name, pool)
    with s.ioctx(pool) as io, open_image(io, backend, what) as image, translated(what):
        if not image.snap_exists(snapshot):
            if if_exists:
                return
            raise NotFound(f"Snapshot {snapshot!r} of {what.lower()} not found")
        image.remove_snap(snapshot)


# -- orphans ------------------------------------------------------------------------------

def list_owned(s: Session, pool: str) -> list[OwnedObject]:
    """Images tagged with our owner, plus images with our name prefixes but no tag at all
    (owner "": a create that died before tagging)."""
    out = []
    with s.ioctx(pool) as io:
        with translated(f"Storage pool {pool!r}"):
            names = rbd.RBD().list(io)
        for backend in sorted(names):
            try:
                with rbd.Image(io, backend, read_only=True) as image:
                    meta = tags(image)
                    created = image.create_timestamp().replace(tzinfo=UTC).timestamp()
            except (rbd.ImageNotFound, rados.ObjectNotFound):
                continue
            owner = meta.get("owner", "")
            ours = naming.parse_backend_name(backend) or naming.is_partial(backend)
            if owner == s.owner or (not owner and ours):
                out.append(OwnedObject(pool=pool, backend_name=backend, type=meta.get("kind", ""),
                                       name=meta.get("name", ""), owner=owner, created_at=created))
    return out


def delete_partial(s: Session, pool: str, backend_name: str) -> None:
    if not naming.is_partial(backend_name):
        raise InvalidArgument(f"{backend_name!r} is not an unfinished import")
    with s.ioctx(pool) as io:
        remove_quietly(io, backend_name)


