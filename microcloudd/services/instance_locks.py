"""One lock per instance name, shared by API work and the reconciler of this daemon.

API work holds an instance's lock for the whole of its operation; the reconciler skips
instances whose lock is held (their stage is in flux on purpose) rather than waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from microcloudd.services.cloud import Cloud


class InstanceLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def busy(self, name: str) -> bool:
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._users[name] = self._users.get(name, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[name] -= 1
            if not self._users[name]:  # forget idle locks: 1,000 instances need no 1,000 locks
                del self._users[name]
                del self._locks[name]


def locks(cloud: Cloud) -> InstanceLocks:
    # Cloud has no slot for per-service state yet; keep it on the object it belongs with.
    found: InstanceLocks | None = cloud.__dict__.get("_instance_locks")
    if found is None:
        found = cloud.__dict__["_instance_locks"] = InstanceLocks()
    return found
