"""NoCloud seed images: an ISO9660 volume `cidata` with the files cloud-init reads."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import yaml

from microcloudd.api.errors import InvalidArgument
from microcloudd.drivers.compute.seed import Seed, build_seed_iso_async, write_seed_iso


def extract(iso: Path, name: str, out: Path) -> None:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", f"/{name}", str(out / name)],
                   check=True, capture_output=True)


async def test_seed_iso_has_label_and_files(tmp_path: Path) -> None:
    net = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
    data = await build_seed_iso_async(Seed("iid-123", "web1", "#cloud-config\nruncmd: [true]\n", net))
    assert data[0x8001:0x8006] == b"CD001"  # ISO9660 primary volume descriptor
    assert data[0x8028:0x8030].decode().strip() == "cidata"
    iso = tmp_path / "seed.iso"
    iso.write_bytes(data)
    out = tmp_path / "x"
    for name in ("meta-data", "user-data", "network-config"):
        await asyncio.to_thread(extract, iso, name, out)
    meta = yaml.safe_load((out / "meta-data").read_text())
    assert meta == {"instance-id": "iid-123", "local-hostname": "web1"}
    assert (out / "user-data").read_text().startswith("#cloud-config")
    assert yaml.safe_load((out / "network-config").read_text())["version"] == 2


def test_write_seed_iso(tmp_path: Path) -> None:
    path = write_seed_iso(Seed("iid-1", "h1"), tmp_path / "s.iso")
    assert path.stat().st_size > 0 and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("seed", [Seed("", "h1"), Seed("has space", "h1"), Seed("iid", "bad_host!"),
                                  Seed("iid", "h1", user_data="a: [unclosed")])
def test_bad_seed_is_refused(seed: Seed) -> None:
    with pytest.raises(InvalidArgument):
        write_seed_iso(seed, Path("/nonexistent/never-written.iso"))
