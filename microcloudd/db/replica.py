"""The IDL side of the local replica: typed records kept current in ovsdbapp's thread.

`ReplicaIdl` is an ovsdbapp `OvsdbIdl` that, after every `run()` (so after a whole update
has been applied, with referenced rows present), converts the changed rows into records
and hands one batch to the asyncio loop with `call_soon_threadsafe`. The loop side
(`microcloudd.db.cache`) applies batches in order, so reads there need no thread hop.
Everything here runs in the IDL thread except `__init__`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ovs.db import idl as ovs_idl
from ovsdbapp.backend.ovs_idl import connection

from microcloudd.db.codec import RowCodec
from microcloudd.db.records import ALL_RECORDS, Record
from microcloudd.db.tables import table_of

log = logging.getLogger(__name__)

_ORDER = {r.__table__: i for i, r in enumerate(ALL_RECORDS)}  # referenced tables come first


@dataclass(frozen=True, slots=True)
class RowChange:
    table: str
    old: Record | None  # None: inserted
    new: Record | None  # None: deleted


@dataclass(frozen=True, slots=True)
class Batch:
    """What one IDL run changed; `reset` carries every row after a full resync instead."""

    changes: list[RowChange]
    reset: dict[str, list[Record]] | None = None


class ReplicaIdl(connection.OvsdbIdl):
    def __init__(self, remote: str, helper: ovs_idl.SchemaHelper, deliver: Callable[[Batch], None],
                 **kwargs: Any) -> None:
        super().__init__(remote, helper, **kwargs)
        self._deliver = deliver
        self._pending: list[tuple[str, str, Any]] = []
        self._cleared = True
        self.by_uuid: dict[str, dict[uuid.UUID, Record]] = {}
        self.uuid_by_key: dict[str, dict[Any, uuid.UUID]] = {}
        self.codecs: dict[str, RowCodec] = {}
        for rec in ALL_RECORDS:
            t = table_of(rec)
            if t.name in self.tables:
                self.by_uuid[t.name] = {}
                self.uuid_by_key[t.name] = {}
                self.codecs[t.name] = RowCodec(t, self.key_of_ref)
        self.flushes = 0  # number of batches handed over (tests, write barriers)

    # -- lookups for codecs and commands (IDL thread) --
    def key_of_ref(self, table: str, ref: uuid.UUID) -> Any:
        rec = self.by_uuid[table].get(ref)
        if rec is not None:
            return rec.row_key()
        row = self.tables[table].rows.get(ref)
        return self.codecs[table].to_record(row).row_key() if row is not None else None

    def row_for_key(self, table: str, key: Any) -> Any:
        u = self.uuid_by_key[table].get(key)
        return None if u is None else self.tables[table].rows.get(u)

    # -- hooks python-ovs calls --
    def cooperative_yield(self) -> None:
        """ovsdbapp sleeps(0) per row here (for eventlet); in our own thread that only slows a
        10,000-row sync by half a second."""

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        self._pending.append((row._table.name, event, row))

    def _Idl__clear(self) -> None:  # python-ovs drops all rows before a full resync
        super()._Idl__clear()
        self._cleared = True

    def run(self) -> bool:
        changed = bool(super().run())
        if self._cleared and self.state == self.IDL_S_MONITORING:
            self._resync()
        elif self._pending:
            self._flush()
        return changed

    # -- conversions --
    def _resync(self) -> None:
        self._pending.clear()
        self._cleared = False
        snapshot: dict[str, list[Record]] = {}
        for name in sorted(self.codecs, key=_ORDER.__getitem__):
            codec, by_uuid, by_key = self.codecs[name], self.by_uuid[name], self.uuid_by_key[name]
            by_uuid.clear()
            by_key.clear()
            for u, row in self.tables[name].rows.items():
                rec = codec.to_record(row)
                by_uuid[u] = rec
                by_key[rec.row_key()] = u
            snapshot[name] = list(by_uuid.values())
        self.flushes += 1
        self._deliver(Batch([], snapshot))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        pending.sort(key=lambda p: _ORDER.get(p[0], 99))
        changes: list[RowChange] = []
        gone: list[tuple[str, Any, uuid.UUID]] = []
        for name, event, row in pending:
            codec = self.codecs.get(name)
            if codec is None:
                continue
            by_uuid, by_key = self.by_uuid[name], self.uuid_by_key[name]
            old = by_uuid.get(row.uuid)
            if event == ovs_idl.ROW_DELETE:
                if old is None:
                    continue
                del by_uuid[row.uuid]
                gone.append((name, old.row_key(), row.uuid))
                changes.append(RowChange(name, old, None))
                continue
            new = codec.to_record(row)
            by_uuid[row.uuid] = new
            by_key[new.row_key()] = row.uuid
            changes.append(RowChange(name, old, new))
            if old is not None and old.row_key() != new.row_key():
                gone.append((name, old.row_key(), row.uuid))
                changes += self._rekey_children(name, row.uuid)
        # Keys of deleted rows are dropped last, so children deleted in the same update still
        # resolved their parent's key above.
        for name, key, u in gone:
            if self.uuid_by_key[name].get(key) == u:
                del self.uuid_by_key[name][key]
        if changes:
            self.flushes += 1
            self._deliver(Batch(changes))

    def _rekey_children(self, parent: str, parent_uuid: uuid.UUID) -> list[RowChange]:
        """Rows referencing a renamed row hold its key: convert them again."""
        out: list[RowChange] = []
        for rec_cls in ALL_RECORDS:
            for field, ref_table in rec_cls.__refs__.items():
                name = rec_cls.__table__
                if ref_table != parent or name not in self.codecs:
                    continue
                col = self.codecs[name].table.column(field).name
                for u, row in self.tables[name].rows.items():
                    if any(a.value == parent_uuid for a in row._data[col].values):
                        old = self.by_uuid[name][u]
                        new = self.codecs[name].to_record(row)
                        self.by_uuid[name][u] = new
                        del self.uuid_by_key[name][old.row_key()]
                        self.uuid_by_key[name][new.row_key()] = u
                        out.append(RowChange(name, old, new))
        return out
