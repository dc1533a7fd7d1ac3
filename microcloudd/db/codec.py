"""Turning OVSDB wire rows into typed records, and records into wire column values.

Wire values (RFC 7047): atoms as JSON scalars, a UUID as ["uuid", "..."], a set as
["set", [...]] or its one element alone, a map as ["map", [[k, v], ...]]. A "modify" row
update carries, per changed column, the new value of a scalar column, the elements to toggle
of a set and, for a map, pairs to add, change (other value) or remove (same value).
Only what our schema uses is handled: scalars with min = max = 1, string sets and maps.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from microcloudd.api.errors import InvalidArgument
from microcloudd.db.records import Record
from microcloudd.db.tables import Column, Table

# Resolves a referenced row's UUID to that row's key (the value a record holds).
KeyOfRef = Callable[[str, str], Any]
# Gives the wire UUID (["uuid", u] or ["named-uuid", n]) of the row of `table` named `key`.
RefOfKey = Callable[[str, Any], list[str]]

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode


# Records of one table repeat the same short strings: config keys, statuses, member names, image
# fingerprints, device values. Decoded, each would be a copy of its own (~50-110 bytes); shared,
# they cost one. Longer strings (JSON documents, descriptions) are left alone: rarely shared,
# and the interned table would keep an entry for each.
SHARED_MAX = 64
_intern = sys.intern


def shared(v: Any) -> Any:
    """`v` with its short strings interned, containers rebuilt (decoded JSON, map keys)."""
    if type(v) is str:
        return _intern(v) if len(v) <= SHARED_MAX else v
    if type(v) is dict:
        return {shared(k): shared(x) for k, x in v.items()}
    if type(v) is list:
        return [shared(x) for x in v]
    return v


def set_elements(v: Any) -> list[Any]:
    return list(v[1]) if isinstance(v, list) and v and v[0] == "set" else [v]


def map_pairs(v: Any) -> dict[Any, Any]:
    """Keys shared (they repeat across rows), values as they come (mostly each row's own)."""
    return {shared(k): x for k, x in v[1]}


def wire_uuid(v: Any) -> str:
    """The UUID of a wire reference (["uuid", u])."""
    return str(v[1])


def _decoder(c: Column) -> Callable[[Any], Any]:
    """Wire value -> record value, for every kind but references (resolved by the caller)."""
    default = c.default
    if c.kind == "json":
        return lambda v: shared(_json_decode(v)) if v else copy.deepcopy(default)
    if c.kind == "map":
        return map_pairs
    if c.kind == "set":
        return lambda v: sorted(shared(e) for e in set_elements(v))
    if c.atom == "real":
        return float
    if c.atom == "string":
        return shared
    return lambda v: v


def _diff(c: Column, decode: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    """(current record value, "modify" wire value) -> new record value."""
    if c.kind == "set":
        def toggle(cur: list[Any], v: Any) -> list[Any]:
            return sorted(set(cur).symmetric_difference(shared(e) for e in set_elements(v)))
        return toggle
    if c.kind == "map":
        def merge(cur: dict[Any, Any], v: Any) -> dict[Any, Any]:
            new = dict(cur)
            for k, x in v[1]:
                if new.get(k, _ABSENT) == x:
                    del new[k]
                else:
                    new[shared(k)] = x
            return new
        return merge
    return lambda cur, v: decode(v)


_ABSENT = object()
_NO_UUID = "00000000-0000-0000-0000-000000000000"
_ATOM_DEFAULTS: dict[str, Any] = {"string": "", "integer": 0, "real": 0.0, "boolean": False}


def wire_default(c: Column) -> Callable[[], Any]:
    """Makes the record value of a column holding OVSDB's default for its type (fresh
    containers: records must not share a mutable default)."""
    if c.kind == "json":
        return lambda: copy.deepcopy(c.default)
    if c.kind == "map":
        return dict
    if c.kind == "set":
        return list
    value = _ATOM_DEFAULTS[c.atom]
    return lambda: value


class RowCodec:
    """Converter for one table. Reference columns hold UUIDs on the wire and keys in records:
    the caller passes `key_of_ref`, and gets the references' UUIDs back beside the record."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.names = [c.name for c in table.columns]
        self._cls = table.record
        self._plain = [(c.name, c.field, _decoder(c), wire_default(c))
                       for c in table.columns if c.kind != "ref"]
        self._diffs = {c.name: (c.field, _diff(c, _decoder(c))) for c in table.columns if c.kind != "ref"}
        self.refs = [(c.name, c.field, c.ref_table) for c in table.columns if c.kind == "ref"]

    def to_record(self, row: dict[str, Any], key_of_ref: KeyOfRef) -> tuple[Record, tuple[str, ...]]:
        """A full wire row -> (record, UUIDs of its references in `self.refs` order)."""
        # Columns holding their type's default are left out of "insert" and "initial" rows.
        fields = {f: dec(row[name]) if name in row else default()
                  for name, f, dec, default in self._plain}
        ref_uuids = tuple(wire_uuid(row[name]) if name in row else _NO_UUID for name, _, _ in self.refs)
        for (_, f, table), u in zip(self.refs, ref_uuids, strict=True):
            fields[f] = key_of_ref(table, u)
        return self._cls(**fields), ref_uuids

    def modified(self, rec: Record, ref_uuids: tuple[str, ...], diff: dict[str, Any],
                 key_of_ref: KeyOfRef) -> tuple[Record, tuple[str, ...]]:
        """`rec` with a "modify" row update applied."""
        changes = {}
        for name, value in diff.items():
            d = self._diffs.get(name)
            if d is not None:
                changes[d[0]] = d[1](getattr(rec, d[0]), value)
        if self.refs:
            uuids = list(ref_uuids)
            for i, (name, f, table) in enumerate(self.refs):
                if name in diff:
                    uuids[i] = wire_uuid(diff[name])
                    changes[f] = key_of_ref(table, uuids[i])
            ref_uuids = tuple(uuids)
        return (msgspec.structs.replace(rec, **changes) if changes else rec), ref_uuids

    def rekeyed(self, rec: Record, ref_uuids: tuple[str, ...], key_of_ref: KeyOfRef) -> Record:
        """`rec` with its references' keys looked up again (a referenced row was renamed)."""
        return msgspec.structs.replace(rec, **{f: key_of_ref(table, u)
                                              for (_, f, table), u in zip(self.refs, ref_uuids, strict=True)})

    def to_columns(self, record: Record, ref_of_key: RefOfKey,
                   fields: Any = None) -> dict[str, Any]:
        """Wire column values of `record` (only those of `fields`, if given)."""
        out: dict[str, Any] = {}
        for c in self.table.columns:
            if fields is not None and c.field not in fields:
                continue
            out[c.name] = to_wire(c, getattr(record, c.field), ref_of_key)
        return out


def to_wire(c: Column, v: Any, ref_of_key: RefOfKey) -> Any:
    if c.kind == "json":
        return _json_encode(v).decode()
    if c.kind == "ref":
        return ref_of_key(c.ref_table, v)
    if c.kind == "set":
        return ["set", sorted(v)]
    if c.kind == "map":
        return ["map", [[k, x] for k, x in v.items()]]
    if c.atom == "real":
        return float(v)
    return v


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
