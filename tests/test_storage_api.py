"""Storage pools and custom volumes over the REST API and the real CLI, against real Ceph
and a real database: pool CRUD and quota, volume create/resize/copy/delete, snapshots
(restore brings the bytes back), export/import byte-identical, attach marks, and bad input
each with a clear error and nothing half-created."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import rbd

from microcloudd.db.records import StoragePool, Volume, VolumeSnapshot
from microcloudd.services import storage_pools, volumes
from tests.fixtures.storage_services import StorageDaemon

MiB = 1 << 20


def rbd_names(sd: StorageDaemon, pool: str) -> list[str]:
    with sd.ceph.rados() as cluster, cluster.open_ioctx(pool) as io:
        return sorted(rbd.RBD().list(io))


def write(sd: StorageDaemon, pool: str, image: str, data: bytes, offset: int) -> None:
    with sd.ceph.rados() as cluster, cluster.open_ioctx(pool) as io, rbd.Image(io, image) as im:
        im.write(data, offset)


def read(sd: StorageDaemon, pool: str, image: str, offset: int, length: int) -> bytes:
    with sd.ceph.rados() as cluster, cluster.open_ioctx(pool) as io, \
            rbd.Image(io, image, read_only=True) as im:
        return bytes(im.read(offset, length))


def ceph_pools(sd: StorageDaemon) -> list[str]:
    with sd.ceph.rados() as cluster:
        return list(cluster.list_pools())


async def test_pool_crud(storage_daemon: StorageDaemon) -> None:
    sd = storage_daemon
    name = "p-" + uuid.uuid4().hex[:8]
    rc, out, err = await sd.cli("storage", "create", name, "quota=64MiB", "--description", "fast")
    assert rc == 0, err
    assert name in ceph_pools(sd) and sd.db.get(StoragePool, name).status == "Created"
    pool = (await (await sd.http.get(f"/1.0/storage-pools/{name}")).json())["metadata"]
    assert pool == {"name": name, "driver": "ceph", "description": "fast", "config": {"quota": "64MiB"},
                    "status": "Created", "locations": ["storagetest"], "used_by": []}
    urls = (await (await sd.http.get("/1.0/storage-pools")).json())["metadata"]
    assert f"/1.0/storage-pools/{name}" in urls and f"/1.0/storage-pools/{sd.pool}" in urls
    rc, out, _ = await sd.cli("storage", "list", "--format", "json")
    assert {p["name"] for p in json.loads(out)} >= {name, sd.pool}
    rc, out, _ = await sd.cli("storage", "list")
    assert name in out and "fast" in out

    res = (await (await sd.http.get(f"/1.0/storage-pools/{name}/resources")).json())["metadata"]
    assert res["quota"] == 64 * MiB and res["replicas"] == 1 and res["space"]["total"] <= 64 * MiB
    rc, _, err = await sd.cli("storage", "set", name, "quota=32MiB", "--description", "slower")
    assert rc == 0, err
    assert (await storage_pools.resources(sd.cloud, name)).quota == 32 * MiB
    assert sd.db.get(StoragePool, name).description == "slower"
    r = await sd.http.put(f"/1.0/storage-pools/{name}", json={"config": {}})
    assert r.status == 200 and (await storage_pools.resources(sd.cloud, name)).quota == 0

    # a pool with a volume is in use; empty, it goes from the database and from Ceph
    rc, _, err = await sd.cli("storage", "volume", "create", "v1", "8MiB", "--pool", name)
    assert rc == 0, err
    rc, _, err = await sd.cli("storage", "delete", name)
    assert rc == 1 and f"/1.0/storage-pools/{name}/volumes/custom/v1" in err and "in use" in err.lower(), err
    rc, _, err = await sd.cli("storage", "volume", "delete", "v1", "--pool", name)
    assert rc == 0, err
    rc, _, err = await sd.cli("storage", "delete", name)
    assert rc == 0, err
    assert name not in ceph_pools(sd) and sd.db.get_or_none(StoragePool, name) is None

    # ensure_default_pool is idempotent
    default = "d-" + uuid.uuid4().hex[:8]
    first = await storage_pools.ensure_default_pool(sd.cloud, default)
    second = await storage_pools.ensure_default_pool(sd.cloud, default)
    assert first.status == second.status == "Created" and default in ceph_pools(sd)
    summary = await storage_pools.summary(sd.cloud)
    assert summary["available"] and default in {p["name"] for p in summary["pools"]}


async def test_pool_bad_input(storage_daemon: StorageDaemon) -> None:
    sd = storage_daemon
    before_ceph, before_db = sorted(ceph_pools(sd)), sorted(p.name for p in sd.db.all(StoragePool))
    for args, message in [
        (("create", "bad_name"), "Invalid storage pool name 'bad_name'"),
        (("create", "okname", "quota=lots"), "Invalid quota 'lots'"),
        (("create", "okname", "colour=blue"), "Unknown storage pool config key(s) ['colour']"),
        (("create", sd.pool), f"Storage pool '{sd.pool}' already exists"),
        (("show", "nope"), "Storage pool 'nope' not found"),
        (("delete", "nope"), "Storage pool 'nope' not found"),
        (("set", "nope", "quota=1GiB"), "Storage pool 'nope' not found"),
    ]:
        rc, _, err = await sd.cli("storage", *args)
        assert rc == 1 and err.startswith("Error: ") and message in err, (args, err)
    r = await sd.http.post("/1.0/storage-pools", json={"name": "okname", "driver": "lvm"})
    assert r.status == 400 and "only \"ceph\"" in (await r.json())["error"]
    assert sorted(ceph_pools(sd)) == before_ceph
    assert sorted(p.name for p in sd.db.all(StoragePool)) == before_db


async def test_volume_lifecycle(storage_daemon: StorageDaemon, tmp_path: Path) -> None:
    sd = storage_daemon
    p = sd.pool
    rc, _, err = await sd.cli("storage", "volume", "create", "data", "16MiB", "--pool", p)
    assert rc == 0, err
    rec = sd.db.get(Volume, (p, "custom", "data"))
    assert rec.size == 16 * MiB and rbd_names(sd, p) == ["custom_data"]
    vol = (await (await sd.http.get(f"/1.0/storage-pools/{p}/volumes/custom/data")).json())["metadata"]
    assert (vol["type"], vol["content_type"], vol["config"]["size"]) == ("custom", "block", str(16 * MiB))
    assert (await (await sd.http.get(f"/1.0/storage-pools/{p}/volumes")).json())["metadata"] == [
        f"/1.0/storage-pools/{p}/volumes/custom/data"]
    rc, out, _ = await sd.cli("storage", "volume", "list", "--pool", p, "--format", "json")
    assert [v["name"] for v in json.loads(out)] == ["data"]

    write(sd, p, "custom_data", b"A" * 4096, 0)
    # resize: grow; shrink only with force
    rc, _, err = await sd.cli("storage", "volume", "resize", "data", "32MiB", "--pool", p)
    assert rc == 0 and sd.db.get(Volume, (p, "custom", "data")).size == 32 * MiB, err
    rc, _, err = await sd.cli("storage", "volume", "resize", "data", "8MiB", "--pool", p)
    assert rc == 1 and "use force" in err and sd.db.get(Volume, (p, "custom", "data")).size == 32 * MiB
    rc, _, err = await sd.cli("storage", "volume", "resize", "data", "8MiB", "--pool", p, "--force")
    assert rc == 0 and sd.db.get(Volume, (p, "custom", "data")).size == 8 * MiB, err

    # snapshot, overwrite, restore: the bytes come back
    rc, _, err = await sd.cli("storage", "volume", "snapshot", "create", "data", "s1", "--pool", p)
    assert rc == 0, err
    assert sd.db.get(VolumeSnapshot, ((p, "custom", "data"), "s1")).name == "s1"
    write(sd, p, "custom_data", b"B" * 4096, 0)
    rc, _, err = await sd.cli("storage", "volume", "snapshot", "restore", "data", "s1", "--pool", p)
    assert rc == 0, err
    assert read(sd, p, "custom_data", 0, 4096) == b"A" * 4096
    rc, out, _ = await sd.cli("storage", "volume", "snapshot", "list", "data", "--pool", p,
                              "--format", "json")
    assert [s["name"] for s in json.loads(out)] == ["s1"]

    # copy: independent of its source
    rc, _, err = await sd.cli("storage", "volume", "copy", "data", "data2", "--pool", p)
    assert rc == 0, err
    assert read(sd, p, "custom_data2", 0, 4096) == b"A" * 4096
    write(sd, p, "custom_data2", b"C" * 4096, 0)
    assert read(sd, p, "custom_data", 0, 4096) == b"A" * 4096

    # export / import: byte-identical
    write(sd, p, "custom_data", b"D" * 8192, 5 * MiB)
    backup = tmp_path / "data.backup"
    rc, _, err = await sd.cli("storage", "volume", "export", "data", str(backup), "--pool", p)
    assert rc == 0 and backup.stat().st_size > 0, err
    rc, _, err = await sd.cli("storage", "volume", "import", str(backup), "restored", "--pool", p)
    assert rc == 0, err
    assert sd.db.get(Volume, (p, "custom", "restored")).size == 8 * MiB
    assert read(sd, p, "custom_restored", 0, 8 * MiB) == read(sd, p, "custom_data", 0, 8 * MiB)

    # attached: delete refused naming the instance; detached: deleted with its snapshots
    await volumes.attach(sd.cloud, p, "data", "web1")
    vol = (await (await sd.http.get(f"/1.0/storage-pools/{p}/volumes/custom/data")).json())["metadata"]
    assert vol["used_by"] == ["/1.0/instances/web1"]
    rc, _, err = await sd.cli("storage", "volume", "delete", "data", "--pool", p)
    assert rc == 1 and "attached to instance(s) web1" in err, err
    assert "custom_data" in rbd_names(sd, p)
    await volumes.detach(sd.cloud, p, "data", "web1")
    rc, _, err = await sd.cli("storage", "volume", "snapshot", "delete", "data", "s1", "--pool", p)
    assert rc == 0 and sd.db.all(VolumeSnapshot) == [], err
    await sd.cli("storage", "volume", "snapshot", "create", "data", "s2", "--pool", p)
    for name in ("data", "data2", "restored"):
        rc, _, err = await sd.cli("storage", "volume", "delete", name, "--pool", p)
        assert rc == 0, err
    assert rbd_names(sd, p) == [] and sd.db.all(Volume) == [] and sd.db.all(VolumeSnapshot) == []


async def test_volume_commands_find_the_default_pool(storage_daemon: StorageDaemon) -> None:
    """Without --pool, a volume command uses the default profile's root disk pool (built in: the
    pool init made), else the only pool; with several pools and no such profile device it asks
    for --pool and changes nothing."""
    sd = storage_daemon
    sd.cloud.settings["storage.pool"] = sd.pool  # what init records
    rc, _, err = await sd.cli("storage", "volume", "create", "v1", "8MiB")
    assert rc == 0, err
    assert sd.db.get_or_none(Volume, (sd.pool, "custom", "v1")) is not None

    other = "p-" + uuid.uuid4().hex[:8]
    assert (await sd.cli("storage", "create", other))[0] == 0
    r = await sd.http.put("/1.0/profiles/default", json={"devices": {
        "root": {"type": "disk", "path": "/", "pool": other}}})
    assert r.status == 200, await r.text()
    rc, _, err = await sd.cli("storage", "volume", "create", "v2", "8MiB")
    assert rc == 0, err
    assert sd.db.get_or_none(Volume, (other, "custom", "v2")) is not None
    rc, out, _ = await sd.cli("storage", "volume", "list", "--format", "json")
    assert [v["name"] for v in json.loads(out)] == ["v2"]

    r = await sd.http.put("/1.0/profiles/default", json={"devices": {}})
    assert r.status == 200, await r.text()
    rc, _, err = await sd.cli("storage", "volume", "create", "v3", "8MiB")
    assert rc == 2 and "name the storage pool with --pool: there are 2 pools" in err, err
    assert sorted(v.name for v in sd.db.all(Volume)) == ["v1", "v2"]
    for pool, name in ((sd.pool, "v1"), (other, "v2")):
        assert (await sd.cli("storage", "volume", "delete", name, "--pool", pool))[0] == 0
    assert (await sd.cli("storage", "delete", other))[0] == 0
    rc, _, err = await sd.cli("storage", "volume", "create", "v3", "8MiB")  # the only pool left
    assert rc == 0 and sd.db.get_or_none(Volume, (sd.pool, "custom", "v3")) is not None, err
    assert (await sd.cli("storage", "volume", "delete", "v3"))[0] == 0


async def test_volume_bad_input(storage_daemon: StorageDaemon, tmp_path: Path) -> None:
    sd = storage_daemon
    p = sd.pool
    rc, _, err = await sd.cli("storage", "volume", "create", "data", "8MiB", "--pool", p)
    assert rc == 0, err
    vol = ("storage", "volume")
    for args, message in [
        (("create", "bad_name", "8MiB", "--pool", p), "Invalid volume name 'bad_name'"),
        (("create", "x", "tiny", "--pool", p), "Invalid volume size 'tiny'"),
        (("create", "x", "1000", "--pool", p), "must be a positive multiple of 512 bytes"),
        (("create", "x", "8MiB", "--pool", "nope"), "Storage pool 'nope' not found"),
        (("create", "data", "8MiB", "--pool", p), "Volume 'data' already exists in storage pool"),
        (("show", "nope", "--pool", p), "Volume 'nope' not found in storage pool"),
        (("delete", "nope", "--pool", p), "Volume 'nope' not found"),
        (("resize", "nope", "16MiB", "--pool", p), "Volume 'nope' not found"),
        (("copy", "nope", "y", "--pool", p), "Volume 'nope' not found"),
        (("copy", "data", "data", "--pool", p), "Volume 'data' already exists"),
        (("snapshot", "create", "data", "bad_snap", "--pool", p), "Invalid snapshot name 'bad_snap'"),
        (("snapshot", "restore", "data", "nope", "--pool", p), "Snapshot 'nope' of volume 'data' not found"),
        (("snapshot", "delete", "data", "nope", "--pool", p), "Snapshot 'nope' of volume 'data' not found"),
        (("export", "nope", str(tmp_path / "x"), "--pool", p), "Volume 'nope' not found"),
    ]:
        rc, _, err = await sd.cli(*vol, *args)
        assert rc == 1 and err.startswith("Error: ") and message in err, (args, err)
    assert not (tmp_path / "x").exists()

    # a file that is not a backup; a backup under a taken name
    junk = tmp_path / "junk.backup"
    junk.write_bytes(b"not a backup" * 1000)
    rc, _, err = await sd.cli(*vol, "import", str(junk), "other", "--pool", p)
    assert rc == 1 and err.startswith("Error: "), err
    rc, _, err = await sd.cli(*vol, "import", str(junk), "data", "--pool", p)
    assert rc == 1 and "Volume 'data' already exists" in err, err

    # over the pool's quota
    rc, _, err = await sd.cli("storage", "set", p, "quota=4MiB")
    assert rc == 0, err
    rc, _, err = await sd.cli(*vol, "create", "big", "64MiB", "--pool", p)
    assert rc == 1 and "does not fit in storage pool" in err and "quota" in err, err

    # nothing half-created by any of the above
    assert rbd_names(sd, p) == ["custom_data"]
    assert [v.name for v in sd.db.all(Volume)] == ["data"] and sd.db.all(VolumeSnapshot) == []
    staging = sd.state_dir / "staging"
    assert not staging.exists() or not any(staging.iterdir())


async def test_pylxd_reads_pools_volumes_and_images(storage_daemon: StorageDaemon, tmp_path: Path) -> None:
    """An existing LXD client understands our shapes."""
    import asyncio

    import pylxd

    from tests.fixtures.ceph import make_raw_disk

    sd = storage_daemon
    rc, _, err = await sd.cli("storage", "volume", "create", "data", "8MiB", "--pool", sd.pool)
    assert rc == 0, err
    disk = make_raw_disk(tmp_path / "d.img", 4 * MiB, seed=51)
    rc, _, err = await sd.cli("image", "import", str(disk), "--pool", sd.pool, "--alias", "tiny")
    assert rc == 0, err

    def view() -> tuple[set[str], list[tuple[str, str]], list[list[str]]]:
        client = pylxd.Client(endpoint=str(sd.state_dir / "unix.socket"))
        pools = {p.name for p in client.storage_pools.all()}
        pool = client.storage_pools.get(sd.pool)
        vols = [(v.type, v.name) for v in pool.volumes.all()]
        imgs = [[a["name"] for a in i.aliases] for i in client.images.all()]
        return pools, vols, imgs

    pools, vols, imgs = await asyncio.to_thread(view)
    assert sd.pool in pools and vols == [("custom", "data")] and imgs == [["tiny"]]
