"""LXD's response envelope: `sync`, `async` (202 + an operation) and `error`."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from microcloudd.api.server import Operation

_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json",
                        headers=headers)


def sync(metadata: Any, status: int = 200) -> web.Response:
    return _json({"type": "sync", "status": "Success", "status_code": 200, "operation": "",
                  "error_code": 0, "error": "", "metadata": metadata}, status)


def async_(op: Operation) -> web.Response:
    url = f"/1.0/operations/{op.id}"
    return _json({"type": "async", "status": "Operation created", "status_code": 100, "operation": url,
                  "error_code": 0, "error": "", "metadata": op}, 202, {"Location": url})


def error(status: int, message: str, metadata: dict[str, Any] | None = None) -> web.Response:
    return _json({"type": "error", "status": "", "status_code": 0, "operation": "",
                  "error_code": status, "error": message, "metadata": metadata}, status)
