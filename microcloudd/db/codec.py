"""Turning IDL rows into typed records and records into IDL column values.

Runs in the IDL thread. Reads the committed `Datum`s directly (not `row.column`, which builds
generic Python values first) because a first sync of 10,000 rows goes through here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from microcloudd.api.errors import InvalidArgument
from microcloudd.db.records import Record
from microcloudd.db.tables import Column, Table

# Resolves a referenced row's UUID to that row's key (the value a record holds).
KeyOfRef = Callable[[str, uuid.UUID], Any]

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode


def _decoder(c: Column, key_of_ref: KeyOfRef) -> Callable[[Any], Any]:
    default = c.default
    if c.kind == "atom":
        def atom(d: Any) -> Any:
            for a in d.values:
                return a.value
            return default
        return atom
    if c.kind == "json":
        def js(d: Any) -> Any:
            for a in d.values:
                return _json_decode(a.value) if a.value else default
            return default
        return js
    if c.kind == "map":
        return lambda d: {k.value: v.value for k, v in d.values.items()}
    if c.kind == "set":
        return lambda d: sorted(k.value for k in d.values)
    ref_table = c.ref_table

    def ref(d: Any) -> Any:
        for a in d.values:
            return key_of_ref(ref_table, a.value)
        return default
    return ref


class RowCodec:
    """Converter for one table; `key_of_ref` is asked for the keys of referenced rows."""

    def __init__(self, table: Table, key_of_ref: KeyOfRef) -> None:
        self.table = table
        self._cols = [(c.name, c.field, _decoder(c, key_of_ref)) for c in table.columns]
        self._cls = table.record

    def to_record(self, row: Any) -> Record:
        data = row._data
        return self._cls(**{f: dec(data[name]) for name, f, dec in self._cols})

    def to_columns(self, record: Record, resolve_ref: Callable[[str, Any], Any]) -> dict[str, Any]:
        """IDL column values for `record`; `resolve_ref(table, key)` gives the referenced Row."""
        out: dict[str, Any] = {}
        for c in self.table.columns:
            v = getattr(record, c.field)
            if c.kind == "json":
                v = _json_encode(v).decode()
            elif c.kind == "ref":
                v = resolve_ref(c.ref_table, v)
            elif c.kind == "set":
                v = list(v)
            elif c.kind == "map":
                v = dict(v)
            elif c.atom == "real":
                v = float(v)
            out[c.name] = v
        return out


def validated(record: Record) -> Record:
    """`record` checked against its declared types (records are not validated on construction)."""
    cls = type(record)
    try:
        return msgspec.convert(msgspec.to_builtins(record), cls)
    except (msgspec.ValidationError, TypeError) as e:
        raise InvalidArgument(f"invalid {cls.__table__}: {e}") from e


def changed(record: Record, changes: dict[str, Any]) -> Record:
    """`record` with `changes` applied, validated; unknown fields are an InvalidArgument."""
    cls = type(record)
    fields = set(cls.__struct_fields__)
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise InvalidArgument(f"{cls.__table__} has no field {', '.join(unknown)}")
    return validated(msgspec.structs.replace(record, **changes))
