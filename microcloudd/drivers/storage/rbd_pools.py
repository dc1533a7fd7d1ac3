"""RBD pools: create (application rbd, replicas following the OSD host count), quota,
usage, delete. Blocking; run from the driver's thread pool."""

from __future__ import annotations

import contextlib

import rbd

from microcloudd.api.errors import AlreadyExists, Conflict, InUse, NotFound
from microcloudd.api.names import check_name
from microcloudd.drivers.storage import naming
from microcloudd.drivers.storage.base import PoolInfo
from microcloudd.drivers.storage.rbd_errors import translated
from microcloudd.drivers.storage.rbd_session import Session


def _what(name: str) -> str:
    return f"Storage pool {name!r}"


def osd_hosts(s: Session) -> int:
    """Hosts holding at least one OSD: the failure domains replicas can spread over."""
    tree = s.mon({"prefix": "osd tree"}, "Ceph OSD tree")
    return sum(1 for n in tree["nodes"] if n["type"] == "host" and n.get("children"))


def replicas_for(hosts: int) -> tuple[int, int]:
    """(size, min_size): one copy per host up to three; writes continue with one host down."""
    size = max(1, min(3, hosts))
    return size, max(1, size - size // 2)


def create_pool(s: Session, name: str, quota_bytes: int, may_exist: bool) -> PoolInfo:
    check_name("storage pool", name)
    if s.cluster.pool_exists(name):
        if not may_exist:
            raise AlreadyExists(f"{_what(name)} already exists")
        return pool_info(s, name)
    size, min_size = replicas_for(osd_hosts(s))
    with translated(_what(name)):
        s.cluster.create_pool(name)
    try:
        current = s.mon({"prefix": "osd pool get", "pool": name, "var": "size"}, _what(name))["size"]
        if current != size:
            s.mon({"prefix": "osd pool set", "pool": name, "var": "size", "val": str(size),
                   "yes_i_really_mean_it": True}, _what(name))
        s.mon({"prefix": "osd pool set", "pool": name, "var": "min_size", "val": str(min_size)}, _what(name))
        with s.ioctx(name) as io, translated(_what(name)):
            io.application_enable("rbd")
            io.application_metadata_set("rbd", naming.OWNER, s.owner)
            rbd.RBD().pool_init(io, False)
        if quota_bytes:
            set_quota(s, name, quota_bytes, 0)
    except BaseException:
        with contextlib.suppress(Exception):
            s.cluster.delete_pool(name)
        raise
    return pool_info(s, name)


def pool_owner(s: Session, name: str) -> str:
    with s.ioctx(name) as io:
        try:
            return str(io.application_metadata_get("rbd", naming.OWNER))
        except Exception:  # no such key / application: not ours
            return ""


def set_quota(s: Session, name: str, max_bytes: int, max_objects: int) -> None:
    if not s.cluster.pool_exists(name):
        raise NotFound(f"{_what(name)} not found")
    for field, value in (("max_bytes", max_bytes), ("max_objects", max_objects)):
        s.mon({"prefix": "osd pool set-quota", "pool": name, "field": field, "val": str(max(0, value))},
              _what(name))


def pool_info(s: Session, name: str) -> PoolInfo:
    if not s.cluster.pool_exists(name):
        raise NotFound(f"{_what(name)} not found")
    # The osdmap (not `get-quota`, which waits for the mgr's stats) has size and quotas.
    osdmap = s.mon({"prefix": "osd dump"}, _what(name))
    pool = next((p for p in osdmap["pools"] if p["pool_name"] == name), None)
    if pool is None:
        raise NotFound(f"{_what(name)} not found")
    size = pool["size"]
    # Usage comes from the mgr's digest, which learns about a new pool a second or so late.
    df = s.mon({"prefix": "df", "detail": "detail"}, _what(name))
    stats = next((p["stats"] for p in df["pools"] if p["name"] == name), None)
    if stats is not None:
        used, avail = int(stats.get("stored", 0)), int(stats.get("max_avail", 0))
    else:
        used, avail = 0, int(df["stats"]["total_avail_bytes"]) // max(1, int(size))
    return PoolInfo(
        name=name, driver="ceph", replicas=int(size), used_bytes=used, total_bytes=used + avail,
        quota_bytes=int(pool.get("quota_max_bytes", 0)), quota_objects=int(pool.get("quota_max_objects", 0)),
        owner=pool_owner(s, name),
    )


def list_pools(s: Session) -> list[str]:
    """Pools with the rbd application (ours or not)."""
    out = []
    with translated("Storage pools"):
        names = s.cluster.list_pools()
    for name in names:
        with contextlib.suppress(Exception), s.ioctx(name) as io:
            if "rbd" in io.application_list():
                out.append(name)
    return sorted(out)


def delete_pool(s: Session, name: str, if_exists: bool) -> None:
    if not s.cluster.pool_exists(name):
        if if_exists:
            return
        raise NotFound(f"{_what(name)} not found")
    if pool_owner(s, name) != s.owner:
        raise Conflict(f"{_what(name)} was not created by this microcloud; refusing to delete it")
    with s.ioctx(name) as io, translated(_what(name)):
        images = rbd.RBD().list(io)
    if images:
        raise InUse(f"{_what(name)} still holds {len(images)} volume(s) or image(s); delete them first")
    with translated(_what(name)):
        s.cluster.delete_pool(name)


def check_room(s: Session, pool: str, needed: int, what: str) -> None:
    """QuotaExceeded before writing if `needed` more bytes would not fit under the pool's quota."""
    from microcloudd.api.errors import QuotaExceeded

    info = pool_info(s, pool)
    if info.quota_bytes and info.used_bytes + needed > info.quota_bytes:
        mib = 1 << 20
        raise QuotaExceeded(
            f"{what} needs about {needed / mib:.0f} MiB but storage pool {pool!r} has only "
            f"{max(0, info.quota_bytes - info.used_bytes) / mib:.0f} MiB left of its "
            f"{info.quota_bytes / mib:.0f} MiB quota")
