"""The private libvirtd component: config rendered under the state dir, a real daemon that
answers, stops cleanly (SIGTERM) and leaves no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from microcloudd.api.errors import InvalidArgument, NotFound
from microcloudd.components import libvirtd
from microcloudd.drivers.compute.libvirt import LibvirtDriver
from tests.fixtures.libvirt import make_spec, running_libvirtd, unique


def test_spec_renders_config_and_environment(tmp_path: Path) -> None:
    spec = libvirtd.libvirtd_spec(tmp_path / "lvd", ovs_rundir=tmp_path / "ovs", netns="ns1")
    conf = (tmp_path / "lvd/etc/libvirtd.conf").read_text()
    assert f'unix_sock_dir = "{tmp_path}/lvd/sock"' in conf and "listen_tcp = 0" in conf
    qemu = (tmp_path / "lvd/etc/qemu.conf").read_text()
    assert 'security_driver = "none"' in qemu and 'stdio_handler = "file"' in qemu
    assert spec.env["OVS_RUNDIR"] == str(tmp_path / "ovs")
    assert spec.argv[:4] == ["ip", "netns", "exec", "ns1"] and "tini" in spec.argv
    assert libvirtd.uri(tmp_path / "lvd") == f"qemu:///system?socket={tmp_path}/lvd/sock/libvirt-sock"
    assert libvirtd.uri(None) == "qemu:///system"


def test_too_long_state_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="too long"):
        libvirtd.libvirtd_spec(tmp_path / ("x" * 100))


@pytest.fixture
def lvd_stack() -> Iterator[contextlib.ExitStack]:
    # started outside the event loop: tests.support.proc waits for readiness synchronously
    with contextlib.ExitStack() as stack:
        yield stack


async def test_private_libvirtd_runs_the_driver_and_stops_clean(lvd_stack: contextlib.ExitStack) -> None:
    lvd = await asyncio.to_thread(lvd_stack.enter_context, running_libvirtd())
    assert await libvirtd.socket_answers(lvd.uri)
    drv = await LibvirtDriver.connect(lvd.uri, owner=unique("lvd-owner"))
    try:
        spec = make_spec()
        await drv.define(spec)
        assert [s.name for s in await drv.list_owned()] == [spec.name]
        assert (await drv.get(spec.name)).virt_type == drv.virt_type
        assert await drv.undefine(spec.name)
        with pytest.raises(NotFound):
            await drv.state(spec.name)
    finally:
        await drv.close()
    await asyncio.to_thread(lvd_stack.close)
    assert lvd.running.proc.returncode == 0
    pgrep = await asyncio.create_subprocess_exec("pgrep", "-f", str(lvd.state_dir), stdout=subprocess.PIPE)
    left = (await pgrep.communicate())[0].decode()
    assert left == "", f"processes left behind: {left}"
