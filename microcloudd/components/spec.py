"""What it takes to run one bundled program as a child of microcloudd.

A component module (ovsdb, ovn, ceph, libvirtd) renders its configuration under the state
dir and returns ProcessSpecs; the supervisor runs them. Every program runs in the
foreground (never `--detach`), so it is our child and dies with us.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ReadyCheck = Callable[[], Awaitable[bool]]


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to microcloudd's environment
    cwd: Path | None = None
    # Polled until True (or ready_timeout passes) after start; None means "started is ready".
    ready: ReadyCheck | None = None
    ready_timeout: float = 30.0
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    # Components started after this one are stopped before it (reverse dependency order).
    after: tuple[str, ...] = ()
