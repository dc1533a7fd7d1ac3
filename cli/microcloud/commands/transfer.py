"""Streaming file transfers over the daemon socket (image uploads, volume backups), with a
progress bar, and waiting for the operation an upload starts while showing its progress."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from microcloud.client import Client, _UnixConnection
from microcloudd.api.errors import MicrocloudError, NotFound, from_wire

CHUNK = 1 << 20


def _quiet() -> bool:
    """Progress bars only on a terminal: scripts get the result (or one error line) alone."""
    return not sys.stderr.isatty()


def _envelope(resp: Any) -> dict[str, Any]:
    raw = resp.read()
    try:
        env: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise MicrocloudError(f"unexpected answer from microcloudd ({resp.status}): {raw[:200]!r}") from None
    if env.get("type") == "error":
        meta = env.get("metadata") or {}
        raise from_wire(meta.get("code"), env.get("error", "unknown error"), meta.get("details"))
    return env


def _connect(client: Client, url: str, method: str) -> _UnixConnection:
    conn = _UnixConnection(str(client.path), 600.0)
    try:
        conn.putrequest(method, url)
    except (FileNotFoundError, ConnectionRefusedError):
        raise MicrocloudError(f"microcloudd is not running (no daemon answers on {client.path})") from None
    return conn


def upload(client: Client, url: str, path: Path, headers: dict[str, str], label: str) -> dict[str, Any]:
    """POST the file as the body; returns the envelope (an async one: the operation).

    The daemon may refuse before reading the body (an unknown pool, a taken name): then the
    send breaks off and its answer is read instead."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NotFound(f"File {path} not found") from None
    if not path.is_file():
        raise MicrocloudError(f"{path} is not a regular file")
    conn = _connect(client, url, "POST")
    try:
        for k, v in {**headers, "Content-Type": "application/octet-stream",
                     "Content-Length": str(size)}.items():
            conn.putheader(k, v)
        try:
            conn.endheaders()
            with open(path, "rb") as f, click.progressbar(length=size, label=label, file=sys.stderr,
                                                          show_eta=False, hidden=_quiet()) as bar:
                while chunk := f.read(CHUNK):
                    conn.send(chunk)
                    bar.update(len(chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _envelope(conn.getresponse())
    finally:
        conn.close()


def wait_with_progress(client: Client, op_id: str, label: str) -> dict[str, Any]:
    """Wait for an operation, printing its progress metadata (on a terminal) as it changes."""
    shown = ""
    tty = sys.stderr.isatty()
    while True:
        op: dict[str, Any] = client.call("operation_wait", id=op_id, query={"timeout": 0.5})
        meta = op.get("metadata") or {}
        text = next((str(v) for k, v in meta.items() if k.endswith("_progress")), "")
        if tty and text and text != shown:
            click.echo(f"\r{label}: {text}   ", nl=False, err=True)
            shown = text
        if op["status"] in ("Success", "Failure", "Cancelled"):
            if tty and shown:
                click.echo("", err=True)
            if op["status"] != "Success":
                raise MicrocloudError(op.get("err") or f"operation {op['status'].lower()}")
            return op
        time.sleep(0.05)


def download(client: Client, url: str, target: Path) -> int:
    """GET a raw file into `target` (written to a temporary name, renamed when complete)."""
    conn = _connect(client, url, "GET")
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        conn.endheaders()
        resp = conn.getresponse()
        if resp.status != 200:
            _envelope(resp)
            raise MicrocloudError(f"unexpected answer from microcloudd ({resp.status})")
        total = int(resp.headers.get("Content-Length", "0"))
        done = 0
        with open(tmp, "wb") as f, click.progressbar(length=total or 1, label="Exporting", file=sys.stderr,
                                                     show_eta=False, hidden=_quiet()) as bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
        if total and done != total:
            raise MicrocloudError(f"The export ended early ({done} of {total} bytes)")
        tmp.rename(target)
        return done
    finally:
        conn.close()
        tmp.unlink(missing_ok=True)
