"""The storage API (LXD 1.0 shape): storage pools and their custom volumes, snapshots and
backups.

Backups: rather than LXD's `/backups` collection (a backup object, then its export), a
volume is exported by `GET .../volumes/custom/{volume}/export`, which streams the backup
file, and imported by `POST .../volumes/custom/{volume}/import` with the file as the body.
One round trip each way, and the file never has to be kept on the server.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from microcloudd.api.declare import Op, Query, Recursion
from microcloudd.api.errors import InvalidArgument

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: str | int, what: str = "size") -> int:
    """Bytes from `10GiB`, `512MB`, `1048576` (LXD's size strings); InvalidArgument otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = _SIZE.match(str(value))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _UNITS:
            raise InvalidArgument(f"Invalid {what} {value!r}: use bytes or a size such as 10GiB or 512MB")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n < 0:
        raise InvalidArgument(f"Invalid {what} {value!r}: must not be negative")
    return n


class StoragePool(msgspec.Struct, kw_only=True):
    name: str
    driver: str = "ceph"
    description: str = ""
    config: dict[str, str] = {}
    status: str = "Created"
    locations: list[str] = []
    used_by: list[str] = []


class StoragePoolsPost(msgspec.Struct, kw_only=True):
    name: str
    driver: str = "ceph"
    description: str = ""
    config: dict[str, str] = {}  # "quota": max bytes (e.g. "10GiB"); "0" or absent: none


class StoragePoolPut(msgspec.Struct, kw_only=True):
    """PUT replaces description and config; PATCH changes only what is given."""

    description: str | None = None
    config: dict[str, str] | None = None


class ResourceSpace(msgspec.Struct, kw_only=True):
    used: int
    total: int


class StoragePoolResources(msgspec.Struct, kw_only=True):
    space: ResourceSpace
    inodes: ResourceSpace | None = None
    replicas: int = 1
    quota: int = 0  # bytes; 0 = none


class VolumeSource(msgspec.Struct, kw_only=True):
    type: str = "copy"  # only "copy": a full, independent copy of another custom volume
    name: str
    pool: str = ""  # default: the target pool


class StorageVolume(msgspec.Struct, kw_only=True):
    name: str
    type: str = "custom"
    description: str = ""
    config: dict[str, str] = {}  # "size": bytes
    content_type: str = "block"
    location: str = ""
    used_by: list[str] = []  # /1.0/instances/<name>
    created_at: str = ""
    pool: str = ""


class StorageVolumesPost(msgspec.Struct, kw_only=True):
    name: str
    type: str = "custom"
    description: str = ""
    config: dict[str, str] = {}  # "size" required unless copying
    content_type: str = "block"
    source: VolumeSource | None = None


class StorageVolumePut(msgspec.Struct, kw_only=True):
    """`config.size` resizes (growing; shrinking needs `?force=1`); `restore` rolls the volume
    back to one of its snapshots (LXD's way)."""

    description: str | None = None
    config: dict[str, str] | None = None
    restore: str = ""


class ForceQuery(Query):
    force: int = 0  # 1: allow what loses data (shrinking a volume, flattening clones)


class StorageVolumeSnapshot(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    config: dict[str, str] = {}
    content_type: str = "block"
    created_at: str = ""


class SnapshotsPost(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""


_P = "/1.0/storage-pools"
_V = _P + "/{pool}/volumes/custom/{volume}"

OPS: tuple[Op, ...] = (
    Op("GET", _P, "storage_pools_list", "List storage pools", result=list[Any], query=Recursion),
    Op("POST", _P, "storage_pool_create", "Create a storage pool (an RBD pool)", body=StoragePoolsPost),
    Op("GET", _P + "/{pool}", "storage_pool_get", "Show a storage pool", result=StoragePool),
    Op("PUT", _P + "/{pool}", "storage_pool_put", "Replace a pool's description and config",
       body=StoragePoolPut, result=StoragePool),
    Op("PATCH", _P + "/{pool}", "storage_pool_patch", "Change a pool's description or config",
       body=StoragePoolPut, result=StoragePool),
    Op("DELETE", _P + "/{pool}", "storage_pool_delete", "Delete an empty storage pool"),
    Op("GET", _P + "/{pool}/resources", "storage_pool_resources", "Usage of a storage pool",
       result=StoragePoolResources),
    Op("GET", _P + "/{pool}/volumes", "storage_volumes_list", "List a pool's volumes", result=list[Any],
       query=Recursion),
    Op("GET", _P + "/{pool}/volumes/custom", "storage_volumes_custom_list", "List a pool's custom volumes",
       result=list[Any], query=Recursion),
    Op("POST", _P + "/{pool}/volumes/custom", "storage_volume_create",
       "Create a custom volume (empty, or a copy of another)", body=StorageVolumesPost, kind="async"),
    Op("GET", _V, "storage_volume_get", "Show a custom volume", result=StorageVolume),
    Op("PUT", _V, "storage_volume_put", "Resize, describe or restore a custom volume",
       body=StorageVolumePut, query=ForceQuery, result=StorageVolume),
    Op("PATCH", _V, "storage_volume_patch", "Resize or describe a custom volume", body=StorageVolumePut,
       query=ForceQuery, result=StorageVolume),
    Op("DELETE", _V, "storage_volume_delete", "Delete a custom volume (not while attached)"),
    Op("GET", _V + "/snapshots", "storage_volume_snapshots_list", "List a volume's snapshots",
       result=list[Any], query=Recursion),
    Op("POST", _V + "/snapshots", "storage_volume_snapshot_create", "Snapshot a custom volume",
       body=SnapshotsPost, kind="async"),
    Op("GET", _V + "/snapshots/{snapshot}", "storage_volume_snapshot_get", "Show a volume snapshot",
       result=StorageVolumeSnapshot),
    Op("DELETE", _V + "/snapshots/{snapshot}", "storage_volume_snapshot_delete",
       "Delete a volume snapshot", kind="async"),
    Op("GET", _V + "/export", "storage_volume_export",
       "Stream a backup file of the volume (application/octet-stream)", kind="raw"),
    Op("POST", _V + "/import", "storage_volume_import",
       "Create the volume from a backup file sent as the body (application/octet-stream)", kind="raw"),
)
