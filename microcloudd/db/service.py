"""The local Microcloud ovsdb-server: created as a one-member Raft cluster on first start,
reused on later starts, upgraded online to the shipped schema, run by the Supervisor.

    svc = DatabaseService(state_dir, supervisor, raft_address="tcp:10.0.0.1:6644")
    await svc.start()                    # server running, schema current
    db = await svc.connect()             # a Database on the local unix socket
    await svc.status()                   # DatabaseStatus for `microcloud status`
    await db.close(); await svc.stop()   # (supervisor.stop_all() stops it too)
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from microcloudd.api.errors import Internal, Unavailable
from microcloudd.api.server import DatabaseStatus
from microcloudd.components import ovsdb
from microcloudd.components.supervisor import Supervisor
from microcloudd.db.database import Database
from microcloudd.db.schema import NAME, SCHEMA_PATH

log = logging.getLogger(__name__)

COMPONENT = "database"
DEFAULT_RAFT_PORT = 6644


class DatabaseService:
    def __init__(self, state_dir: Path, supervisor: Supervisor, *,
                 raft_address: str = f"tcp:127.0.0.1:{DEFAULT_RAFT_PORT}",
                 remotes: tuple[str, ...] = (), schema_path: Path = SCHEMA_PATH) -> None:
        """`raft_address`: where this member's Raft listens (used only when the database file
        is created); `remotes`: extra client listeners, e.g. "pssl:6643:10.0.0.1"."""
        self.dir = Path(state_dir) / "database"
        self.db_path = self.dir / "microcloud.db"
        self.socket = self.dir / "db.sock"
        self.ctl = ovsdb.ctl_path(self.dir, COMPONENT)
        self.supervisor, self.raft_address = supervisor, raft_address
        self.remotes, self.schema_path = remotes, schema_path

    @property
    def remote(self) -> str:
        return f"unix:{self.socket}"

    async def start(self, within: float = 30.0) -> bool:
        """Start the server (creating the cluster on first start); returns True if it was
        created now. Waits until it leads (one member) and converts it to the shipped schema."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        created = await asyncio.to_thread(ovsdb.create_db, self.db_path, self.schema_path, self.raft_address)
        spec = ovsdb.server_spec(COMPONENT, [self.db_path], self.dir, self.socket, self.remotes)
        await self.supervisor.start(spec)
        status = await ovsdb.wait_for_leader([self.ctl], NAME, within)
        if status.role == "leader":
            await self.upgrade()
        log.info("cluster database %s (%s) at %s", "created" if created else "reused", status.role,
                 self.db_path)
        return created

    async def upgrade(self) -> bool:
        """Convert the live database to the shipped schema if it is older (data kept)."""
        converted = await asyncio.to_thread(ovsdb.convert_online, self.socket, self.schema_path)
        if converted:
            log.info("cluster database converted to schema %s", ovsdb.schema_version(self.schema_path))
        return converted

    async def connect(self, write_timeout: float = 10.0) -> Database:
        return await Database.connect(self.remote, write_timeout=write_timeout)

    async def stop(self) -> None:
        await self.supervisor.stop(COMPONENT)

    async def status(self) -> DatabaseStatus:
        try:
            st = await ovsdb.cluster_status_async(self.ctl, NAME)
            version = await asyncio.to_thread(ovsdb.served_schema_version, self.socket, NAME)
        except (Internal, Unavailable) as e:
            return DatabaseStatus(role="unknown", schema_version="", address=str(e))
        return DatabaseStatus(role=st.role, address=st.address, members=st.members,
                              schema_version=version, cluster_id=st.cluster_id)


async def database_status(service: DatabaseService) -> DatabaseStatus:
    return await service.status()
