"""The `init --auto` plan: no questions, everything on this machine.

A file-backed OSD under the state dir sized from its free space (the file is sparse: it
takes room only as data is written), the host NAT uplink, pool `remote`, network `default`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from microcloudd.api.errors import Unavailable
from microcloudd.api.init import InitPlan, NetworkPlan, StoragePlan

GiB = 1 << 30
MIN_FREE = 4 * GiB


def osd_size(free: int) -> int:
    """A quarter of the free space, between 4 and 100 GiB, rounded down to a GiB."""
    return max(4 * GiB, min(100 * GiB, free // 4)) // GiB * GiB


def plan(state_dir: Path, member: str) -> InitPlan:
    probe = Path(state_dir)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE:
        raise Unavailable(f"{probe} has {free / GiB:.1f} GiB free: a file-backed OSD needs at least "
                          f"{MIN_FREE // GiB} GiB (free some space or give disks in a preseed)")
    return InitPlan(member=member, storage=StoragePlan(file_osd_size=osd_size(free)),
                    network=NetworkPlan(uplink="nat"))
