"""The run-time handles every service and handler shares, built by the daemon (or a test).

Backends that only exist once `microcloud init` has run (Ceph, OVN, libvirt) are None
before; asking for one then is a clear error, not an AttributeError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from microcloudd.api.errors import Unavailable
from microcloudd.events import EventBus
from microcloudd.operations import OperationManager

if TYPE_CHECKING:
    from microcloudd.components.supervisor import Supervisor
    from microcloudd.db.database import Database
    from microcloudd.drivers.compute.base import ComputeDriver
    from microcloudd.drivers.network.base import NetworkDriver
    from microcloudd.drivers.storage.base import StorageDriver

_NOT_READY = "{what} is not available: this member is not initialised yet (run `microcloud init`)"


DEFAULT_POOL = "remote"  # init's default pool name, as in Canonical MicroCloud


@dataclass
class Cloud:
    state_dir: Path
    server_name: str
    events: EventBus
    operations: OperationManager
    db: Database | None = None
    storage: StorageDriver | None = None
    network: NetworkDriver | None = None
    compute: ComputeDriver | None = None
    supervisor: Supervisor | None = None
    # Facts the drivers need beside themselves (ceph mon address, secret uuid, OVS rundir...).
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def default_pool(self) -> str:
        """The storage pool init made (`storage.pool`), where a request names none."""
        return self.settings.get("storage.pool") or DEFAULT_POOL

    def need_db(self) -> Database:
        if self.db is None:
            raise Unavailable("The cluster database is not connected yet")
        return self.db

    def need_storage(self) -> StorageDriver:
        if self.storage is None:
            raise Unavailable(_NOT_READY.format(what="Storage (Ceph)"))
        return self.storage

    def need_network(self) -> NetworkDriver:
        if self.network is None:
            raise Unavailable(_NOT_READY.format(what="Networking (OVN)"))
        return self.network

    def need_compute(self) -> ComputeDriver:
        if self.compute is None:
            raise Unavailable(_NOT_READY.format(what="Compute (libvirt)"))
        return self.compute
