"""How each record field is stored: derived once per record class from its annotations."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, get_args, get_origin

import msgspec

from microcloudd.db.records import BY_TABLE, Record

# Set by every write to a fresh id per logical write (kept across retries): a retry after an
# ambiguous commit recognises its own earlier write by it instead of failing or duplicating.
WRITE_ID = "write_id"

_ATOMS = {str: "string", int: "integer", float: "real", bool: "boolean"}


@dataclass(frozen=True)
class Column:
    field: str
    name: str
    kind: str  # atom, map, set, json, ref
    atom: str = "string"  # OVSDB atom type for atom/set kinds
    ref_table: str = ""
    default: Any = None


@dataclass(frozen=True)
class Table:
    name: str
    record: type[Record]
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...]  # every unique index, the key first

    def column(self, field: str) -> Column:
        for c in self.columns:
            if c.field == field:
                return c
        raise KeyError(field)


# Field names stored under another column name: python-ovs, which served this database first,
# could not have a `uuid` column (its rows carry a `uuid` attribute); existing databases keep it.
_RENAMED = {"uuid": "uuid_"}


def _column(cls: type[Record], f: msgspec.structs.FieldInfo) -> Column:
    col = _RENAMED.get(f.name, f.name)
    default = f.default if f.default is not msgspec.NODEFAULT else (
        f.default_factory() if f.default_factory is not msgspec.NODEFAULT else None)
    if f.name in cls.__refs__:
        return Column(f.name, col, "ref", "uuid", cls.__refs__[f.name], default)
    if f.name in cls.__json__:
        return Column(f.name, col, "json", "string", default=default)
    t = f.type
    if t in _ATOMS:
        return Column(f.name, col, "atom", _ATOMS[t], default=default)
    origin, args = get_origin(t), get_args(t)
    if origin is dict and args == (str, str):
        return Column(f.name, col, "map", default=default)
    if origin is list and args == (str,):
        return Column(f.name, col, "set", default=default)
    raise TypeError(f"{cls.__name__}.{f.name}: no OVSDB mapping for {t!r}; list it in __json__")


@functools.cache
def table_of(cls: type[Record]) -> Table:
    cols = tuple(_column(cls, f) for f in msgspec.structs.fields(cls))
    return Table(cls.__table__, cls, cols, cls.__key__, (cls.__key__, *cls.__unique__))


def table_named(name: str) -> Table:
    return table_of(BY_TABLE[name])
