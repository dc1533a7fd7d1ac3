"""`microcloud status` and `microcloud monitor`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from microcloud.client import Client
from microcloud.output import FORMATS, dump, table
from microcloudd.api.errors import MicrocloudError


def _status_text(s: dict[str, Any]) -> str:
    lines = [
        f"Server:          {s['server_name']} (microcloudd {s['version']}, pid {s['pid']}, "
        f"up {s['uptime']:.0f}s)",
        f"State dir:       {s['state_dir']}",
        f"Virtualization:  {s['virtualization']}"
        + ("  (software emulation: no usable /dev/kvm, guests are slow)" if s["virtualization"] == "tcg"
           else ""),
        f"Initialized:     {'yes' if s.get('initialized') else 'no (run `microcloud init`)'}",
    ]
    db = s.get("database")
    if db:
        lines.append(f"Database:        {db['role']}, schema {db.get('schema_version', '?')}, "
                     f"members: {', '.join(db.get('members') or []) or '-'}")
    comps = s.get("components") or []
    if comps:
        lines.append("Components:")
        lines.append(table([[c["name"], c["state"], c.get("pid") or "", c.get("restarts", 0),
                             "ok" if c.get("healthy") else "no", c.get("message", "")] for c in comps],
                           ["NAME", "STATE", "PID", "RESTARTS", "HEALTHY", "MESSAGE"]))
    for section in ("storage", "network"):
        if s.get(section):
            lines.append(f"{section.capitalize() + ':':<17}" +
                         ", ".join(f"{k}={_brief(v)}" for k, v in s[section].items()))
    return "\n".join(lines)


def _brief(v: Any) -> str:
    """Lists of objects (pools, networks) by name in the summary; `--format yaml` has it all."""
    if isinstance(v, list):
        return ",".join(str(x.get("name", x)) if isinstance(x, dict) else str(x) for x in v) or "-"
    return str(v)


@click.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_obj
def status(client: Client, fmt: str) -> None:
    """Show this member: daemon, database, components, storage and network."""
    s = client.call("server_status")
    click.echo(_status_text(s) if fmt == "table" else dump(s, fmt))


@click.command()
@click.option("--type", "types", multiple=True, type=click.Choice(["operation", "lifecycle", "logging"]),
              help="event types to show (repeatable; default: all)")
@click.option("--format", "fmt", type=click.Choice(["json", "yaml", "pretty"]), default="pretty",
              show_default=True)
@click.pass_obj
def monitor(client: Client, types: tuple[str, ...], fmt: str) -> None:
    """Follow the event stream (operations, lifecycle, logging) until interrupted."""
    path = str(client.path)
    asyncio.run(_monitor(path, ",".join(types), fmt))


async def _monitor(path: str, types: str, fmt: str) -> None:
    import aiohttp

    url = "http://localhost/1.0/events" + (f"?type={types}" if types else "")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            async with session.ws_connect(url) as ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = json.loads(msg.data)
                    if fmt == "json":  # one event per line, for piping into jq and friends
                        click.echo(json.dumps(event))
                    else:
                        click.echo(_event_line(event) if fmt == "pretty" else dump(event, fmt) + "\n---")
    except (aiohttp.ClientConnectorError, FileNotFoundError):
        raise MicrocloudError(f"microcloudd is not running (no daemon answers on {path})") from None
    except aiohttp.WSServerHandshakeError as e:
        raise MicrocloudError(f"the event stream was refused: {e.message}") from None


def _event_line(e: dict[str, Any]) -> str:
    m = e.get("metadata") or {}
    if e["type"] == "operation":
        detail = f"{m.get('description')} {m.get('status')} ({m.get('id')})"
        if m.get("err"):
            detail += f": {m['err']}"
    elif e["type"] == "lifecycle":
        detail = f"{m.get('action')} {m.get('source')}"
    else:
        detail = f"[{m.get('level')}] {m.get('message')}"
    return f"{e['timestamp']} {e['type']:<9} {detail}"


COMMANDS = [status, monitor]
