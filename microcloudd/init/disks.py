"""Block devices this host could give to Ceph, read from /sys/block.

A device is "in use" when it (or one of its partitions) is mounted, is swap, is held by
another device (LVM, md, dm-crypt: /sys/block/X/holders), or, for a whole disk, has
partitions (then its free partitions are offered instead).
"""

from __future__ import annotations

from pathlib import Path

from microcloudd.api.init import Disk

SYS_BLOCK = Path("/sys/block")
_SKIP_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "rbd")


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


def discover(sys_block: Path = SYS_BLOCK) -> list[Disk]:
    """Every disk and partition with its size, model and whether (why) it is in use."""
    mounts, swaps = _mounts(), _swaps()
    disks: list[Disk] = []
    for sysdir in sorted(sys_block.iterdir()):
        name = sysdir.name
        if name.startswith(_SKIP_PREFIXES):
            continue
        size = int(_read(sysdir / "size") or 0) * 512
        if size == 0:
            continue
        model = _read(sysdir / "device" / "model")
        read_only = _read(sysdir / "ro") == "1"
        parts = sorted(p for p in sysdir.iterdir() if p.name.startswith(name) and (p / "partition").exists())
        reason = _in_use(name, sysdir, mounts, swaps)
        part_disks = []
        for p in parts:
            preason = _in_use(p.name, p, mounts, swaps)
            part_disks.append(Disk(path=f"/dev/{p.name}", size=int(_read(p / "size") or 0) * 512,
                                   model=model, type="partition", in_use=preason, read_only=read_only))
        if not reason and parts:
            used = [d.path for d in part_disks if d.in_use]
            reason = f"has partitions ({', '.join(used)} in use)" if used else "has partitions"
        disks.append(Disk(path=f"/dev/{name}", size=size, model=model, in_use=reason, read_only=read_only))
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
