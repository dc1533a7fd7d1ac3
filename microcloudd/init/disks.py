"""Block devices this host could give to Ceph, read from /sys/block (and blkid).

Two kinds of "not free":
- in use (never given to Ceph, whatever the plan says): the device or one of its partitions
  is mounted, is swap, or is held by another device (LVM, md, dm-crypt: .../holders);
- contents (given to Ceph only with `wipe: true`): a file system, a partition table, an
  earlier Ceph OSD... whatever `blkid -p` recognises, or partitions the kernel knows of.

Loop devices are not listed (snaps mount theirs), but one named in a plan is checked like a
disk: tests, and sites that back OSDs with a file on purpose, use them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from microcloudd.api.init import Disk

SYS_BLOCK = Path("/sys/block")
_SKIP_PREFIXES = ("ram", "zram", "dm-", "md", "sr", "fd", "nbd", "rbd")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _mounts() -> dict[str, str]:
    """device path -> mount point, from /proc/self/mounts (first mount wins)."""
    out: dict[str, str] = {}
    for line in _read(Path("/proc/self/mounts")).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("/dev/"):
            out.setdefault(parts[0], parts[1].replace("\\040", " "))
    return out


def _swaps() -> set[str]:
    lines = _read(Path("/proc/swaps")).splitlines()[1:]
    return {line.split()[0] for line in lines if line.split()}


def _in_use(name: str, sysdir: Path, mounts: dict[str, str], swaps: set[str]) -> str:
    dev = f"/dev/{name}"
    if dev in mounts:
        return f"mounted at {mounts[dev]}"
    if dev in swaps:
        return "used as swap"
    holders = sorted(p.name for p in (sysdir / "holders").glob("*"))
    if holders:
        return f"held by {', '.join(holders)} (LVM, RAID or encryption)"
    return ""


def contents(dev: str) -> str:
    """What `blkid -p` (a low-level probe of the device itself, no cache) finds on it:
    "ext4 file system", "gpt partition table", "ceph_bluestore", or "" for a blank device."""
    try:
        done = subprocess.run(["blkid", "-p", "-o", "export", dev], capture_output=True, text=True,
                              timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return ""
    if done.returncode == 2:  # nothing recognised
        return ""
    if done.returncode != 0:
        # Ambivalent (two signatures) or unreadable: not blank either way.
        return f"unrecognised contents ({(done.stderr or 'blkid failed').strip()})"
    tags = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if "PTTYPE" in tags:
        return f"{tags['PTTYPE']} partition table"
    kind = tags.get("TYPE", "data")
    return f"{kind} file system" if tags.get("USAGE") == "filesystem" else kind


def _loop_detached(sysdir: Path) -> bool:
    return sysdir.name.startswith("loop") and not (sysdir / "loop").is_dir()


def discover(sys_block: Path = SYS_BLOCK, *, include_loop: bool = False,
             probe: bool = True) -> list[Disk]:
    """Every disk and partition with its size, model, whether (why) it is in use and what is
    on it (`probe`: run blkid on each free one)."""
    mounts, swaps = _mounts(), _swaps()
    disks: list[Disk] = []
    for sysdir in sorted(sys_block.iterdir()):
        name = sysdir.name
        if name.startswith(_SKIP_PREFIXES) or (name.startswith("loop") and not include_loop):
            continue
        size = int(_read(sysdir / "size") or 0) * 512
        if size == 0 or _loop_detached(sysdir):
            continue
        model = _read(sysdir / "device" / "model")
        read_only = _read(sysdir / "ro") == "1"
        parts = sorted(p for p in sysdir.iterdir() if p.name.startswith(name) and (p / "partition").exists())
        reason = _in_use(name, sysdir, mounts, swaps)
        part_disks = []
        for p in parts:
            preason = _in_use(p.name, p, mounts, swaps)
            pdev = f"/dev/{p.name}"
            part_disks.append(Disk(path=pdev, size=int(_read(p / "size") or 0) * 512, model=model,
                                   type="partition", in_use=preason, read_only=read_only,
                                   contents=contents(pdev) if probe and not preason else ""))
        used = [d.path for d in part_disks if d.in_use]
        if not reason and used:
            reason = f"has partitions in use ({', '.join(used)})"
        what = contents(f"/dev/{name}") if probe and not reason else ""
        if not reason and parts and not what:
            what = f"{len(parts)} partitions"
        disks.append(Disk(path=f"/dev/{name}", size=size, model=model, in_use=reason, contents=what,
                          read_only=read_only))
        disks.extend(part_disks)
    return disks


def by_path(disks: list[Disk]) -> dict[str, Disk]:
    out = {d.path: d for d in disks}
    # /dev/disk/by-id/... names resolve to the same device
    for link_dir in (Path("/dev/disk/by-id"), Path("/dev/disk/by-path")):
        if link_dir.is_dir():
            for link in link_dir.iterdir():
                target = str(link.resolve())
                if target in out:
                    out[str(link)] = out[target]
    return out


def find(path: str, sys_block: Path = SYS_BLOCK) -> Disk | None:
    """The disk or partition at `path` (a /dev name or a /dev/disk/by-* link), loop devices too."""
    real = str(Path(path).resolve()) if path.startswith("/dev/") else path
    found = by_path(discover(sys_block, include_loop=True, probe=False))
    disk = found.get(path) or found.get(real)
    if disk is not None and not disk.in_use:
        disk.contents = disk.contents or contents(disk.path)
    return disk


def problem(path: str, *, wipe: bool, sys_block: Path = SYS_BLOCK) -> str:
    """Why `path` cannot become an OSD now ("" if it can): missing, in use, read-only, or
    holding data while `wipe` is false. Checked when the plan is made and again right before
    the device is formatted."""
    disk = find(path, sys_block)
    if disk is None:
        return f"{path}: no such disk (see `microcloud init --list-disks`)"
    if disk.in_use:
        return f"{path}: disk in use: {disk.in_use}"
    if disk.read_only:
        return f"{path}: disk is read-only"
    if disk.contents and not wipe:
        return f"{path}: disk holds data ({disk.contents}): set storage.wipe: true to erase it"
    return ""
