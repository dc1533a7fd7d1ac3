"""Kill points for crash tests: `MICROCLOUD_KILL_AT=<point>` makes the daemon SIGKILL itself
when it reaches that point (inert when the variable is unset: one dict lookup).

The points a launch and a delete pass through are listed here, so a test can walk them all.
"""

from __future__ import annotations

import os
import signal

ENV = "MICROCLOUD_KILL_AT"

LAUNCH_POINTS = (
    "launch.row", "launch.root", "launch.ports", "launch.seed", "launch.domain", "launch.started",
)
DELETE_POINTS = ("delete.marked", "delete.domain", "delete.ports", "delete.disks")
ALL_POINTS = LAUNCH_POINTS + DELETE_POINTS


def point(name: str) -> None:
    """Reached `name` (the step before it is done, the next not begun)."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
