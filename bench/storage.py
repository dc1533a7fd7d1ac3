"""Storage benchmark: instance root-disk provisioning and image import through the RBD
driver, beside the raw floor (`rbd clone` / `rbd import` CLI, python rbd clone).

    .venv/bin/python -m bench.storage [--runs N]

Starts and stops its own throwaway Ceph (memstore OSD). Prints figures and ratios; never
fails on timing. Provisioning must be flat in image size (100 MiB vs 10 GiB image).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import rbd

from microcloudd.drivers.storage.base import VolumeType
from microcloudd.drivers.storage.naming import IMAGE_SNAPSHOT
from microcloudd.drivers.storage.rbd import RBDDriver
from tests.fixtures.ceph import CephCluster, make_qcow2_disk, make_raw_disk, running_ceph

MiB, GiB = 1 << 20, 1 << 30
POOL = "bench"


def ms(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1e3:7.1f} ms  (min {min(samples) * 1e3:.1f}, " \
           f"max {max(samples) * 1e3:.1f}, n={len(samples)})"


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rbd_cli(ceph: CephCluster, *args: str) -> None:
    subprocess.run(["rbd", "-c", str(ceph.conf_path), "--id", ceph.user, "--keyring", str(ceph.keyring_path),
                    *args], check=True, capture_output=True)


def python_clone(ceph: CephCluster, parent: str, child: str, size: int) -> float:
    """The in-process floor: open an ioctx, clone, resize (connection set up beforehand)."""
    with ceph.rados() as cluster, cluster.open_ioctx(POOL) as io:
        t = time.perf_counter()
        rbd.RBD().clone(io, parent, IMAGE_SNAPSHOT, io, child, features=rbd.RBD_FEATURE_LAYERING
                        | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
                        | rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_DEEP_FLATTEN)
        with rbd.Image(io, child) as im:
            im.resize(size)
        dt = time.perf_counter() - t
        rbd.RBD().remove(io, child)
    return dt


async def provisioning(driver: RBDDriver, ceph: CephCluster, fingerprint: str, image_size: int,
                       runs: int) -> dict[str, list[float]]:
    parent = f"image_{fingerprint}"
    size = image_size + GiB
    out: dict[str, list[float]] = {"driver": [], "rbd clone CLI": [], "python rbd clone+resize": []}
    for i in range(runs):
        t = time.perf_counter()
        await driver.create_root_disk(POOL, f"vm{i}", fingerprint, size=size)
        out["driver"].append(time.perf_counter() - t)
        await driver.delete_volume(POOL, f"vm{i}", type=VolumeType.VM)
        out["rbd clone CLI"].append(timed(lambda i=i: rbd_cli(  # type: ignore[misc]
            ceph, "clone", f"{POOL}/{parent}@{IMAGE_SNAPSHOT}", f"{POOL}/floor{i}")))
        rbd_cli(ceph, "rm", "--no-progress", f"{POOL}/floor{i}")
        out["python rbd clone+resize"].append(
            await asyncio.to_thread(python_clone, ceph, parent, f"pyfloor{i}", size))
    return out


def disk_files(tmp: Path) -> tuple[Path, Path]:
    """A 100 MiB raw image of random data, and a 10 GiB qcow2 image holding 32 MiB."""
    small = make_raw_disk(tmp / "small.img", 100 * MiB, holes=False)
    big_raw = make_raw_disk(tmp / "big.raw", 64 * MiB, holes=True)
    with open(big_raw, "r+b") as f:
        f.truncate(10 * GiB)
    big_qcow = make_qcow2_disk(tmp / "big.qcow2", big_raw)
    big_raw.unlink()
    return small, big_qcow


def main(runs: int) -> None:
    # tests.support.proc starts daemons synchronously: outside the event loop.
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp_name, running_ceph() as ceph:
        small, big_qcow = disk_files(Path(tmp_name))
        asyncio.run(bench(ceph, small, big_qcow, runs))


async def bench(ceph: CephCluster, small: Path, big_qcow: Path, runs: int) -> None:
    driver = RBDDriver(ceph.conf_path, ceph.keyring_path, user=ceph.user, owner="bench")
    await driver.connect()
    try:
        await driver.create_pool(POOL)
        print(f"ceph: 1 mon, 1 mgr, 1 memstore OSD at {ceph.mon_host}; {runs} runs per figure\n")

        # -- image import throughput: driver vs `rbd import` of the same 100 MiB raw file
        t_drv = time.perf_counter()
        small_img = await driver.import_image(POOL, small)
        t_drv = time.perf_counter() - t_drv
        t_cli = timed(lambda: rbd_cli(ceph, "import", "--no-progress", str(small), f"{POOL}/cli-import"))
        rbd_cli(ceph, "rm", "--no-progress", f"{POOL}/cli-import")
        print("image import, 100 MiB raw (random data):")
        print(f"  driver (stream + sha256 + snapshot + protect) {t_drv * 1e3:7.0f} ms  "
              f"{100 / t_drv:6.1f} MiB/s")
        print(f"  rbd import CLI                                {t_cli * 1e3:7.0f} ms  "
              f"{100 / t_cli:6.1f} MiB/s")
        print(f"  ratio driver/rbd import: {t_drv / t_cli:.2f}x\n")

        # -- a 10 GiB image (sparse: 10 GiB virtual, 32 MiB of data) as qcow2
        t_big = time.perf_counter()
        big_img = await driver.import_image(POOL, big_qcow)
        file_size = await asyncio.to_thread(lambda: big_qcow.stat().st_size)
        t_big = time.perf_counter() - t_big
        print(f"image import, 10 GiB qcow2 ({file_size / MiB:.0f} MiB file): "
              f"{t_big * 1e3:.0f} ms through the driver (qemu-img convert into RBD)\n")

        # -- root-disk provisioning: flat in image size, beside the clone floor
        results = {}
        for label, img in (("100 MiB", small_img), ("10 GiB", big_img)):
            results[label] = await provisioning(driver, ceph, img.fingerprint, img.size, runs)
            print(f"root disk from the {label} image (clone + tag + resize to image+1 GiB):")
            for what, samples in results[label].items():
                print(f"  {what:<26} {ms(samples)}")
        med = {k: {w: statistics.median(s) for w, s in v.items()} for k, v in results.items()}
        print("\nratios (medians):")
        for label in med:
            d = med[label]
            print(f"  {label}: driver/rbd clone CLI {d['driver'] / d['rbd clone CLI']:.2f}x, "
                  f"driver/python rbd {d['driver'] / d['python rbd clone+resize']:.2f}x")
        flat = med["10 GiB"]["driver"] / med["100 MiB"]["driver"]
        print(f"  flatness: driver 10 GiB / 100 MiB = {flat:.2f}x")

        for img in (small_img, big_img):
            await driver.delete_image(POOL, img.fingerprint)
        await driver.delete_pool(POOL)
    finally:
        await driver.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    main(parser.parse_args().runs)
