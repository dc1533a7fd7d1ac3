"""Whole-file replacement: the new contents with the asked mode, or the old file untouched and
no temporary file left behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from microcloudd.atomic_file import write_atomic


def test_replaces_whole_with_the_asked_mode(tmp_path: Path) -> None:
    target = tmp_path / "keyring"
    write_atomic(target, "old\n")
    assert target.read_text() == "old\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomic(target, b"\x00new", mode=0o644, durable=True)
    assert target.read_bytes() == b"\x00new" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "settings.json"
    target.write_text("{}")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "{}"
    blocked = tmp_path / "a-directory"
    blocked.mkdir()
    with pytest.raises(OSError):
        write_atomic(blocked, "x")  # the rename fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory", "settings.json"]
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "f", "x")  # no directory: nothing made
