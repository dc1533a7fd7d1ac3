"""A daemon killed with an RBD image open leaves a watch the OSDs keep for
osd_client_watch_timeout (30 s); until then the image cannot be removed. The driver notes its
client's address while connected and, connecting again, blocklists the dead client: on real
Ceph the removal then works at once. A clean close leaves nothing to fence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from microcloudd.api.errors import InUse
from microcloudd.drivers.storage.rbd import RBDDriver
from tests.fixtures.ceph import CephCluster

MiB = 1 << 20

# A daemon's storage client at work: connected with its note, writing to an open volume.
_HOLDER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    import rbd
    from microcloudd.drivers.storage.rbd import RBDDriver

    async def main(conf, keyring, user, pool, name, note):
        d = RBDDriver(Path(conf), Path(keyring), user=user, owner="test-owner",
                      fence_file=Path(note) if note else None)
        await d.connect()
        await d.create_volume(pool, name, 8 << 20)
        with d._cluster.open_ioctx(pool) as io, rbd.Image(io, "custom_" + name) as image:
            image.write(b"x" * 4096, 0)
            print("open", flush=True)
            time.sleep(600)

    asyncio.run(main(*sys.argv[1:]))
""")


@pytest.fixture
def kill_holder(ceph: CephCluster, rbd_pool: str) -> Iterator[Callable[[str, Path | None], None]]:
    procs: list[subprocess.Popen[str]] = []

    def run(name: str, note: Path | None) -> None:
        """Start a holder and SIGKILL it once it has the volume open."""
        p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(ceph.conf_path), str(ceph.keyring_path),
                              ceph.user, rbd_pool, name, str(note or "")],
                             stdout=subprocess.PIPE, text=True, env={**os.environ})
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "open"
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    yield run
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


async def test_a_killed_clients_watch_is_fenced_on_reconnect(ceph: CephCluster, rbd_pool: str,
                                                            kill_holder: Callable[[str, Path | None], None],
                                                            tmp_path: Path) -> None:
    run = kill_holder
    # Without the note: the dead client's watch keeps the volume busy.
    run("plain", None)
    plain = RBDDriver(ceph.conf_path, ceph.keyring_path, user=ceph.user, owner="test-owner")
    await plain.connect()
    try:
        with pytest.raises(InUse):
            await plain.delete_volume(rbd_pool, "plain")
    finally:
        await plain.close()

    # With it: the next connect blocklists the dead client and the delete goes through at once.
    note = tmp_path / "ceph-client.addr"
    run("fenced", note)
    dead = note.read_text().strip()
    assert dead.count("/") == 1, dead  # ip:port/nonce of the killed client
    fenced = RBDDriver(ceph.conf_path, ceph.keyring_path, user=ceph.user, owner="test-owner", fence_file=note)
    await fenced.connect()
    try:
        await fenced.delete_volume(rbd_pool, "fenced")
        mine = note.read_text().strip()
        assert mine and mine != dead
        blocklist = ceph.command("osd blocklist ls")
        assert dead in blocklist and mine not in blocklist
    finally:
        await fenced.close()
    assert not note.exists()  # a clean close: nothing to fence next time


async def test_a_garbled_note_is_replaced_and_fences_nothing(ceph: CephCluster, tmp_path: Path) -> None:
    """Bad input: a note that is no client address gets a warning, not a failed connect."""
    note = tmp_path / "ceph-client.addr"
    note.write_text("not an address\n")
    before = ceph.command("osd blocklist ls")
    driver = RBDDriver(ceph.conf_path, ceph.keyring_path, user=ceph.user, owner="test-owner", fence_file=note)
    await driver.connect()
    try:
        assert note.read_text().strip().count("/") == 1  # our own address now
        assert ceph.command("osd blocklist ls") == before
    finally:
        await driver.close()
    assert not note.exists()
