"""The storage driver interface: pools, images, instance root disks, custom volumes,
snapshots and backups. The RBD driver (rbd.py) is the real one; services use only this.

Conventions every driver keeps:
- every method is async; nothing blocks the event loop;
- creates take `may_exist`, deletes take `if_exists`, so a retried step is harmless;
- only errors from microcloudd.api.errors escape, worded for a user;
- everything created is tagged with the driver's owner, so `list_owned` finds orphans;
- a failed create leaves nothing behind.

Volumes are addressed by (pool, type, name): `VolumeType.CUSTOM` for user volumes,
`VolumeType.VM` for instance root disks (and other per-instance disks, e.g. a cloud-init
seed), `VolumeType.IMAGE` for images, whose name is their sha256 fingerprint.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Called on the event loop with (bytes done, bytes total) while data streams.
Progress = Callable[[int, int], None]


class VolumeType(enum.StrEnum):
    CUSTOM = "custom"
    VM = "virtual-machine"
    IMAGE = "image"


class DiskFormat(enum.StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


@dataclass(frozen=True)
class PoolInfo:
    name: str
    driver: str  # "ceph"
    replicas: int
    used_bytes: int  # stored by our objects (before replication)
    total_bytes: int  # what the pool can still take plus what it holds
    quota_bytes: int  # 0 = none
    quota_objects: int  # 0 = none
    owner: str  # "" when the pool was not created by us


@dataclass(frozen=True)
class VolumeInfo:
    pool: str
    type: VolumeType
    name: str  # the user's name; for an image its fingerprint
    backend_name: str  # the RBD image name, e.g. for libvirt's <source name="pool/backend_name">
    size: int
    used_bytes: int  # allocated by this volume itself (a clone shares the rest with its parent)
    parent: str  # "pool/backend@snap" for a clone, else ""
    attached_to: tuple[str, ...] = ()  # instances holding it (see set_attached)
    snapshots: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)  # our tags, "microcloud." prefix removed


@dataclass(frozen=True)
class ImageInfo:
    pool: str
    fingerprint: str  # sha256 of the file as imported
    backend_name: str
    format: DiskFormat  # what the imported file was
    size: int  # virtual size of the disk
    clones: tuple[str, ...]  # backend names of the disks cloned from it ("pool/name")
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    size: int
    created_at: float  # unix time


@dataclass(frozen=True)
class OwnedObject:
    """An RBD image carrying our owner tag; the reconciler compares these with the database."""

    pool: str
    backend_name: str
    type: str  # a VolumeType value, or "partial" for an import that never finished
    name: str
    owner: str
    created_at: float = 0.0  # unix time the RBD image was created


class StorageDriver(ABC):
    """One storage backend. `owner` (given at construction) tags everything it creates."""

    owner: str

    @abstractmethod
    async def connect(self, timeout: float = 30.0) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    # -- pools -----------------------------------------------------------------------------

    @abstractmethod
    async def create_pool(self, name: str, *, quota_bytes: int = 0, may_exist: bool = False) -> PoolInfo: ...

    @abstractmethod
    async def delete_pool(self, name: str, *, if_exists: bool = False) -> None: ...

    @abstractmethod
    async def pool_info(self, name: str) -> PoolInfo: ...

    @abstractmethod
    async def list_pools(self) -> list[str]: ...

    @abstractmethod
    async def set_pool_quota(self, name: str, *, max_bytes: int = 0, max_objects: int = 0) -> None: ...

    # -- images ----------------------------------------------------------------------------

    @abstractmethod
    async def import_image(self, pool: str, source: Path, *, progress: Progress | None = None) -> ImageInfo:
        """Stream a qcow2 or raw disk file into the pool as an image named by its sha256,
        with a protected snapshot to clone from. AlreadyExists if that fingerprint is there."""

    @abstractmethod
    async def image_info(self, pool: str, fingerprint: str) -> ImageInfo: ...

    @abstractmethod
    async def list_images(self, pool: str) -> list[ImageInfo]: ...

    @abstractmethod
    async def delete_image(self, pool: str, fingerprint: str, *, force: bool = False,
                           if_exists: bool = False) -> None:
        """InUse while disks are cloned from it, unless `force` (they are flattened first)."""

    # -- volumes (custom volumes and instance disks) ---------------------------------------

    @abstractmethod
    async def create_root_disk(self, pool: str, instance: str, fingerprint: str, *, size: int = 0,
                               may_exist: bool = False) -> VolumeInfo:
        """A copy-on-write clone of the image's snapshot as the `VM` volume `instance`,
        grown to `size` if larger than the image."""

    @abstractmethod
    async def create_volume(self, pool: str, name: str, size: int, *, type: VolumeType = VolumeType.CUSTOM,
                            may_exist: bool = False) -> VolumeInfo: ...

    @abstractmethod
    async def volume_info(self, pool: str, name: str, *,
                          type: VolumeType = VolumeType.CUSTOM) -> VolumeInfo: ...

    @abstractmethod
    async def list_volumes(self, pool: str, *, type: VolumeType | None = None) -> list[VolumeInfo]: ...

    @abstractmethod
    async def volume_names(self, pool: str, *, type: VolumeType | None = None) -> list[str]:
        """The volumes' names only: nothing is opened (list_volumes opens each to read its size)."""

    @abstractmethod
    async def resize_volume(self, pool: str, name: str, size: int, *, type: VolumeType = VolumeType.CUSTOM,
                            force: bool = False) -> VolumeInfo:
        """Grow; shrinking (which loses data) only with `force`."""

    @abstractmethod
    async def copy_volume(self, pool: str, source: str, target: str, *,
                          type: VolumeType = VolumeType.CUSTOM, target_pool: str | None = None,
                          progress: Progress | None = None) -> VolumeInfo:
        """A full, independent copy (no parent link)."""

    @abstractmethod
    async def delete_volume(self, pool: str, name: str, *, type: VolumeType = VolumeType.CUSTOM,
                            if_exists: bool = False) -> None:
        """InUse while attached (see set_attached) or open by a running instance."""

    @abstractmethod
    async def set_attached(self, pool: str, name: str, instance: str, attached: bool, *,
                           type: VolumeType = VolumeType.CUSTOM) -> VolumeInfo:
        """Record (or forget) that `instance` uses the volume; idempotent."""

    # -- snapshots -------------------------------------------------------------------------

    @abstractmethod
    async def create_snapshot(self, pool: str, name: str, snapshot: str, *,
                              type: VolumeType = VolumeType.CUSTOM,
                              may_exist: bool = False) -> SnapshotInfo: ...

    @abstractmethod
    async def list_snapshots(self, pool: str, name: str, *,
                             type: VolumeType = VolumeType.CUSTOM) -> list[SnapshotInfo]: ...

    @abstractmethod
    async def restore_snapshot(self, pool: str, name: str, snapshot: str, *,
                               type: VolumeType = VolumeType.CUSTOM) -> None: ...

    @abstractmethod
    async def delete_snapshot(self, pool: str, name: str, snapshot: str, *,
                              type: VolumeType = VolumeType.CUSTOM, if_exists: bool = False) -> None: ...

    # -- backups ---------------------------------------------------------------------------

    @abstractmethod
    async def export_volume(self, pool: str, name: str, target: Path, *,
                            type: VolumeType = VolumeType.CUSTOM, progress: Progress | None = None) -> int:
        """Write the volume to a backup file (sparse records + checksum); returns its size."""

    @abstractmethod
    async def import_volume(self, pool: str, name: str, source: Path, *, type: VolumeType = VolumeType.CUSTOM,
                            progress: Progress | None = None) -> VolumeInfo:
        """Create a volume from a backup file written by export_volume."""

    # -- orphans ---------------------------------------------------------------------------

    @abstractmethod
    async def delete_partial(self, pool: str, backend_name: str) -> None:
        """Remove what an import that never finished left (`partial_*` names only)."""

    @abstractmethod
    async def list_owned(self, pool: str) -> list[OwnedObject]:
        """Every RBD image in `pool` tagged with our owner."""
