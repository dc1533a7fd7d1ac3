"""Structured logging: to the journal under systemd, to stderr as key=value lines otherwise."""

from __future__ import annotations

import logging
import os
import sys


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = (f"time={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d} "
                f"level={record.levelname.lower()} logger={record.name} msg={record.getMessage()!r}")
        component = getattr(record, "component", None)
        if component:
            base += f" component={component}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def under_systemd() -> bool:
    return "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ


def setup(debug: bool = False) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if under_systemd():
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER="microcloudd")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_KeyValueFormatter())
    root.addHandler(handler)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
