"""Disk image detection from content (no Ceph needed)."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from microcloudd.api.errors import InvalidArgument, NotFound
from microcloudd.drivers.storage.base import DiskFormat
from microcloudd.drivers.storage.disk_format import inspect
from tests.fixtures.ceph import make_qcow2_disk, make_raw_disk

MiB = 1 << 20


def test_raw_mbr_and_iso_are_accepted(tmp_path: Path) -> None:
    raw = inspect(make_raw_disk(tmp_path / "a.qcow2", 2 * MiB))  # the name is ignored
    assert (raw.format, raw.virtual_size) == (DiskFormat.RAW, 2 * MiB)
    iso = tmp_path / "cd.img"
    with open(iso, "wb") as f:
        f.truncate(MiB)
        f.seek(0x8001)
        f.write(b"CD001")
    assert inspect(iso).format is DiskFormat.RAW


def test_qcow2_is_detected_with_its_virtual_size(tmp_path: Path) -> None:
    q = inspect(make_qcow2_disk(tmp_path / "x.raw", make_raw_disk(tmp_path / "r", 3 * MiB)))
    assert (q.format, q.virtual_size) == (DiskFormat.QCOW2, 3 * MiB) and q.file_size < 3 * MiB


def test_qcow2_with_backing_file_is_refused(tmp_path: Path) -> None:
    base = make_qcow2_disk(tmp_path / "base.qcow2", make_raw_disk(tmp_path / "r", MiB))
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top)],
                   check=True)
    with pytest.raises(InvalidArgument, match="backing file"):
        inspect(top)


def test_not_disk_images_are_refused(tmp_path: Path) -> None:
    cases = {
        "empty.img": (b"", "is empty"),
        "text.img": (b"just text\n" * 1000, "neither a qcow2 image nor a raw disk image"),
        "zeros.img": (bytes(MiB), "neither a qcow2 image nor a raw disk image"),
        "disk.img.gz": (gzip.compress(b"x" * 1000), "gzip-compressed"),
        "disk.vmdk": (b"KDMV" + bytes(2000), "VMDK"),
        "odd.img": (bytes(510) + b"\x55\xaa" + bytes(100), "not a multiple of 512"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InvalidArgument, match=message):
            inspect(tmp_path / name)
    with pytest.raises(NotFound, match="not found"):
        inspect(tmp_path / "missing.img")
    with pytest.raises(InvalidArgument, match="not a regular file"):
        inspect(tmp_path)
