"""The OpenAPI 3 document, derived from the same declaration as the routes and the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from microcloudd.api.declare import Op


def _envelope(kind: str, ref: dict[str, Any] | None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "type": {"type": "string", "enum": [kind]},
        "status": {"type": "string"},
        "status_code": {"type": "integer"},
        "operation": {"type": "string"},
        "error_code": {"type": "integer"},
        "error": {"type": "string"},
    }
    if ref is not None:
        props["metadata"] = ref
    return {"type": "object", "properties": props}


def build(ops: Iterable[Op], version: str) -> dict[str, Any]:
    ops = list(ops)
    types: list[Any] = []
    for op in ops:
        for t in (op.result, op.body):
            if t is not None and t not in types:
                types.append(t)
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in op.params
        ]
        if op.query is not None:
            (_qschema,), qcomp = msgspec.json.schema_components([op.query])
            props = qcomp[op.query.__name__]["properties"]
            params += [{"name": k, "in": "query", "required": False, "schema": v} for k, v in props.items()]
        entry: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "parameters": params,
                                 "x-access": op.access}
        if op.body is not None:
            entry["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": refs[op.body]}}}
        err = {"description": "Error", "content": {"application/json": {"schema": _envelope("error", None)}}}
        if op.kind == "async":
            ok = {"202": {"description": "Operation created",
                          "content": {"application/json": {"schema": _envelope("async", None)}}}}
        elif op.kind == "websocket":
            ok = {"101": {"description": "Switching to a websocket"}}
        elif op.kind == "raw":
            ok = {"200": {"description": "Raw response"}}
        else:
            ref = refs.get(op.result) if op.result is not None else None
            ok = {"200": {"description": "Success",
                          "content": {"application/json": {"schema": _envelope("sync", ref)}}}}
        entry["responses"] = {**ok, "default": err}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.0.3",
        "info": {"title": "microcloud API", "version": version,
                 "description": "LXD 1.0-compatible API of microcloudd"},
        "paths": paths,
        "components": {"schemas": components},
    }
