"""The local replica: wire row updates turned into typed records, nothing else kept.

`Replica.apply(updates, full)` takes one `table-updates2` object (the reply of
`monitor_cond_since` or an `update3` notification), keeps per row only its record, its
references' UUIDs and its write id, and returns the `Batch` for `microcloudd.db.cache`.
Runs on the event loop (the session that feeds it is asyncio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from microcloudd.db.codec import RowCodec
from microcloudd.db.records import ALL_RECORDS, Record
from microcloudd.db.tables import WRITE_ID, table_of

_ORDER = {r.__table__: i for i, r in enumerate(ALL_RECORDS)}  # referenced tables come first


@dataclass(frozen=True, slots=True)
class RowChange:
    table: str
    old: Record | None  # None: inserted
    new: Record | None  # None: deleted


@dataclass(frozen=True, slots=True)
class Batch:
    """What one update changed; `reset` carries every row after a full resync instead."""

    changes: list[RowChange]
    reset: dict[str, list[Record]] | None = None


class Replica:
    def __init__(self) -> None:
        self.codecs = {r.__table__: RowCodec(table_of(r)) for r in ALL_RECORDS}
        self.by_uuid: dict[str, dict[str, Record]] = {t: {} for t in self.codecs}
        self.uuid_by_key: dict[str, dict[Any, str]] = {t: {} for t in self.codecs}
        self.write_ids: dict[str, dict[str, str]] = {t: {} for t in self.codecs}
        # UUIDs a row's reference columns hold (tables with references only).
        self.ref_uuids: dict[str, dict[str, tuple[str, ...]]] = {
            t: {} for t, c in self.codecs.items() if c.refs}
        self.version = 0  # updates applied

    def monitor_request(self) -> dict[str, Any]:
        """The monitor requests of every table: our columns and the write id."""
        return {t: [{"columns": [*c.names, WRITE_ID]}] for t, c in self.codecs.items()}

    # -- lookups (commands, codecs) --
    def key_of_ref(self, table: str, ref: str) -> Any:
        rec = self.by_uuid[table].get(ref)
        return None if rec is None else rec.row_key()

    def uuid_of(self, table: str, key: Any) -> str | None:
        return self.uuid_by_key[table].get(key)

    def get(self, table: str, key: Any) -> Record | None:
        u = self.uuid_by_key[table].get(key)
        return None if u is None else self.by_uuid[table].get(u)

    def write_id(self, table: str, key: Any) -> str | None:
        u = self.uuid_by_key[table].get(key)
        return None if u is None else self.write_ids[table].get(u)

    # -- updates --
    def apply(self, updates: dict[str, Any], full: bool) -> Batch:
        """Apply a `table-updates2`; `full`: it is the whole database (a resync)."""
        self.version += 1
        if full:
            return self._reset(updates)
        changes: list[RowChange] = []
        gone: list[tuple[str, Any, str]] = []
        for name in sorted(updates, key=lambda t: _ORDER.get(t, 99)):
            codec = self.codecs.get(name)
            if codec is None:
                continue
            by_uuid, by_key, wids = self.by_uuid[name], self.uuid_by_key[name], self.write_ids[name]
            refs = self.ref_uuids.get(name)
            for u, update in updates[name].items():
                old = by_uuid.get(u)
                if "delete" in update:
                    if old is None:
                        continue
                    del by_uuid[u]
                    wids.pop(u, None)
                    if refs is not None:
                        refs.pop(u, None)
                    gone.append((name, old.row_key(), u))
                    changes.append(RowChange(name, old, None))
                    continue
                row = update.get("modify")
                if row is not None:
                    if old is None:  # cannot happen on a consistent stream
                        continue
                    new, ref_uuids = codec.modified(old, refs[u] if refs is not None else (), row,
                                                    self.key_of_ref)
                    if WRITE_ID in row:
                        wids[u] = row[WRITE_ID]
                else:
                    row = update.get("insert") or update.get("initial") or {}
                    new, ref_uuids = codec.to_record(row, self.key_of_ref)
                    wids[u] = row.get(WRITE_ID, "")
                if refs is not None:
                    refs[u] = ref_uuids
                by_uuid[u] = new
                by_key[new.row_key()] = u
                changes.append(RowChange(name, old, new))
                if old is not None and old.row_key() != new.row_key():
                    gone.append((name, old.row_key(), u))
                    changes += self._rekey_children(name, u)
        # Keys of deleted rows are dropped last, so children deleted in the same update still
        # resolved their parent's key above.
        for name, key, u in gone:
            if self.uuid_by_key[name].get(key) == u:
                del self.uuid_by_key[name][key]
        return Batch(changes)

    def _reset(self, updates: dict[str, Any]) -> Batch:
        snapshot: dict[str, list[Record]] = {}
        for name in sorted(self.codecs, key=_ORDER.__getitem__):
            codec, by_uuid, by_key = self.codecs[name], self.by_uuid[name], self.uuid_by_key[name]
            wids, refs = self.write_ids[name], self.ref_uuids.get(name)
            by_uuid.clear()
            by_key.clear()
            wids.clear()
            if refs is not None:
                refs.clear()
            for u, update in updates.get(name, {}).items():
                row = update.get("initial") or update.get("insert") or {}
                rec, ref_uuids = codec.to_record(row, self.key_of_ref)
                by_uuid[u] = rec
                by_key[rec.row_key()] = u
                wids[u] = row.get(WRITE_ID, "")
                if refs is not None:
                    refs[u] = ref_uuids
            snapshot[name] = list(by_uuid.values())
        return Batch([], snapshot)

    def _rekey_children(self, parent: str, parent_uuid: str) -> list[RowChange]:
        """Rows referencing a renamed row hold its key: look it up again."""
        out: list[RowChange] = []
        for name, refs in self.ref_uuids.items():
            codec = self.codecs[name]
            if not any(t == parent for _, _, t in codec.refs):
                continue
            for u, ref_uuids in refs.items():
                if parent_uuid not in ref_uuids:
                    continue
                old = self.by_uuid[name][u]
                new = codec.rekeyed(old, ref_uuids, self.key_of_ref)
                self.by_uuid[name][u] = new
                del self.uuid_by_key[name][old.row_key()]
                self.uuid_by_key[name][new.row_key()] = u
                out.append(RowChange(name, old, new))
        return out
