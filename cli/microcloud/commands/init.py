"""`microcloud init`: questions (default), --preseed FILE, or --auto; progress per step."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from microcloud.client import Client
from microcloud.output import dump, table
from microcloudd.api.errors import MicrocloudError
from microcloudd.api.init import InitRequest


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"


def _primary_address() -> str:
    """The address the host would use to reach the outside (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _availability(d: dict[str, Any]) -> str:
    if d.get("in_use"):
        return f"in use: {d['in_use']}"
    if d.get("contents"):
        return f"holds {d['contents']} (needs wipe)"
    return "read-only" if d.get("read_only") else "free"


def _disks_table(disks: list[dict[str, Any]]) -> str:
    return table([[d["path"], d["type"], _size(d["size"]), d.get("model", ""), _availability(d)]
                  for d in disks], ["PATH", "TYPE", "SIZE", "MODEL", "AVAILABLE"])


def _ask(client: Client) -> str:
    """Interactive questions → a preseed text (validated by the daemon like any other)."""
    plan: dict[str, Any] = {}
    plan["member"] = click.prompt("Member name", default=socket.gethostname().split(".")[0])
    plan["address"] = click.prompt("Address other members reach this one at", default=_primary_address())
    storage: dict[str, Any] = {}
    ext = click.prompt("Path to the ceph.conf of an existing Ceph cluster (empty: run our own)", default="",
                       show_default=False)
    if ext:
        keyring = click.prompt("Its keyring", default=str(Path(ext).with_name("ceph.client.admin.keyring")))
        user = click.prompt("Ceph user", default="admin")
        storage["ceph"] = {"conf": ext, "keyring": keyring, "user": user}
    else:
        disks = client.call("init_disks")
        free = [d for d in disks if not d.get("in_use") and not d.get("read_only")]
        if disks:
            click.echo(_disks_table(disks))
        chosen = ""
        if free:
            chosen = click.prompt("Disks (or partitions) for Ceph, comma-separated "
                                  "(empty: a file-backed OSD)", default="", show_default=False)
        if chosen.strip():
            storage["disks"] = [d.strip() for d in chosen.split(",") if d.strip()]
            full = [d["path"] for d in disks if d["path"] in storage["disks"] and d.get("contents")]
            if full and click.confirm(f"Erase everything on {', '.join(full)}?", default=False):
                storage["wipe"] = True
        else:
            storage["file_osd_size"] = click.prompt("Size of the file-backed OSD (sparse)", default="20GiB")
    storage["pool"] = click.prompt("Default storage pool", default="remote")
    plan["storage"] = storage
    network: dict[str, Any] = {}
    network["uplink"] = click.prompt("Uplink: `nat` (the host's own connection) or an unused interface "
                                     "wired to the upstream network", default="nat")
    if network["uplink"] != "nat":
        network["uplink_gateway"] = click.prompt("Upstream router's address/prefix on it (e.g. 192.0.2.1/24)")
        network["uplink_range"] = click.prompt("Addresses our routers may take there (e.g. "
                                               "192.0.2.100-192.0.2.199)")
        dns = click.prompt("Name servers for instances, comma-separated", default="", show_default=False)
        network["uplink_dns"] = [a.strip() for a in dns.split(",") if a.strip()]
    network["subnet"] = click.prompt("Default network gateway/prefix (empty: pick a free one)", default="",
                                     show_default=False)
    network["name"] = click.prompt("Default network name", default="default")
    plan["network"] = network
    return yaml.safe_dump(plan, sort_keys=False)


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text()
    except OSError as e:
        raise MicrocloudError(f"cannot read the preseed file {name}: {e.strerror}") from None


def _follow(client: Client, op_id: str) -> dict[str, Any]:
    """Print each step as it starts and ends; return the finished operation."""
    shown: dict[str, str] = {}
    while True:
        op: dict[str, Any] = client.call("operation_wait", id=op_id, query={"timeout": 1})
        steps = (op.get("metadata") or {}).get("steps") or []
        for i, s in enumerate(steps, 1):
            if shown.get(s["name"]) == s["state"] or s["state"] == "pending":
                continue
            if s["state"] == "running":
                click.echo(f"[{i}/{len(steps)}] {s['description']} ...")
            elif s["state"] == "done":
                click.echo(f"[{i}/{len(steps)}] {s['description']}: done")
            elif s["state"] == "failed":
                click.echo(f"[{i}/{len(steps)}] {s['description']}: FAILED", err=True)
            shown[s["name"]] = s["state"]
        if op["status"] in ("Success", "Failure", "Cancelled"):
            return op


@click.command()
@click.option("--auto", is_flag=True, help="no questions: a file-backed OSD, the host NAT uplink, defaults")
@click.option("--preseed", type=click.Path(dir_okay=False, allow_dash=True),
              help="a YAML plan (see doc/preseed.md); - reads standard input")
@click.option("--resume", is_flag=True, help="continue an interrupted init with its recorded plan")
@click.option("--dry-run", is_flag=True, help="validate the plan and show it; change nothing")
@click.option("--show", is_flag=True, help="show the recorded plan and the steps done")
@click.option("--list-disks", is_flag=True, help="list the block devices Ceph could use")
@click.pass_obj
def init(client: Client, auto: bool, preseed: str | None, resume: bool, dry_run: bool, show: bool,
         list_disks: bool) -> None:
    """Turn this machine into a working single-member cloud (resumable: run it again after a failure)."""
    if list_disks:
        click.echo(_disks_table(client.call("init_disks")))
        return
    if show:
        click.echo(dump(client.call("init_get"), "yaml"))
        return
    if sum(map(bool, (auto, preseed, resume))) > 1:
        raise click.UsageError("give at most one of --auto, --preseed and --resume")
    if preseed:
        text = _read(preseed)
        req = InitRequest(preseed=text, source=preseed if preseed != "-" else "<stdin>", dry_run=dry_run)
    elif auto or resume:
        req = InitRequest(auto=True, dry_run=dry_run)
    else:
        state = client.call("init_get")
        if state.get("initialized"):
            raise MicrocloudError("This member is already initialised (see `microcloud status`)")
        question = f"An earlier init stopped at step {state.get('failed_step') or '?'}; continue it?"
        if state.get("plan") and click.confirm(question, default=True):
            req = InitRequest(auto=True)
        else:
            req = InitRequest(preseed=_ask(client), source="answers", dry_run=dry_run)
    started = time.monotonic()
    meta = client.call("init_run", body=req)
    op = _follow(client, meta["id"])
    if op["status"] != "Success":
        raise MicrocloudError(op.get("err") or "init failed")
    if dry_run:
        click.echo(dump((op.get("metadata") or {}).get("plan"), "yaml"))
        return
    click.echo(f"Initialised in {time.monotonic() - started:.0f}s. Next: `microcloud status`, "
               "`microcloud image import FILE --alias NAME`, `microcloud launch IMAGE NAME`.")


COMMANDS = [init]
