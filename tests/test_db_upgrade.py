"""Online schema upgrade: a newer schema converts the live database in place, data kept."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from microcloudd.components import ovsdb
from microcloudd.components.supervisor import Supervisor
from microcloudd.db.database import Database
from microcloudd.db.records import Image, ImageAlias, Instance
from microcloudd.db.schema import NAME, build_schema, shipped_version
from microcloudd.db.service import DatabaseService
from tests.fixtures.db import free_port


def schema_v2(path: Path) -> Path:
    """The shipped schema plus a column, as the next release might add."""
    schema = build_schema("99.0.0")
    schema["tables"]["Instance"]["columns"]["architecture"] = {"type": {"key": "string", "min": 0, "max": 1}}
    path.write_text(json.dumps(schema))
    return path


async def test_upgrade_keeps_data_and_live_clients(tmp_path: Path) -> None:
    sup = Supervisor()
    svc = DatabaseService(tmp_path, sup, raft_address=f"tcp:127.0.0.1:{free_port()}")
    try:
        await svc.start()
        assert (await svc.status()).schema_version == shipped_version()
        db = await svc.connect()
        async with db.transaction() as txn:
            txn.insert(Instance(name="vm1", config={"limits.cpu": "2"}, profiles=["b", "a"]))
            txn.insert(Image(fingerprint="e" * 64))
            txn.insert(ImageAlias(name="deb", image="e" * 64))

        v2 = schema_v2(tmp_path / "v2.ovsschema")
        upgraded = DatabaseService(tmp_path, sup, schema_path=v2)
        assert await upgraded.upgrade() is True
        assert await upgraded.upgrade() is False  # idempotent
        st = await upgraded.status()
        assert st.schema_version == "99.0.0" and st.role == "leader"

        # The data is there, for a new client and through the new column's table.
        fresh = await Database.connect(svc.remote)
        assert fresh.get(Instance, "vm1").profiles == ["b", "a"]
        assert fresh.get(ImageAlias, "deb").image == "e" * 64
        out = await asyncio.to_thread(
            subprocess.run, ["ovsdb-client", "-f", "json", "dump", svc.remote, NAME, "Instance", "name",
                             "architecture"], capture_output=True, text=True, check=True)
        assert "vm1" in out.stdout and "architecture" in out.stdout
        # A client connected before the conversion keeps working.
        await db.insert(Instance(name="vm2"))
        assert fresh.get_or_none(Instance, "vm2") is not None or await _eventually(fresh, "vm2")
        await fresh.close()
        await db.close()
        assert ovsdb.schema_version(v2) == "99.0.0"
    finally:
        await sup.stop_all()


async def _eventually(db: Database, name: str) -> bool:
    for _ in range(100):
        if db.get_or_none(Instance, name) is not None:
            return True
        await asyncio.sleep(0.02)
    return False
