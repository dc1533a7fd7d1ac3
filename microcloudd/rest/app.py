"""Derive the aiohttp application from the API declaration.

Every declared Op becomes a route whose wrapper decodes the query and body into the
declared types, calls the handler, and wraps the result in LXD's envelope. Start-up fails
if any Op lacks a handler or a handler's signature differs from its declaration.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
from aiohttp import web

from microcloudd.api.declare import Op, check_handler
from microcloudd.api.errors import Forbidden, InvalidArgument, MicrocloudError
from microcloudd.api.server import Operation
from microcloudd.rest import envelope
from microcloudd.rest.access import Credentials, allowed, peer_credentials

log = logging.getLogger(__name__)


REQUEST_ID = web.RequestKey("request_id", str)
CREDS = web.RequestKey("creds", Credentials)


class Context:
    """Per-request facts handlers may need: the raw request, an id for the logs, the caller."""

    __slots__ = ("creds", "request", "request_id")

    def __init__(self, request: web.Request, request_id: str, creds: Credentials | None) -> None:
        self.request, self.request_id, self.creds = request, request_id, creds


class HandlerError(Exception):
    """The declaration and the handlers disagree: the daemon must not start."""


def resolve_handlers(ops: Iterable[Op], handler_objects: Iterable[object]) -> dict[str, Callable[..., Any]]:
    objects = list(handler_objects)
    found: dict[str, Callable[..., Any]] = {}
    problems = []
    for op in ops:
        owners = [o for o in objects if callable(getattr(o, op.name, None))]
        if len(owners) > 1:
            problems.append(f"{op.name}: implemented by several handler objects {owners}")
            continue
        handler = getattr(owners[0], op.name) if owners else None
        why = check_handler(op, handler)
        if why:
            problems.append(why)
        else:
            found[op.name] = handler  # type: ignore[assignment]
    if problems:
        raise HandlerError("the API declaration and its handlers disagree:\n  " + "\n  ".join(problems))
    return found


def _decode_query(op: Op, request: web.Request) -> Any:
    assert op.query is not None
    try:
        return msgspec.convert(dict(request.query), op.query, strict=False)
    except msgspec.ValidationError as e:
        raise InvalidArgument(f"Invalid query string: {e}") from None


async def _decode_body(op: Op, request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise InvalidArgument("A JSON request body is required")
    try:
        return msgspec.json.decode(raw, type=op.body)
    except msgspec.ValidationError as e:
        raise InvalidArgument(f"Invalid request: {e}") from None
    except msgspec.DecodeError as e:
        raise InvalidArgument(f"Invalid JSON in request body: {e}") from None


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route(op: Op, handler: Callable[..., Awaitable[Any]]) -> Route:
    params, has_query, has_body, kind = op.params, op.query is not None, op.body is not None, op.kind

    async def route(request: web.Request) -> web.StreamResponse:
        creds = request.get(CREDS)
        if not allowed(op.access, creds):
            raise Forbidden("Not authorized")
        kwargs: dict[str, Any] = {p: request.match_info[p] for p in params}
        if has_query:
            kwargs["query"] = _decode_query(op, request)
        if has_body:
            kwargs["body"] = await _decode_body(op, request)
        result = await handler(Context(request, request[REQUEST_ID], creds), **kwargs)
        if kind == "sync":
            return envelope.sync(result)
        if kind == "async":
            assert isinstance(result, Operation), f"{op.name} must return an Operation"
            return envelope.async_(result)
        return result  # websocket / raw: the handler built the response itself

    route.__name__ = op.name
    return route


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    request_id = request[REQUEST_ID] = uuid.uuid4().hex[:12]
    creds = peer_credentials(request)
    if creds is not None:
        request[CREDS] = creds
    try:
        return await handler(request)
    except MicrocloudError as e:
        meta = e.to_dict()
        meta["request_id"] = request_id
        return envelope.error(e.status, e.message, meta)
    except web.HTTPNotFound:
        return envelope.error(404, "not found", {"code": "not-found", "request_id": request_id})
    except web.HTTPMethodNotAllowed as e:
        return envelope.error(405, f"method {request.method} not allowed on {request.path}; allowed: "
                              + ", ".join(sorted(e.allowed_methods)),
                              {"code": "method-not-allowed", "request_id": request_id})
    except web.HTTPException as e:
        return envelope.error(e.status, e.reason, {"code": "http", "request_id": request_id})
    except Exception:
        log.exception("request %s %s %s failed", request_id, request.method, request.path)
        return envelope.error(500, f"Internal error (request id {request_id}): see the microcloudd log",
                              {"code": "internal", "request_id": request_id})


def build_app(ops: Iterable[Op], handler_objects: Iterable[object]) -> web.Application:
    ops = list(ops)
    handlers = resolve_handlers(ops, handler_objects)
    # client_max_size: image imports stream through their own handler; JSON bodies stay small.
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    for op in ops:
        app.router.add_route(op.method, op.path, _route(op, handlers[op.name]), name=op.name)
    return app
