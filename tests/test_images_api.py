"""Images over the REST API and the real CLI, against real Ceph and a real database:
import (raw and qcow2), list/show/aliases, delete (refused with clones, flattening with
force), and every bad input with a clear error and nothing half-created."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import rbd

from microcloudd.api import images as api
from microcloudd.db.records import Image, ImageAlias
from microcloudd.services import images
from tests.fixtures.ceph import make_qcow2_disk, make_raw_disk
from tests.fixtures.storage_services import StorageDaemon

MiB = 1 << 20


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rbd_names(sd: StorageDaemon, pool: str) -> list[str]:
    with sd.ceph.rados() as cluster, cluster.open_ioctx(pool) as io:
        return sorted(rbd.RBD().list(io))


def staging_empty(sd: StorageDaemon) -> bool:
    d = sd.state_dir / "staging"
    return not d.exists() or not any(d.iterdir())


def nothing_created(sd: StorageDaemon) -> None:
    assert sd.db.all(Image) == [] and sd.db.all(ImageAlias) == []
    assert rbd_names(sd, sd.pool) == []
    assert staging_empty(sd)


async def upload(sd: StorageDaemon, path: Path, **headers: str) -> tuple[int, dict[str, object]]:
    data = await asyncio.to_thread(path.read_bytes)
    r = await sd.http.post("/1.0/images", data=data,
                           headers={"Content-Type": "application/octet-stream", api.H_POOL: sd.pool,
                                    api.H_FILENAME: path.name, **headers})
    return r.status, await r.json()


async def test_import_raw_and_qcow2_list_show_alias(storage_daemon: StorageDaemon, tmp_path: Path) -> None:
    sd = storage_daemon
    raw = make_raw_disk(tmp_path / "disk.img", 8 * MiB, seed=11)
    rc, out, err = await sd.cli("image", "import", str(raw), "--alias", "deb", "--pool", sd.pool,
                                "--property", "os=debian")
    assert rc == 0, err
    fp_raw = sha256(raw)
    assert f"fingerprint: {fp_raw}" in out
    rec = sd.db.get(Image, fp_raw)
    assert (rec.format, rec.pool, rec.size, rec.filename) == ("raw", sd.pool, 8 * MiB, "disk.img")
    assert sd.db.get(ImageAlias, "deb").image == fp_raw
    assert f"image_{fp_raw}" in rbd_names(sd, sd.pool)
    assert staging_empty(sd)

    # qcow2 over HTTP, detected from its content although named .raw
    qcow = make_qcow2_disk(tmp_path / "other.raw", make_raw_disk(tmp_path / "src2.img", 6 * MiB, seed=12))
    status, body = await upload(sd, qcow, **{api.H_PUBLIC: "1", api.H_PROPERTIES: "os=alpine&release=3"})
    assert status == 202, body
    op = await sd.wait_response(body)
    assert op["status"] == "Success", op
    fp_q = sha256(qcow)
    assert op["metadata"]["fingerprint"] == fp_q
    assert op["metadata"]["download_progress"] == "import: 100%"  # progress reached the operation
    meta = (await (await sd.http.get(f"/1.0/images/{fp_q[:10]}")).json())["metadata"]
    assert meta["format"] == "qcow2" and meta["public"] is True and meta["virtual_size"] == 6 * MiB
    assert meta["properties"]["os"] == "alpine" and meta["type"] == "virtual-machine"

    listing = (await (await sd.http.get("/1.0/images")).json())["metadata"]
    assert sorted(listing) == sorted([f"/1.0/images/{fp_raw}", f"/1.0/images/{fp_q}"])
    rc, out, err = await sd.cli("image", "list", "--format", "json")
    assert rc == 0, err
    by_fp = {i["fingerprint"]: i for i in json.loads(out)}
    assert [a["name"] for a in by_fp[fp_raw]["aliases"]] == ["deb"]
    rc, out, _ = await sd.cli("image", "list")
    assert "deb" in out and fp_q[:12] in out

    # show by alias, by prefix; aliases via CLI
    rc, out, err = await sd.cli("image", "show", "deb", "--format", "json")
    assert rc == 0 and json.loads(out)["fingerprint"] == fp_raw, err
    rc, _, err = await sd.cli("image", "alias", "create", "alp", fp_q[:8], "--description", "small")
    assert rc == 0, err
    assert (await images.resolve(sd.cloud, "alp")).fingerprint == fp_q
    rc, out, _ = await sd.cli("image", "alias", "list", "--format", "json")
    assert {a["name"]: a["target"] for a in json.loads(out)} == {"deb": fp_raw, "alp": fp_q}
    r = await sd.http.patch("/1.0/images/aliases/alp", json={"target": "deb"})
    assert (await r.json())["metadata"]["target"] == fp_raw
    rc, _, err = await sd.cli("image", "alias", "delete", "alp")
    assert rc == 0 and sd.db.get_or_none(ImageAlias, "alp") is None, err

    # root disk source for the instances service
    src = images.root_disk_source(await images.resolve(sd.cloud, "deb"))
    assert (src.pool, src.backend_name, src.snapshot) == (sd.pool, f"image_{fp_raw}", "mc_base")

    # delete by alias through the CLI: records and RBD image gone
    rc, _, err = await sd.cli("image", "delete", "deb")
    assert rc == 0, err
    assert sd.db.get_or_none(Image, fp_raw) is None and sd.db.get_or_none(ImageAlias, "deb") is None
    assert f"image_{fp_raw}" not in rbd_names(sd, sd.pool)


async def test_image_bad_input(storage_daemon: StorageDaemon, tmp_path: Path) -> None:
    sd = storage_daemon
    text = tmp_path / "notes.qcow2"
    text.write_text("these are not the bytes you are looking for\n" * 100)
    rc, _, err = await sd.cli("image", "import", str(text), "--pool", sd.pool)
    assert rc == 1 and err.startswith("Error: ") and "neither a qcow2 image nor a raw disk image" in err, err
    nothing_created(sd)

    gz = tmp_path / "disk.img.gz"
    gz.write_bytes(b"\x1f\x8b" + bytes(1022))
    status, body = await upload(sd, gz)
    assert status == 400 and "gzip-compressed" in body["error"]  # type: ignore[operator]
    nothing_created(sd)

    raw = make_raw_disk(tmp_path / "d.img", 4 * MiB, seed=21)
    rc, _, err = await sd.cli("image", "import", str(raw), "--pool", "no-such-pool")
    assert rc == 1 and "Storage pool 'no-such-pool' not found" in err, err
    rc, _, err = await sd.cli("image", "import", str(raw), "--pool", sd.pool, "--alias", "bad alias!")
    assert rc == 1 and "Invalid image alias 'bad alias!'" in err, err
    rc, _, err = await sd.cli("image", "import", str(tmp_path / "missing.img"), "--pool", sd.pool)
    assert rc == 1 and "not found" in err
    nothing_created(sd)

    for ref in ("nope", "abc123", "0" * 64):
        rc, _, err = await sd.cli("image", "show", ref)
        assert rc == 1 and f"Image {ref!r} not found" in err, err
    rc, _, err = await sd.cli("image", "alias", "create", "x", "nope")
    assert rc == 1 and "Image 'nope' not found" in err
    rc, _, err = await sd.cli("image", "delete", "nope")
    assert rc == 1 and "not found" in err

    # duplicates: fingerprint and alias, refused up front (409), nothing new created
    rc, _, err = await sd.cli("image", "import", str(raw), "--pool", sd.pool, "--alias", "one")
    assert rc == 0, err
    before = rbd_names(sd, sd.pool)
    status, body = await upload(sd, raw)
    assert status == 409 and "already exists (same sha256)" in body["error"], body  # type: ignore[operator]
    other = make_raw_disk(tmp_path / "e.img", 4 * MiB, seed=22)
    rc, _, err = await sd.cli("image", "import", str(other), "--pool", sd.pool, "--alias", "one")
    assert rc == 1 and "Image alias 'one' already exists" in err
    rc, _, err = await sd.cli("image", "alias", "create", "one", sha256(raw))
    assert rc == 1 and "already exists" in err
    assert rbd_names(sd, sd.pool) == before and len(sd.db.all(Image)) == 1 and staging_empty(sd)


async def test_import_over_pool_quota(storage_daemon: StorageDaemon, tmp_path: Path) -> None:
    sd = storage_daemon
    rc, _, err = await sd.cli("storage", "set", sd.pool, "quota=2MiB")
    assert rc == 0, err
    big = make_raw_disk(tmp_path / "big.img", 16 * MiB, seed=31, holes=False)
    rc, _, err = await sd.cli("image", "import", str(big), "--pool", sd.pool)
    assert rc == 1 and "quota" in err and "2 MiB" in err, err
    nothing_created(sd)


async def test_delete_image_with_clones(storage_daemon: StorageDaemon, tmp_path: Path) -> None:
    sd = storage_daemon
    raw = make_raw_disk(tmp_path / "base.img", 8 * MiB, seed=41)
    status, body = await upload(sd, raw, **{api.H_ALIAS: "base"})
    assert status == 202 and (await sd.wait_response(body))["status"] == "Success"
    image = await images.resolve(sd.cloud, "base")
    disk = await images.clone_root_disk(sd.cloud, "web1", image, size=16 * MiB)
    assert disk.parent.endswith(f"image_{image.fingerprint}@mc_base") and disk.size == 16 * MiB
    again = await images.clone_root_disk(sd.cloud, "web1", image)  # re-runnable
    assert again.backend_name == disk.backend_name

    rc, _, err = await sd.cli("image", "delete", "base")
    assert rc == 1 and "is used by 1 disk(s) cloned from it (vm_web1)" in err and "--force" in err, err
    assert sd.db.get_or_none(Image, image.fingerprint) is not None
    assert f"image_{image.fingerprint}" in rbd_names(sd, sd.pool)

    with sd.ceph.rados() as cluster, cluster.open_ioctx(sd.pool) as io, rbd.Image(io, "vm_web1") as im:
        before = bytes(im.read(0, MiB))
    rc, _, err = await sd.cli("image", "delete", "base", "--force")
    assert rc == 0, err
    assert sd.db.get_or_none(Image, image.fingerprint) is None and sd.db.all(ImageAlias) == []
    assert rbd_names(sd, sd.pool) == ["vm_web1"]
    with sd.ceph.rados() as cluster, cluster.open_ioctx(sd.pool) as io, rbd.Image(io, "vm_web1") as im:
        assert bytes(im.read(0, MiB)) == before  # flattened: its data kept, no parent
        try:
            im.parent_info()
            raise AssertionError("the clone still has a parent")
        except rbd.ImageNotFound:
            pass


async def test_import_without_a_pool_goes_to_the_members_default_pool(storage_daemon: StorageDaemon,
                                                                     tmp_path: Path) -> None:
    """No pool header: the pool init made (`storage.pool`), whatever its name, not "remote"."""
    sd = storage_daemon
    sd.cloud.settings["storage.pool"] = sd.pool
    disk = make_raw_disk(tmp_path / "d.raw", 4 * MiB, seed=31)
    data = await asyncio.to_thread(disk.read_bytes)
    r = await sd.http.post("/1.0/images", data=data, headers={"Content-Type": "application/octet-stream"})
    body = await r.json()
    assert r.status == 202, body
    op = await sd.wait_response(body)
    assert op["status"] == "Success", op
    (img,) = sd.db.all(Image)
    assert img.pool == sd.pool and img.status == "ready"
