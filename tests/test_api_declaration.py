"""The declaration is consistent, and the signature check catches every kind of drift."""

from __future__ import annotations

import msgspec
import pytest

from microcloudd.api import endpoints
from microcloudd.api.declare import Op, Query, check_handler
from microcloudd.rest.app import HandlerError, build_app
from microcloudd.rest.openapi import build


class Body(msgspec.Struct):
    name: str


class Q(Query):
    force: bool = False


OP = Op("POST", "/1.0/things/{name}/copy", "thing_copy", "Copy a thing", body=Body, query=Q)


def test_every_op_is_unique_and_well_formed() -> None:
    seen = set()
    for op in endpoints.ALL:
        assert (op.method, op.path) not in seen, op
        seen.add((op.method, op.path))
        assert op.path.startswith("/1.0"), op
        assert op.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}, op
    assert len(endpoints.BY_NAME) == len(endpoints.ALL), "handler names must be unique"


def test_url_quotes_parameters_and_requires_them() -> None:
    assert OP.url(name="a b/c") == "/1.0/things/a%20b%2Fc/copy"
    with pytest.raises(TypeError, match="missing path parameter"):
        OP.url()


def test_matching_handler_passes() -> None:
    class H:
        async def thing_copy(self, ctx: object, name: str, query: Q, body: Body) -> None: ...

    assert check_handler(OP, H().thing_copy) is None


@pytest.mark.parametrize("src, why", [
    ("async def thing_copy(self, ctx, name, body: Body): ...", "takes ['name', 'body']"),
    ("async def thing_copy(self, ctx, nom, query: Q, body: Body): ...", "the declaration says"),
    ("def thing_copy(self, ctx, name, query: Q, body: Body): ...", "not a coroutine"),
    ("async def thing_copy(self, name, query: Q, body: Body, ctx): ...", "must take ctx first"),
    ("async def thing_copy(self, ctx, name, query: Q, body: dict): ...", "annotates body"),
])
def test_drift_is_reported(src: str, why: str) -> None:
    ns: dict[str, object] = {"Body": Body, "Q": Q}
    exec(f"class H:\n    {src}", ns)
    handler = ns["H"]().thing_copy  # type: ignore[operator]
    assert why in (check_handler(OP, handler) or "")


def test_missing_handler_refuses_to_build() -> None:
    with pytest.raises(HandlerError, match="no handler named 'thing_copy'"):
        build_app([OP], [object()])


def test_openapi_covers_every_op() -> None:
    doc = build(endpoints.ALL, "test")
    ids = {m["operationId"] for p in doc["paths"].values() for m in p.values()}
    assert ids == {op.name for op in endpoints.ALL}
    assert doc["openapi"].startswith("3.")
    info = doc["paths"]["/1.0"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert info["properties"]["metadata"]["$ref"].endswith("/ServerInfo")
    assert "ServerInfo" in doc["components"]["schemas"]
