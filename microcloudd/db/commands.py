"""The write commands run by ovsdbapp's transaction in the IDL thread.

Each command checks against the replica what the server will enforce anyway (keys, unique
indexes, references), so the common failures get a precise error. Each carries a write id
fixed for the life of the logical write: when ovsdbapp or we retry after an ambiguous
commit, a command that finds its own write id on the row knows it already landed.
"""

from __future__ import annotations

import uuid
from typing import Any

from microcloudd.api.errors import AlreadyExists, Conflict, InUse, NotFound
from microcloudd.db.codec import changed, validated
from microcloudd.db.records import ALL_RECORDS, Record
from microcloudd.db.replica import ReplicaIdl
from microcloudd.db.tables import WRITE_ID, table_of


def describe(cls: type[Record], key: Any) -> str:
    if isinstance(key, tuple):
        key = "/".join(describe_part(k) for k in key)
    return f"{cls.__table__} {key!r}" if not isinstance(key, str) else f"{cls.__table__} \"{key}\""


def describe_part(k: Any) -> str:
    return "/".join(k) if isinstance(k, tuple) else str(k)


class TxnContext:
    """Shared by the commands of one transaction attempt: rows inserted so far in it."""

    def __init__(self, idl: ReplicaIdl) -> None:
        self.idl = idl
        self.inserted: dict[tuple[str, Any], Any] = {}
        self.deleted: set[tuple[str, Any]] = set()

    def reset(self) -> None:
        self.inserted.clear()
        self.deleted.clear()

    def row(self, table: str, key: Any) -> Any:
        if (table, key) in self.deleted:
            return None
        return self.inserted.get((table, key)) or self.idl.row_for_key(table, key)

    def resolve_ref(self, table: str, key: Any) -> Any:
        row = self.row(table, key)
        if row is None:
            raise NotFound(f"{describe(_record_of(table), key)} not found")
        return row


def _record_of(table: str) -> type[Record]:
    for r in ALL_RECORDS:
        if r.__table__ == table:
            return r
    raise KeyError(table)


class Command:
    def __init__(self, ctx: TxnContext, write_id: str) -> None:
        self.ctx, self.write_id = ctx, write_id
        self.attempts = 0
        self.result: Any = None

    def run_idl(self, txn: Any) -> None:
        self.attempts += 1
        self.apply(txn)

    def apply(self, txn: Any) -> None:
        raise NotImplementedError

    def post_commit(self, txn: Any) -> None:
        pass

    def landed(self, row: Any) -> bool:
        return row is not None and getattr(row, WRITE_ID) == self.write_id


class Insert(Command):
    def __init__(self, ctx: TxnContext, write_id: str, record: Record, may_exist: bool) -> None:
        super().__init__(ctx, write_id)
        self.record = validated(record)
        self.may_exist = may_exist

    def apply(self, txn: Any) -> None:
        rec, ctx = self.record, self.ctx
        t = table_of(type(rec))
        existing = ctx.row(t.name, rec.row_key())
        if existing is not None:
            if (t.name, rec.row_key()) in ctx.inserted:
                raise AlreadyExists(f"{describe(type(rec), rec.row_key())} is inserted twice")
            if self.landed(existing) or self.may_exist:
                return
            raise AlreadyExists(f"{describe(type(rec), rec.row_key())} already exists")
        for index in t.indexes[1:]:
            values = tuple(getattr(rec, f) for f in index)
            for other in ctx.idl.by_uuid[t.name].values():
                if tuple(getattr(other, f) for f in index) == values:
                    what = ", ".join(f"{f} {v!r}" for f, v in zip(index, values, strict=True))
                    raise AlreadyExists(f"{describe(type(rec), other.row_key())} already has {what}")
        columns = ctx.idl.codecs[t.name].to_columns(rec, ctx.resolve_ref)
        row = txn.insert(ctx.idl.tables[t.name])
        for name, value in columns.items():
            setattr(row, name, value)
        setattr(row, WRITE_ID, self.write_id)
        ctx.inserted[(t.name, rec.row_key())] = row
        self.result = rec


class Update(Command):
    def __init__(self, ctx: TxnContext, write_id: str, cls: type[Record], key: Any,
                 changes: dict[str, Any], expect: dict[str, Any] | None) -> None:
        super().__init__(ctx, write_id)
        self.cls, self.key, self.changes, self.expect = cls, key, changes, expect or {}

    def apply(self, txn: Any) -> None:
        ctx, t = self.ctx, table_of(self.cls)
        row = ctx.row(t.name, self.key)
        if row is None:
            raise NotFound(f"{describe(self.cls, self.key)} not found")
        if self.landed(row):
            return
        codec = ctx.idl.codecs[t.name]
        current = codec.to_record(row)
        for field, want in self.expect.items():
            have = getattr(current, field)
            if have != want:
                raise Conflict(f"{describe(self.cls, self.key)}: {field} is {have!r}, expected {want!r}")
            # The server re-checks it, so a concurrent writer cannot slip in between.
            row.verify(t.column(field).name)
        new = changed(current, self.changes)
        if new.row_key() != current.row_key() and ctx.row(t.name, new.row_key()) is not None:
            raise AlreadyExists(f"{describe(self.cls, new.row_key())} already exists")
        columns = codec.to_columns(new, ctx.resolve_ref)
        for field in self.changes:
            name = t.column(field).name
            setattr(row, name, columns[name])
        setattr(row, WRITE_ID, self.write_id)
        self.result = new


class Delete(Command):
    def __init__(self, ctx: TxnContext, write_id: str, cls: type[Record], key: Any,
                 if_exists: bool) -> None:
        super().__init__(ctx, write_id)
        self.cls, self.key, self.if_exists = cls, key, if_exists
        self.retrying = False  # set when an earlier attempt may have landed

    def apply(self, txn: Any) -> None:
        ctx, t = self.ctx, table_of(self.cls)
        row = ctx.row(t.name, self.key)
        if row is None:
            if self.if_exists or self.retrying or self.attempts > 1:
                return
            raise NotFound(f"{describe(self.cls, self.key)} not found")
        for child in ALL_RECORDS:
            for field, ref_table in child.__refs__.items():
                if ref_table != t.name:
                    continue
                for rec in ctx.idl.by_uuid[child.__table__].values():
                    gone = (child.__table__, rec.row_key()) in ctx.deleted
                    if getattr(rec, field) == self.key and not gone:
                        raise InUse(f"{describe(self.cls, self.key)} is used by "
                                    f"{describe(child, rec.row_key())}")
        row.delete()
        ctx.deleted.add((t.name, self.key))


def new_write_id() -> str:
    return uuid.uuid4().hex
