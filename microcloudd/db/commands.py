"""Write commands: each turns into OVSDB operations against the local replica.

Each command checks against the replica what the server will enforce anyway (keys, unique
indexes, references), so the common failures get a precise error. Each carries a write id
fixed for the life of the logical write: when a commit is retried after an ambiguous
outcome, a command that finds its own write id on the row knows it already landed.
Commands are built again from the replica at every attempt (`TxnContext` is per attempt).
"""

from __future__ import annotations

import uuid
from typing import Any

from microcloudd.api.errors import AlreadyExists, Conflict, InUse, NotFound
from microcloudd.db.codec import changed, to_wire, validated
from microcloudd.db.records import ALL_RECORDS, Record
from microcloudd.db.replica import Replica
from microcloudd.db.tables import WRITE_ID, table_of


def describe(cls: type[Record], key: Any) -> str:
    if isinstance(key, tuple):
        key = "/".join(describe_part(k) for k in key)
    return f"{cls.__table__} {key!r}" if not isinstance(key, str) else f"{cls.__table__} \"{key}\""


def describe_part(k: Any) -> str:
    return "/".join(k) if isinstance(k, tuple) else str(k)


def _where(ref: list[str]) -> list[list[Any]]:
    return [["_uuid", "==", ref]]


class TxnContext:
    """One attempt of a transaction: its operations, and the rows as it leaves them."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.ops: list[dict[str, Any]] = []
        self.checks: list[int] = []  # indexes of ops that must match exactly one row
        self.inserted: dict[tuple[str, Any], dict[str, Any]] = {}  # -> its insert op
        self.current: dict[tuple[str, Any], Record] = {}
        self.renamed: dict[tuple[str, Any], list[str]] = {}  # new key -> the row's wire UUID
        self.deleted: set[tuple[str, Any]] = set()

    def record(self, table: str, key: Any) -> Record | None:
        if (table, key) in self.deleted:
            return None
        rec = self.current.get((table, key))
        return rec if rec is not None else self.replica.get(table, key)

    def ref(self, table: str, key: Any) -> list[str]:
        """The wire UUID of a row this transaction can refer to; NotFound otherwise."""
        if (table, key) not in self.deleted:
            op = self.inserted.get((table, key))
            if op is not None:
                return ["named-uuid", op["uuid-name"]]
            renamed = self.renamed.get((table, key))
            if renamed is not None:
                return renamed
            u = self.replica.uuid_of(table, key)
            if u is not None:
                return ["uuid", u]
        raise NotFound(f"{describe(_record_of(table), key)} not found")

    def add(self, op: dict[str, Any], one_row: bool = False) -> None:
        if one_row:
            self.checks.append(len(self.ops))
        self.ops.append(op)


def _record_of(table: str) -> type[Record]:
    for r in ALL_RECORDS:
        if r.__table__ == table:
            return r
    raise KeyError(table)


class Command:
    def __init__(self, write_id: str) -> None:
        self.write_id = write_id
        self.attempts = 0
        self.result: Any = None

    def run(self, ctx: TxnContext) -> None:
        self.attempts += 1
        self.apply(ctx)

    def apply(self, ctx: TxnContext) -> None:
        raise NotImplementedError

    def landed(self, ctx: TxnContext, table: str, key: Any) -> bool:
        """This write is already in the database (an earlier attempt committed it)."""
        return (table, key) not in ctx.inserted and ctx.replica.write_id(table, key) == self.write_id


class Insert(Command):
    def __init__(self, write_id: str, record: Record, may_exist: bool) -> None:
        super().__init__(write_id)
        self.record = validated(record)
        self.may_exist = may_exist

    def apply(self, ctx: TxnContext) -> None:
        rec = self.record
        t = table_of(type(rec))
        key = rec.row_key()
        if ctx.record(t.name, key) is not None:
            if (t.name, key) in ctx.inserted:
                raise AlreadyExists(f"{describe(type(rec), key)} is inserted twice")
            if self.landed(ctx, t.name, key) or self.may_exist:
                self.result = rec
                return
            raise AlreadyExists(f"{describe(type(rec), key)} already exists")
        for index in t.indexes[1:]:
            values = tuple(getattr(rec, f) for f in index)
            for other in ctx.replica.by_uuid[t.name].values():
                if tuple(getattr(other, f) for f in index) == values:
                    what = ", ".join(f"{f} {v!r}" for f, v in zip(index, values, strict=True))
                    raise AlreadyExists(f"{describe(type(rec), other.row_key())} already has {what}")
        row = ctx.replica.codecs[t.name].to_columns(rec, ctx.ref)
        row[WRITE_ID] = self.write_id
        op = {"op": "insert", "table": t.name, "row": row, "uuid-name": f"row{len(ctx.ops)}"}
        ctx.add(op)
        ctx.inserted[(t.name, key)] = op
        ctx.current[(t.name, key)] = rec
        ctx.deleted.discard((t.name, key))
        self.result = rec


class Update(Command):
    def __init__(self, write_id: str, cls: type[Record], key: Any,
                 changes: dict[str, Any], expect: dict[str, Any] | None) -> None:
        super().__init__(write_id)
        self.cls, self.key, self.changes, self.expect = cls, key, changes, expect or {}

    def apply(self, ctx: TxnContext) -> None:
        t = table_of(self.cls)
        current = ctx.record(t.name, self.key)
        if current is None:
            raise NotFound(f"{describe(self.cls, self.key)} not found")
        if self.landed(ctx, t.name, self.key):
            self.result = current
            return
        ref = ctx.ref(t.name, self.key)
        committed = ctx.replica.get(t.name, self.key) if ref[0] == "uuid" else None
        for field, want in self.expect.items():
            have = getattr(current, field)
            if have != want:
                raise Conflict(f"{describe(self.cls, self.key)}: {field} is {have!r}, expected {want!r}")
            if committed is not None:
                # The server re-checks it, so a concurrent writer cannot slip in between.
                c = t.column(field)
                ctx.add({"op": "wait", "table": t.name, "timeout": 0, "where": _where(ref),
                         "columns": [c.name], "until": "==",
                         "rows": [{c.name: to_wire(c, getattr(committed, field), ctx.ref)}]})
        new = changed(current, self.changes)
        new_key = new.row_key()
        if new_key != self.key and ctx.record(t.name, new_key) is not None:
            raise AlreadyExists(f"{describe(self.cls, new_key)} already exists")
        columns = ctx.replica.codecs[t.name].to_columns(new, ctx.ref, self.changes)
        columns[WRITE_ID] = self.write_id
        op = ctx.inserted.get((t.name, self.key))
        if op is not None:  # inserted by this transaction: change what it inserts
            op["row"].update(columns)
        else:
            ctx.add({"op": "update", "table": t.name, "where": _where(ref), "row": columns}, one_row=True)
        if new_key != self.key:  # renamed: later commands find it under its new key
            if op is not None:
                ctx.inserted[(t.name, new_key)] = ctx.inserted.pop((t.name, self.key))
            else:
                ctx.renamed[(t.name, new_key)] = ref
            ctx.current.pop((t.name, self.key), None)
            ctx.deleted.add((t.name, self.key))
            ctx.deleted.discard((t.name, new_key))
        ctx.current[(t.name, new_key)] = new
        self.result = new


class Delete(Command):
    def __init__(self, write_id: str, cls: type[Record], key: Any, if_exists: bool) -> None:
        super().__init__(write_id)
        self.cls, self.key, self.if_exists = cls, key, if_exists
        self.retrying = False  # set when an earlier attempt may have landed

    def apply(self, ctx: TxnContext) -> None:
        t = table_of(self.cls)
        if ctx.record(t.name, self.key) is None:
            if self.if_exists or self.retrying or self.attempts > 1:
                return
            raise NotFound(f"{describe(self.cls, self.key)} not found")
        for child in ALL_RECORDS:
            for field, ref_table in child.__refs__.items():
                if ref_table != t.name:
                    continue
                for rec in ctx.replica.by_uuid[child.__table__].values():
                    gone = (child.__table__, rec.row_key()) in ctx.deleted
                    if getattr(rec, field) == self.key and not gone:
                        raise InUse(f"{describe(self.cls, self.key)} is used by "
                                    f"{describe(child, rec.row_key())}")
        ctx.add({"op": "delete", "table": t.name, "where": _where(ctx.ref(t.name, self.key))},
                one_row=True)
        ctx.deleted.add((t.name, self.key))
        ctx.current.pop((t.name, self.key), None)
        ctx.inserted.pop((t.name, self.key), None)


def new_write_id() -> str:
    return uuid.uuid4().hex
