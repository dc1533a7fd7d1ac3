"""Remove the host-level leftovers of a stopped member (`scripts/down.sh --purge`): the host
NAT uplink (veth end, nftables table), the namespace and its link, and IPv4 forwarding if the
member turned it on (and no other microcloud runs here). Run with nothing of the
member running; the state dir itself is the caller's to delete.

    python -m microcloudd.stack.purge STATE_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from microcloudd.components import ovs
from microcloudd.stack import netns, uplink
from microcloudd.stack.layout import Layout


def purge(state_dir: Path) -> None:
    lay = Layout(Path(state_dir).absolute())
    cfg = ovs.ChassisConfig(state_dir=lay.ovs_dir, chassis_name="purge", encap_ip="127.0.0.1",
                            sb_remote="", netns=lay.netns)
    asyncio.run(uplink.remove(lay, cfg))
    netns.remove(lay)
    netns.restore_forwarding(lay)


if __name__ == "__main__":
    purge(Path(sys.argv[1]))
