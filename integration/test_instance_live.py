"""A running instance driven through the REST API of a real member (`microcloud init --auto`:
database, OVN, OVS, Ceph, libvirtd, all real, tests/support/member): the serial console the
LXD way (POST /1.0/instances/{name}/console → a websocket operation, its "0" channel read for
the boot marker and typed into), a custom volume and a NIC hot-plugged and unplugged while the
guest runs (the guest sees each change; the domain XML, live and persistent, and the database
agree after each), then a graceful stop through ACPI within its timeout (no power-off).
Every RBD disk names the guest ceph.conf the daemon wrote (stack/guest_ceph.py): the guest
boots and hot-plugs with it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import libvirt
import pytest

from microcloudd.components import libvirtd
from tests.support.member import Member, member

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

NAME = "live1"
GUEST = {"limits.memory": "256MiB", "limits.cpu": "1"}


@pytest.fixture(scope="module")
def m() -> Iterator[Member]:
    with member("mc-it-live-") as mem:
        mem.start()
        mem.init()
        mem.import_test_image()
        yield mem


async def api(m: Member, method: str, path: str, body: Any = None, timeout: float = 300) -> dict[str, Any]:
    """One request (an async one waited for); fails on an error answer or a failed operation."""
    env = await asyncio.to_thread(m.api, method, path, body, timeout)
    if env.get("type") == "async":
        env = await asyncio.to_thread(m.wait_operation, env, timeout)
        assert env["metadata"]["status"] == "Success", env
    assert env.get("type") != "error", env
    return env


class Console:
    """The console's "0" channel: everything read is kept; `expect` waits for a pattern in
    what came after `mark()`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.text, self._from = ws, "", 0

    def mark(self) -> None:
        self._from = len(self.text)

    async def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        rx = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while not (found := rx.search(self.text, self._from)):
                msg = await self.ws.receive()
                assert msg.type == aiohttp.WSMsgType.BINARY, f"console closed: {msg}\n{self.text[-2000:]}"
                self.text += bytes(msg.data).decode(errors="replace").replace("\r", "")
        self._from = found.end()
        return found

    async def run(self, command: str, until: str, timeout: float = 60) -> str:
        """Type `command` and return the output up to the line `until` prints."""
        self.mark()
        await self.ws.send_bytes(f"{command}; echo {until}-$((40+2))\n".encode())
        start = self._from
        found = await self.expect(rf"\n{until}-42\n", timeout)
        return self.text[start:found.start()]


@pytest.fixture
async def http(m: Member) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(m.d.socket)),
                                     base_url="http://localhost") as s:
        yield s


def domain_devices(m: Member) -> dict[str, tuple[set[str], set[str]]]:
    """{"live"|"persistent": (rbd images of the disks, NIC MACs)} from libvirtd itself."""
    conn = libvirt.open(libvirtd.uri(m.lay.libvirt_dir))
    try:
        dom = next(d for d in conn.listAllDomains() if d.name().endswith(NAME))
        out = {}
        for kind, flags in (("live", 0), ("persistent", libvirt.VIR_DOMAIN_XML_INACTIVE)):
            root = ET.fromstring(dom.XMLDesc(flags))
            disks = {s.get("name", "").split("/")[-1] for s in root.findall("devices/disk/source")}
            macs = {mac.get("address", "") for mac in root.findall("devices/interface/mac")}
            out[kind] = (disks, macs)
        return out
    finally:
        conn.close()


def rbd_configs(m: Member) -> set[str | None]:
    """The <config file> of every RBD disk of the domain, live and persistent."""
    conn = libvirt.open(libvirtd.uri(m.lay.libvirt_dir))
    try:
        dom = next(d for d in conn.listAllDomains() if d.name().endswith(NAME))
        out: set[str | None] = set()
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            for src in ET.fromstring(dom.XMLDesc(flags)).iter("source"):
                if src.get("protocol") == "rbd":
                    el = src.find("config")
                    out.add(None if el is None else el.get("file"))
        return out
    finally:
        conn.close()


async def test_console_hotplug_and_graceful_stop(m: Member, http: aiohttp.ClientSession) -> None:
    vol = f"data{uuid.uuid4().hex[:6]}"
    await api(m, "POST", "/1.0/instances", {"name": NAME, "source": {"type": "image", "alias": "testimage"},
                                            "config": GUEST})
    await api(m, "POST", "/1.0/storage-pools/remote/volumes/custom",
              {"name": vol, "config": {"size": "64MiB"}, "content_type": "block"})
    await api(m, "PUT", f"/1.0/instances/{NAME}/state", {"action": "start"})

    # -- the console, LXD's way: attached right after the start, so the boot is read live ----
    t0 = time.monotonic()
    env = await asyncio.to_thread(m.api, "POST", f"/1.0/instances/{NAME}/console",
                                  {"type": "console", "width": 80, "height": 25})
    assert env["type"] == "async", env  # its operation lasts as long as the session
    op = env["metadata"]
    assert op["class"] == "websocket" and set(op["metadata"]["fds"]) == {"0", "control"}
    ws_url = f"/1.0/operations/{op['id']}/websocket?secret="
    async with http.ws_connect(ws_url + op["metadata"]["fds"]["0"]) as ws, \
            http.ws_connect(ws_url + op["metadata"]["fds"]["control"]) as control:
        con = Console(ws)
        await con.expect(r"MCTEST: ACPID-UP", 240)
        ready = await con.expect(r"MCTEST: READY ip=(\S*)", 240)
        print(f"boot marker through the console websocket: {time.monotonic() - t0:.1f}s, ip={ready.group(1)}")
        print("\n".join(line for line in con.text.splitlines() if line.startswith("MCTEST:")))
        assert "mc-echo" in await con.run("echo mc-echo", "done")
        before_nets = (await con.run("ls /sys/class/net", "nets")).split()
        assert "eth0" in before_nets and "eth1" not in before_nets, before_nets

        # -- hot-plug a custom volume and a NIC while it runs ------------------------------
        con.mark()
        await api(m, "PATCH", f"/1.0/instances/{NAME}", {"devices": {
            vol: {"type": "disk", "pool": "remote", "source": vol}}})
        await con.expect(r"MCTEST: BLOCKDEVS \[[^\]]*\bvdb\b", 60)
        assert re.search(r"\bvdb\b", await con.run("cat /proc/partitions", "parts"))
        await api(m, "PATCH", f"/1.0/instances/{NAME}", {"devices": {
            "eth1": {"type": "nic", "network": "default"}}})
        async with asyncio.timeout(60):
            while "eth1" not in (await con.run("ls /sys/class/net", "nets")).split():  # noqa: ASYNC110
                await asyncio.sleep(0.5)

        inst = (await api(m, "GET", f"/1.0/instances/{NAME}"))["metadata"]
        mac = inst["config"]["volatile.eth1.hwaddr"]
        assert mac in (await con.run("cat /sys/class/net/eth1/address", "mac"))
        assert {vol, "eth1"} <= set(inst["devices"])
        doms = await asyncio.to_thread(domain_devices, m)
        for kind, (disks, macs) in doms.items():
            assert any(vol in d for d in disks), (kind, disks)
            assert mac in macs and len(macs) == 2, (kind, macs)
        # booted and hot-plugged with the guest ceph.conf the daemon wrote (bounded timeouts)
        assert await asyncio.to_thread(rbd_configs, m) == {str(m.lay.guest_ceph_conf)}
        assert "client_mount_timeout" in m.lay.guest_ceph_conf.read_text()

        # -- and unplug both (PUT: the devices without them) -------------------------------
        own = {k: v for k, v in inst["devices"].items() if k not in (vol, "eth1")}
        config = {k: v for k, v in inst["config"].items() if not k.startswith(("volatile.", "image."))}
        con.mark()
        await api(m, "PUT", f"/1.0/instances/{NAME}", {"config": config, "devices": own})
        await con.expect(r"MCTEST: BLOCKDEVS \[(?![^\]]*\bvdb\b)[^\]]*\]", 60)
        async with asyncio.timeout(60):
            while "eth1" in (await con.run("ls /sys/class/net", "nets")).split():  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        inst = (await api(m, "GET", f"/1.0/instances/{NAME}"))["metadata"]
        assert vol not in inst["devices"] and "eth1" not in inst["devices"]
        assert "volatile.eth1.hwaddr" not in inst["config"]
        doms = await asyncio.to_thread(domain_devices, m)
        for kind, (disks, macs) in doms.items():
            assert not any(vol in d for d in disks), (kind, disks)
            assert mac not in macs and len(macs) == 1, (kind, macs)
        volume = (await api(m, "GET", f"/1.0/storage-pools/remote/volumes/custom/{vol}"))["metadata"]
        assert not volume.get("used_by"), volume

        # -- graceful stop: ACPI, the guest powers itself off well within the timeout --------
        t0 = time.monotonic()
        con.mark()
        await api(m, "PUT", f"/1.0/instances/{NAME}/state", {"action": "stop", "timeout": 60})
        took = time.monotonic() - t0
        print(f"graceful stop: {took:.1f}s")
        await con.expect(r"MCTEST: POWER-BUTTON", 10)  # what the guest printed as it went down
        assert took < 60
        await control.close()
    state = (await api(m, "GET", f"/1.0/instances/{NAME}/state"))["metadata"]
    assert state["status"] == "Stopped"
    assert (await api(m, "GET", f"/1.0/operations/{op['id']}"))["metadata"]["status"] == "Success"
    inst = (await api(m, "GET", f"/1.0/instances/{NAME}"))["metadata"]
    assert inst["config"]["volatile.last_state.power"] == "STOPPED"

    await api(m, "DELETE", f"/1.0/instances/{NAME}")
    await api(m, "DELETE", f"/1.0/storage-pools/remote/volumes/custom/{vol}")


async def test_console_bad_input_changes_nothing(m: Member, http: aiohttp.ClientSession) -> None:
    ops_before = (await api(m, "GET", "/1.0/operations"))["metadata"]
    for body in ({"type": "vga"}, {"type": "console", "width": -1}):
        env = await asyncio.to_thread(m.api, "POST", "/1.0/instances/nope/console", body)
        assert env["type"] == "error" and env["error_code"] == 400, env
    env = await asyncio.to_thread(m.api, "POST", "/1.0/instances/nope/console", {"type": "console"})
    assert env["error_code"] == 404, env
    async with http.get("/1.0/operations/nope/websocket?secret=x") as r:
        assert r.status == 404
    assert (await api(m, "GET", "/1.0/operations"))["metadata"] == ops_before
