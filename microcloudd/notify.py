"""sd_notify READY / STATUS / STOPPING / WATCHDOG, when systemd gave us a NOTIFY_SOCKET."""

from __future__ import annotations

import os


def notify(**fields: str) -> None:
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    from systemd import daemon  # type: ignore[attr-defined]

    daemon.notify("\n".join(f"{k.upper()}={v}" for k, v in fields.items()))
