"""The Microcloud OVSDB schema: generated from the record classes, shipped as a versioned file.

Change a record, bump VERSION, run `python -m microcloudd.db.schema` to rewrite
microcloud.ovsschema; the running database is converted online at the next start
(see microcloudd.db.upgrade). A test checks the file matches the records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from microcloudd.db.records import ALL_RECORDS, Record
from microcloudd.db.tables import WRITE_ID, Column, table_of

NAME = "Microcloud"
SCHEMA_PATH = Path(__file__).with_name("microcloud.ovsschema")


def _column_type(c: Column) -> dict[str, Any] | str:
    if c.kind in ("atom", "json"):
        return {"key": c.atom, "min": 1, "max": 1}
    if c.kind == "map":
        return {"key": "string", "value": "string", "min": 0, "max": "unlimited"}
    if c.kind == "set":
        return {"key": c.atom, "min": 0, "max": "unlimited"}
    assert c.kind == "ref"
    return {"key": {"type": "uuid", "refTable": c.ref_table, "refType": "strong"}, "min": 1, "max": 1}


def build_schema(version: str, records: Iterable[type[Record]] = ALL_RECORDS) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for rec in records:
        t = table_of(rec)
        cols = {c.name: {"type": _column_type(c)} for c in t.columns}
        cols[WRITE_ID] = {"type": {"key": "string", "min": 1, "max": 1}}
        tables[t.name] = {
            "columns": cols,
            # Roots: rows live until deleted, references never garbage-collect them.
            "isRoot": True,
            "indexes": [list(ix) for ix in t.indexes],
        }
    return {"name": NAME, "version": version, "tables": tables}


def shipped_schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_PATH.read_text()))


def shipped_version() -> str:
    return str(shipped_schema()["version"])


def write_schema(path: Path, version: str, records: Iterable[type[Record]] = ALL_RECORDS) -> None:
    path.write_text(json.dumps(build_schema(version, records), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    import sys

    write_schema(SCHEMA_PATH, sys.argv[1] if len(sys.argv) > 1 else shipped_version())
