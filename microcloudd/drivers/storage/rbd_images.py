"""Images in RBD: import a disk file under its sha256, keep a protected snapshot, clone
instance root disks from it, delete (refused while cloned, or flattening the clones).
Blocking; run from the driver's thread pool."""

from __future__ import annotations

import uuid
from pathlib import Path

import rbd

from microcloudd.api.errors import AlreadyExists, InUse, InvalidArgument, NotFound
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.base import DiskFormat, ImageInfo, VolumeInfo, VolumeType
from microcloudd.drivers.storage.disk_format import inspect
from microcloudd.drivers.storage.rbd_errors import translated
from microcloudd.drivers.storage.rbd_pools import check_room
from microcloudd.drivers.storage.rbd_session import (
    Session,
    SyncProgress,
    exists,
    open_image,
    remove_quietly,
    set_tags,
    tags,
)
from microcloudd.drivers.storage.rbd_stream import convert_qcow2, stream_raw
from microcloudd.drivers.storage.rbd_volumes import volume_info

# Clones get the same features as `rbd create` defaults (layering for COW, the rest for
# fast diff/flatten and safe single-writer access from QEMU).
CLONE_FEATURES = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
                  | rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_DEEP_FLATTEN)


def _what(pool: str, fingerprint: str) -> str:
    return f"Image {fingerprint[:12]} in storage pool {pool!r}"


def import_image(s: Session, pool: str, source: Path, progress: SyncProgress) -> ImageInfo:
    disk = inspect(source)  # refuses a non-image before anything is created
    with s.ioctx(pool) as io:
        # Allocated blocks (not the apparent size) approximate what the import writes.
        needed = min(disk.virtual_size, Path(source).stat().st_blocks * 512)
        check_room(s, pool, needed, f"Importing {Path(source).name}")
        tmp = naming.partial_name(uuid.uuid4().hex[:16])
        what = f"Import of {Path(source).name} into storage pool {pool!r}"
        with translated(what):
            rbd.RBD().create(io, tmp, disk.virtual_size, old_format=False)
        try:
            with open_image(io, tmp, what) as image:
                set_tags(image, {"owner": s.owner, "kind": naming.PARTIAL})
                if disk.format is DiskFormat.RAW:
                    fingerprint = stream_raw(s, image, disk.path, progress, what)
            if disk.format is DiskFormat.QCOW2:
                fingerprint = convert_qcow2(s, disk.path, pool, tmp, disk.virtual_size, progress, what)
            final = naming.backend_name(VolumeType.IMAGE, fingerprint)
            if exists(io, final):
                raise AlreadyExists(f"{_what(pool, fingerprint)} already exists (same sha256)",
                                    fingerprint=fingerprint)
            with translated(what):
                rbd.RBD().rename(io, tmp, final)
        except BaseException:
            remove_quietly(io, tmp)
            raise
        try:
            with open_image(io, final, what) as image, translated(what):
                set_tags(image, {"kind": VolumeType.IMAGE.value, "name": fingerprint,
                                 "fingerprint": fingerprint, "format": disk.format.value})
                image.create_snap(naming.IMAGE_SNAPSHOT)
                image.protect_snap(naming.IMAGE_SNAPSHOT)
        except BaseException:
            remove_quietly(io, final)
            raise
        progress(disk.virtual_size, disk.virtual_size)
        return _info(io, pool, fingerprint)


def _info(io: object, pool: str, fingerprint: str, *, clones: bool = True) -> ImageInfo:
    """`clones=False` leaves ImageInfo.clones empty: listing them opens every clone, so a
    launch that asked for them cost O(instances of the image)."""
    name = naming.backend_name(VolumeType.IMAGE, fingerprint)
    what = _what(pool, fingerprint)
    with open_image(io, name, what, read_only=True) as image, translated(what):
        meta = tags(image)
        if not image.snap_exists(naming.IMAGE_SNAPSHOT):
            raise NotFound(f"{what} not found (its import never finished)")
        image.set_snap(naming.IMAGE_SNAPSHOT)
        children = image.list_children2() if clones else ()
        return ImageInfo(pool=pool, fingerprint=fingerprint, backend_name=name,
                         format=DiskFormat(meta.get("format", "raw")), size=image.size(),
                         clones=tuple(f"{c['pool']}/{c['image']}" for c in children), metadata=meta)


def image_info(s: Session, pool: str, fingerprint: str) -> ImageInfo:
    naming.check_fingerprint(fingerprint)
    with s.ioctx(pool) as io:
        return _info(io, pool, fingerprint)


def list_images(s: Session, pool: str) -> list[ImageInfo]:
    out = []
    with s.ioctx(pool) as io:
        with translated(f"Storage pool {pool!r}"):
            names = rbd.RBD().list(io)
        for name in names:
            parsed = naming.parse_backend_name(name)
            if parsed and parsed[0] is VolumeType.IMAGE:
                try:
                    out.append(_info(io, pool, parsed[1]))
                except NotFound:
                    continue  # deleted meanwhile, or a broken import the reconciler removes
    return out


def delete_image(s: Session, pool: str, fingerprint: str, force: bool, if_exists: bool) -> None:
    naming.check_fingerprint(fingerprint)
    name = naming.backend_name(VolumeType.IMAGE, fingerprint)
    what = _what(pool, fingerprint)
    with s.ioctx(pool) as io:
        if not exists(io, name):
            if if_exists:
                return
            raise NotFound(f"{what} not found")
        with open_image(io, name, what) as image, translated(what):
            if image.snap_exists(naming.IMAGE_SNAPSHOT):
                image.set_snap(naming.IMAGE_SNAPSHOT)
                clones = list(image.list_children2())
                if clones and not force:
                    names = ", ".join(c["image"] for c in clones[:5])
                    raise InUse(f"{what} is used by {len(clones)} disk(s) cloned from it ({names}); "
                                "delete them first, or force to make them independent copies",
                                clones=[c["image"] for c in clones])
                for c in clones:
                    with s.ioctx(c["pool"]) as child_io, open_image(child_io, c["image"], what) as child:
                        child.flatten()  # the clone gets its own copy of the image's data
                image.set_snap(None)
                if image.is_protected_snap(naming.IMAGE_SNAPSHOT):
                    image.unprotect_snap(naming.IMAGE_SNAPSHOT)
                image.remove_snap(naming.IMAGE_SNAPSHOT)
        with translated(what):
            rbd.RBD().remove(io, name)


def create_root_disk(s: Session, pool: str, instance: str, fingerprint: str, size: int,
                     may_exist: bool) -> VolumeInfo:
    child = naming.backend_name(VolumeType.VM, instance)
    parent = naming.backend_name(VolumeType.IMAGE, naming.check_fingerprint(fingerprint))
    what = f"Root disk of instance {instance!r} in storage pool {pool!r}"
    if size < 0:
        raise InvalidArgument(f"{what}: size must not be negative")
    with s.ioctx(pool) as io:
        if exists(io, child):
            info = volume_info(s, pool, instance, VolumeType.VM)
            if may_exist and info.parent == f"{pool}/{parent}@{naming.IMAGE_SNAPSHOT}":
                return info
            raise AlreadyExists(f"{what} already exists")
        image = _info(io, pool, fingerprint, clones=False)
        if size and size < image.size:
            raise InvalidArgument(f"{what}: size {size} is smaller than the image ({image.size} bytes)")
        with translated(what):
            rbd.RBD().clone(io, parent, naming.IMAGE_SNAPSHOT, io, child, features=CLONE_FEATURES)
        try:
            with open_image(io, child, what) as disk, translated(what):
                set_tags(disk, {"owner": s.owner, "kind": VolumeType.VM.value, "name": instance})
                if size > image.size:
                    disk.resize(size)
        except BaseException:
            remove_quietly(io, child)
            raise
    return volume_info(s, pool, instance, VolumeType.VM)
