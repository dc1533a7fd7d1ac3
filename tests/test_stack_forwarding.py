"""IPv4 forwarding: noted before a member first turns it on, put back when microcloudd stops
and by purge, only when it was off before and no other microcloud on the host has its
namespace. The sysctl file is a temporary copy here (the host's own must not flip under other
tests); the namespaces are real."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from microcloudd.daemon import Daemon
from microcloudd.stack import netns
from microcloudd.stack.layout import NETNS_PREFIX, Layout


@pytest.fixture
def sysctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    f = tmp_path / "ip_forward"
    monkeypatch.setattr(netns, "FORWARDING", f)
    return f


def test_purge_puts_forwarding_back_when_it_was_off(tmp_path: Path, sysctl: Path) -> None:
    lay = Layout(tmp_path / "state")
    lay.state_dir.mkdir()
    sysctl.write_text("0\n")
    netns.note_forwarding(lay)
    sysctl.write_text("1\n")  # what the NAT uplink does
    netns.note_forwarding(lay)  # a later start: the first setting is kept
    assert lay.forwarding_note.read_text() == "0\n"
    other = f"{NETNS_PREFIX}t{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:  # another microcloud still routes through the host: left on
        assert not netns.restore_forwarding(lay) and sysctl.read_text() == "1\n"
    finally:
        subprocess.run(["ip", "netns", "del", other], check=True)
    assert not lay.forwarding_note.exists()  # that member is gone, its note with it
    lay.forwarding_note.write_text("0\n")  # the last member on the host
    assert netns.restore_forwarding(lay) and sysctl.read_text() == "0\n"
    assert not lay.forwarding_note.exists()
    assert not netns.restore_forwarding(lay)  # nothing noted: nothing done


def test_forwarding_on_before_us_stays_on(tmp_path: Path, sysctl: Path) -> None:
    lay = Layout(tmp_path / "state")
    lay.state_dir.mkdir()
    sysctl.write_text("1\n")
    netns.note_forwarding(lay)
    assert not netns.restore_forwarding(lay) and sysctl.read_text() == "1\n"


def test_stopping_microcloudd_puts_forwarding_back(tmp_path: Path, sysctl: Path) -> None:
    """`make down` (or a systemd stop) keeps the state but not the host routing: forwarding
    goes back off when the daemon stops, and the next start notes the setting afresh."""
    lay = Layout(tmp_path / "state")
    lay.state_dir.mkdir()
    sysctl.write_text("0\n")
    netns.note_forwarding(lay)
    sysctl.write_text("1\n")  # what the stack's NAT uplink does when it starts

    async def run_and_stop() -> None:
        d = Daemon(lay.state_dir, "m1")
        await d.start()
        await d.stop()

    asyncio.run(run_and_stop())
    assert sysctl.read_text() == "0\n" and not lay.forwarding_note.exists()
    netns.note_forwarding(lay)  # the next start
    assert lay.forwarding_note.read_text() == "0\n"
