"""Compute driver overhead on libvirt's test:/// driver, beside the floor.

  floor   raw libvirt-python defineXML + create on the calling thread (same XML)
  driver  LibvirtDriver.define + start (validation, XML build, owner checks, the hop to
          the libvirt thread and back into asyncio)
  burst   50 concurrent define+start through the driver: throughput and p99

Run: .venv/bin/python -m bench.compute   (prints figures; never fails on timing)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import libvirt

from microcloudd.drivers.compute import domain_xml as dx
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from tests.fixtures.libvirt import make_spec, remove_owned, unique

URI = "test:///default"
N = 200


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def show(label: str, ms: list[float]) -> None:
    print(f"{label:<44} median {statistics.median(ms):7.3f} ms   p99 {pct(ms, 99):7.3f} ms   (n={len(ms)})")


def floor() -> list[float]:
    conn = libvirt.open(URI)
    owner = unique("bench-floor")
    out = []
    try:
        for _ in range(N):
            xml = dx.build_domain_xml(make_spec(), owner, "kvm")  # prebuilt: the floor is libvirt only
            t = time.perf_counter()
            dom = conn.defineXML(xml)
            dom.create()
            out.append((time.perf_counter() - t) * 1000)
            dom.destroy()
            dom.undefine()
    finally:
        conn.close()
    return out


async def driver_sequential() -> list[float]:
    drv = await LibvirtDriver.connect(URI, owner=unique("bench-drv"))
    out = []
    try:
        for _ in range(N):
            spec = make_spec()
            t = time.perf_counter()
            await drv.define(spec)
            await drv.start(spec.name)
            out.append((time.perf_counter() - t) * 1000)
            await drv.undefine(spec.name, force=True)
    finally:
        await remove_owned(drv)
        await drv.close()
    return out


async def driver_burst(n: int = 50) -> tuple[float, list[float]]:
    drv = await LibvirtDriver.connect(URI, owner=unique("bench-burst"))
    try:
        specs = [make_spec() for _ in range(n)]

        async def one(spec) -> float:  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            await drv.define(spec)
            await drv.start(spec.name)
            return (time.perf_counter() - t) * 1000

        t0 = time.perf_counter()
        lat = await asyncio.gather(*(one(s) for s in specs))
        wall = time.perf_counter() - t0
        return wall, list(lat)
    finally:
        await remove_owned(drv)
        await drv.close()


def main() -> None:
    print(f"compute driver on {URI} (libvirt {libvirt.getVersion()}), run {uuid.uuid4().hex[:6]}")
    raw = floor()
    show("floor: raw defineXML + create", raw)
    drv = asyncio.run(driver_sequential())
    show("driver: define + start (async, libvirt thread)", drv)
    print(f"{'overhead vs floor (median)':<44} {statistics.median(drv) - statistics.median(raw):+7.3f} ms   "
          f"x{statistics.median(drv) / statistics.median(raw):.1f}")
    wall, lat = asyncio.run(driver_burst(50))
    print(f"{'50 concurrent define + start':<44} wall {wall * 1000:7.1f} ms   "
          f"{50 / wall:7.0f} launches/s   p99 {pct(lat, 99):7.2f} ms")


if __name__ == "__main__":
    main()
