"""`call(client, op, ...)`: Client.call for endpoints with a `{name}` path parameter.

Client.call's own first parameter is called `name`, so `client.call("instance_get",
name="web1")` collides; until it is positional-only this does the same through the public
`request` and `wait_operation` of the client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec

from microcloud.client import Client
from microcloudd.api import endpoints


def call(client: Client, op_name: str, *, body: Any = None, query: dict[str, Any] | None = None,
         wait: bool = False, **params: str) -> Any:
    op = endpoints.BY_NAME[op_name]
    url = op.url(**params)
    if query:
        if op.query is not None:
            msgspec.convert(query, op.query, strict=False)
        url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
    data, headers = None, {}
    if body is not None:
        if op.body is not None and not isinstance(body, op.body):
            body = msgspec.convert(body, op.body)
        data = msgspec.json.encode(body)
        headers["Content-Type"] = "application/json"
    envelope = client.request(op.method, url, data, headers)
    meta: Any = envelope.get("metadata")
    if envelope.get("type") == "async" and wait:
        return client.wait_operation(meta["id"])
    return meta
