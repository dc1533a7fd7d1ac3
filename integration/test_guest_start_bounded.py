"""A guest whose RBD disk's Ceph monitor does not answer: its start must neither freeze the
driver's other libvirt calls nor take Ceph's default 300 s mount timeout.

Real private libvirtd, real QEMU (TCG); the disk's monitor is 127.0.0.1 on a port nobody
listens on, so librados inside QEMU retries until its client_mount_timeout.
- With the driver's guest ceph.conf (client_mount_timeout 5 s) the start fails after ~5 s with
  QEMU's "error connecting" in the message; meanwhile list/state of the same driver answer.
- Without it (the 300 s default) other calls still answer while the start hangs, and a forced
  stop kills the stuck QEMU, which ends the start.
- A start in flight when libvirtd dies fails at once with Unavailable (its own connection
  broke), a start while libvirtd is down fails within the driver's bound, and the driver
  carries on once libvirtd is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from microcloudd.api.errors import MicrocloudError, Unavailable
from microcloudd.drivers.compute import domain_xml as dx
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from microcloudd.drivers.compute.types import CephMonitor, PowerState
from tests.fixtures.libvirt import PrivateLibvirtd, make_spec, rbd_image, running_libvirtd, unique

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "5d6b3fa0-93e5-4a55-9d1c-4f7e0b1f2a10"
MOUNT_TIMEOUT = 5


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


@pytest.fixture
def lvd() -> Iterator[PrivateLibvirtd]:
    with running_libvirtd() as lvd:
        yield lvd


async def driver(lvd: PrivateLibvirtd, conf: Path | None) -> LibvirtDriver:
    drv = await LibvirtDriver.connect(lvd.uri, owner=unique("bounded"), guest_ceph_conf=conf)
    key = (await asyncio.to_thread(subprocess.run, ["ceph-authtool", "--gen-print-key"], capture_output=True,
                                   text=True, check=True)).stdout.strip()  # well-formed: librados checks
    await drv.ensure_ceph_secret(SECRET, "admin", key)
    return drv


async def probe_while(task: asyncio.Task[None], drv: LibvirtDriver, name: str) -> list[float]:
    """Time list_owned + state calls of `drv` while `task` runs (at least 3 rounds)."""
    took: list[float] = []
    while not task.done() or len(took) < 3:
        t = time.monotonic()
        assert name in [s.name for s in await asyncio.wait_for(drv.list_owned(), 5)]
        await asyncio.wait_for(drv.state(name), 5)
        took.append(time.monotonic() - t)
        if len(took) >= 3 and task.done():
            break
        await asyncio.sleep(0.5)
        if len(took) >= 6:
            break
    return took


async def test_start_against_dead_ceph_fails_within_the_mount_timeout(lvd: PrivateLibvirtd,
                                                                      tmp_path: Path) -> None:
    conf = tmp_path / "guest-ceph.conf"  # under /tmp: the same path for QEMU (see components.libvirtd)
    conf.write_text(dx.guest_ceph_conf(mount_timeout=MOUNT_TIMEOUT, op_timeout=MOUNT_TIMEOUT))
    drv = await driver(lvd, conf)
    try:
        spec = make_spec(root=rbd_image("img", mon=CephMonitor("127.0.0.1", dead_port())), seed=None, nics=())
        await drv.define(spec)
        assert f"<config file='{conf}'/>" in await drv._lt.call(
            lambda: drv._c.lookupByName(spec.name).XMLDesc(0))
        t0 = time.monotonic()
        start = asyncio.create_task(drv.start(spec.name))
        took = await probe_while(start, drv, spec.name)
        with pytest.raises(MicrocloudError, match="error connecting") as err:
            await start
        elapsed = time.monotonic() - t0
        assert MOUNT_TIMEOUT - 1 < elapsed < MOUNT_TIMEOUT + 15, f"start failed after {elapsed:.1f} s"
        assert max(took) < 1.0, f"other calls took {took}"
        assert (await drv.state(spec.name)).state is PowerState.STOPPED
        print(f"start failed after {elapsed:.1f} s ({err.value}); list+state during it: "
              f"{', '.join(f'{t * 1000:.0f} ms' for t in took)}")
        await drv.undefine(spec.name, force=True)
    finally:
        await drv.close()


async def test_other_calls_go_on_while_a_start_hangs_and_a_forced_stop_ends_it(lvd: PrivateLibvirtd) -> None:
    drv = await driver(lvd, None)  # no guest ceph.conf: librados' 300 s default
    try:
        spec = make_spec(root=rbd_image("img", mon=CephMonitor("127.0.0.1", dead_port())), seed=None, nics=())
        await drv.define(spec)
        start = asyncio.create_task(drv.start(spec.name))
        await asyncio.sleep(2)
        assert not start.done()  # QEMU is waiting for the monitor
        took = await probe_while(start, drv, spec.name)
        assert not start.done() and max(took) < 1.0, f"other calls took {took}"
        other = make_spec()
        t = time.monotonic()
        await drv.define(other)  # a write, too
        await drv.undefine(other.name)
        assert time.monotonic() - t < 2
        await asyncio.wait_for(drv.stop(spec.name, force=True), 20)
        with pytest.raises(MicrocloudError):
            await asyncio.wait_for(start, 20)
        assert (await drv.state(spec.name)).state is PowerState.STOPPED
        await drv.undefine(spec.name, force=True)
    finally:
        if "start" in locals() and not start.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(drv.stop(spec.name, force=True), 20)
        await drv.close()


def qemu_pids(name: str) -> list[int]:
    """QEMU processes of domain `name` (unique per test), by their command line."""
    out = subprocess.run(["pgrep", "-f", f"guest={name},"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


async def test_a_start_in_flight_when_libvirtd_dies_fails_unavailable_and_the_driver_carries_on(
        lvd: PrivateLibvirtd) -> None:
    drv = await driver(lvd, None)  # no guest ceph.conf: the start would hang for 300 s
    drv.reconnect_wait = 2.0
    spec = make_spec(root=rbd_image("img", mon=CephMonitor("127.0.0.1", dead_port())), seed=None, nics=())
    try:
        await drv.define(spec)
        start = asyncio.create_task(drv.start(spec.name))
        await asyncio.sleep(2)
        assert not start.done()  # QEMU is waiting for the monitor
        t0 = time.monotonic()
        await asyncio.to_thread(lvd.kill)
        with pytest.raises(Unavailable, match="broke during the call"):
            await asyncio.wait_for(start, 10)
        assert time.monotonic() - t0 < 5, "the start did not notice libvirtd's death at once"
        # down: a new start fails within the driver's bound, not hangs
        t1 = time.monotonic()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(drv.start(spec.name), 15)
        assert time.monotonic() - t1 < drv.reconnect_wait + 2
        for pid in qemu_pids(spec.name):  # libvirtd left the half-started QEMU behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(lvd.start)
        # the same driver, reconnected: the domain is there and stopped
        st = await asyncio.wait_for(drv.state(spec.name), 30)
        assert st.state is PowerState.STOPPED
        await drv.undefine(spec.name, force=True)
    finally:
        await drv.close()
        for pid in qemu_pids(spec.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
