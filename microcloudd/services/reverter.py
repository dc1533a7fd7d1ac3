"""Undo the finished steps of multi-step work when a later step fails (LXD's reverter).

    async with Reverter() as revert:
        await create_disk(); revert.add(delete_disk)
        await create_port(); revert.add(delete_port)
        revert.success()          # keep everything

Undo steps run newest first; one failing undo is logged and the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[object]]


class Reverter:
    def __init__(self) -> None:
        self._undo: list[tuple[str, Undo]] = []
        self._ok = False

    def add(self, undo: Undo, what: str = "") -> None:
        self._undo.append((what or getattr(undo, "__name__", "step"), undo))

    def success(self) -> None:
        self._ok = True

    async def revert(self) -> None:
        while self._undo:
            what, undo = self._undo.pop()
            try:
                await undo()
            except Exception:
                log.exception("revert: undoing %s failed", what)

    async def __aenter__(self) -> Reverter:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self._ok or et is not None:
            await self.revert()
