"""A client derived from the API declaration: `call("instances_list", query=...)`.

Plain http.client over the Unix socket keeps the CLI quick to start; websockets (events,
console) use aiohttp, imported only by the commands that need it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec

from microcloudd.api import endpoints
from microcloudd.api.errors import MicrocloudError, Unavailable, from_wire

DEFAULT_DIR = "/var/lib/microcloud"


def socket_path() -> Path:
    """MICROCLOUD_DIR (like LXD_DIR), then the snap's and the default state dir."""
    env = os.environ.get("MICROCLOUD_DIR")
    if env:
        return Path(env) / "unix.socket"
    for d in ("/var/snap/microcloud/common", DEFAULT_DIR):
        if (Path(d) / "unix.socket").exists():
            return Path(d) / "unix.socket"
    return Path(DEFAULT_DIR) / "unix.socket"


class NotRunning(Unavailable):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    def __init__(self, path: Path | None = None, timeout: float | None = 600.0) -> None:
        self.path = path or socket_path()
        self._conn = _UnixConnection(str(self.path), timeout)

    def close(self) -> None:
        self._conn.close()

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            self._conn.request(method, url, body=body, headers=headers or {})
            resp = self._conn.getresponse()
            raw = resp.read()
        except (FileNotFoundError, ConnectionRefusedError):
            self._conn.close()
            raise NotRunning(
                f"microcloudd is not running (no daemon answers on {self.path}); start it with "
                f"`microcloudd --state-dir {self.path.parent}` (or `make up`, or `snap start microcloud`)"
            ) from None
        except PermissionError:
            raise MicrocloudError(
                f"permission denied on {self.path}: run as root or join the `microcloud` group"
            ) from None
        try:
            envelope: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise MicrocloudError(
                f"unexpected answer from microcloudd ({resp.status}): {raw[:200]!r}") from None
        if envelope.get("type") == "error":
            meta = envelope.get("metadata") or {}
            raise from_wire(meta.get("code"), envelope.get("error", "unknown error"), meta.get("details"))
        return envelope

    def call(self, name: str, /, *, body: Any = None, query: dict[str, Any] | None = None,
             wait: bool = False, **params: str) -> Any:
        """Call a declared endpoint; returns the response metadata.

        With wait=True an async endpoint's operation is waited for, and its failure raised.
        """
        op = endpoints.BY_NAME[name]
        url = op.url(**params)
        if query:
            if op.query is not None:  # validate against the declaration before sending
                msgspec.convert(query, op.query, strict=False)
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = None
        headers = {}
        if body is not None:
            if op.body is not None and not isinstance(body, op.body):
                body = msgspec.convert(body, op.body)
            data = msgspec.json.encode(body)
            headers["Content-Type"] = "application/json"
        envelope = self.request(op.method, url, data, headers)
        meta: Any = envelope.get("metadata")
        if envelope.get("type") == "async" and wait:
            return self.wait_operation(meta["id"])
        return meta

    def wait_operation(self, op_id: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            op: dict[str, Any] = self.call("operation_wait", id=op_id, query={"timeout": remaining})
            if op["status"] == "Failure":
                raise MicrocloudError(op.get("err") or "operation failed")
            if op["status"] == "Cancelled":
                raise MicrocloudError(op.get("err") or "operation cancelled")
            if op["status"] == "Success" or (deadline is not None and time.monotonic() >= deadline):
                return op
