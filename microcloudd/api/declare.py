"""The vocabulary the API is declared in: one `Op` per (method, path).

Each resource module (`api/server.py`, `api/instances.py`, ...) declares its types and a
tuple of Ops; `api/endpoints.py` gathers them. From that one declaration the daemon derives
its aiohttp routes and checks its handlers' signatures at start-up, the CLI derives its
client calls, and `rest/openapi.py` derives the OpenAPI document.

Handler contract (checked by `check_handler`): a coroutine method named `Op.name` taking
`ctx` then keyword parameters named exactly: every `{param}` of the path (str), `query`
when the Op has a query type, `body` when it has a body type.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

Kind = Literal["sync", "async", "websocket", "raw"]
Access = Literal["public", "local", "member"]
_PARAM = re.compile(r"{(\w+)}")


class Query(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Base of query-string types: fields with defaults, decoded from strings."""


class Recursion(Query):
    """LXD's `?recursion=`: 0 lists URLs, 1 full objects, 2 objects with their state."""

    recursion: int = 0
    filter: str = ""


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    name: str
    summary: str
    result: Any = None  # the type of `metadata` in the response (documentation + client decoding)
    body: Any = None  # a msgspec.Struct type, decoded and validated before the handler runs
    query: type[Query] | None = None
    kind: Kind = "sync"
    # public: anyone who can reach the socket/port may call it (GET /1.0);
    # local: the Unix socket (peer credentials checked) or a trusted client certificate;
    # member: cluster members only (mTLS with a member certificate).
    access: Access = "local"

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(_PARAM.findall(self.path))

    def url(self, **params: str) -> str:
        """The concrete path for these path parameters (quoted)."""
        from urllib.parse import quote

        missing = set(self.params) - set(params)
        if missing:
            raise TypeError(f"{self.name}: missing path parameter(s) {sorted(missing)}")
        return _PARAM.sub(lambda m: quote(str(params[m.group(1)]), safe=""), self.path)


def expected_parameters(op: Op) -> list[str]:
    names = list(op.params)
    if op.query is not None:
        names.append("query")
    if op.body is not None:
        names.append("body")
    return names


def check_handler(op: Op, handler: Callable[..., Any] | None) -> str | None:
    """Return why `handler` does not implement `op`, or None when it does."""
    if handler is None:
        return f"{op.method} {op.path}: no handler named {op.name!r}"
    if not inspect.iscoroutinefunction(handler):
        return f"{op.method} {op.path}: handler {op.name!r} is not a coroutine function"
    sig = inspect.signature(handler)
    got = [p.name for p in sig.parameters.values() if p.name not in ("self",)]
    if not got or got[0] != "ctx":
        return f"{op.method} {op.path}: handler {op.name!r} must take ctx first, takes {got}"
    want = expected_parameters(op)
    if sorted(got[1:]) != sorted(want):
        return f"{op.method} {op.path}: handler {op.name!r} takes {got[1:]}, the declaration says {want}"
    hints = typing.get_type_hints(handler)
    for pname, declared in (("body", op.body), ("query", op.query)):
        if declared is not None and hints.get(pname) is not declared:
            return (
                f"{op.method} {op.path}: handler {op.name!r} annotates {pname} as "
                f"{hints.get(pname)!r}, the declaration says {declared!r}"
            )
    return None
