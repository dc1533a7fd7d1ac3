"""`microcloud image import|list|show|delete|alias`."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click

from microcloud.client import Client
from microcloud.commands.transfer import upload, wait_with_progress
from microcloud.output import dump, format_option, show, show_format_option
from microcloudd.api import images as api
from microcloudd.api.endpoints import BY_NAME


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}MiB"


@click.group("image")
def image() -> None:
    """Import, list and delete disk images (qcow2 or raw) and their aliases."""


@image.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--alias", default="", help="an alias to give the image")
@click.option("--pool", default="", help="the storage pool to keep it in (default: the one init made)")
@click.option("--public", is_flag=True, help="make the image public")
@click.option("--property", "props", multiple=True, metavar="KEY=VALUE", help="an image property")
@click.pass_obj
def import_(client: Client, file: Path, alias: str, pool: str, public: bool, props: tuple[str, ...]) -> None:
    """Import FILE (qcow2 or raw, detected from its content) as an image."""
    pairs: list[tuple[str, str]] = []
    for p in props:
        if "=" not in p:
            raise click.BadParameter(f"{p!r}: use KEY=VALUE", param_hint="--property")
        k, v = p.split("=", 1)
        pairs.append((k, v))
    headers = {api.H_FILENAME: quote(file.name), api.H_PUBLIC: "1" if public else "0",
               api.H_PROPERTIES: urlencode(pairs)}
    if pool:
        headers[api.H_POOL] = pool
    if alias:
        headers[api.H_ALIAS] = alias
    env = upload(client, BY_NAME["image_import"].url(), file, headers, "Uploading")
    op = wait_with_progress(client, env["metadata"]["id"], "Importing")
    fp = op["metadata"]["fingerprint"]
    click.echo(f"Image imported with fingerprint: {fp}")


@image.command("list")
@format_option
@click.pass_obj
def list_(client: Client, fmt: str) -> None:
    """List images."""
    items: list[dict[str, Any]] = client.call("images_list", query={"recursion": 1})
    show(items, fmt, [("ALIAS", lambda i: [a["name"] for a in i["aliases"]]),
                      ("FINGERPRINT", lambda i: i["fingerprint"][:12]),
                      ("FORMAT", lambda i: i["format"]), ("SIZE", lambda i: _mib(i["size"])),
                      ("POOL", lambda i: i["pool"]), ("FILENAME", lambda i: i["filename"]),
                      ("UPLOADED", lambda i: i["uploaded_at"])])


@image.command("show")
@click.argument("ref")
@show_format_option
@click.pass_obj
def show_(client: Client, ref: str, fmt: str) -> None:
    """Show an image (alias, fingerprint or unique fingerprint prefix: the daemon resolves it)."""
    click.echo(dump(client.call("image_get", fingerprint=ref), fmt))


@image.command("delete")
@click.argument("ref")
@click.option("--force", is_flag=True, help="also if disks are cloned from it (they become copies)")
@click.pass_obj
def delete(client: Client, ref: str, force: bool) -> None:
    """Delete an image."""
    client.call("image_delete", fingerprint=ref, query={"force": int(force)}, wait=True)
    click.echo(f"Image {ref} deleted")


@image.group("alias")
def alias() -> None:
    """Manage image aliases."""


@alias.command("create")
@click.argument("name")
@click.argument("target")
@click.option("--description", default="")
@click.pass_obj
def alias_create(client: Client, name: str, target: str, description: str) -> None:
    """Create alias NAME for image TARGET (fingerprint, prefix or alias)."""
    client.call("image_alias_create", body={"name": name, "target": target, "description": description})
    click.echo(f"Alias {name} created")


@alias.command("delete")
@click.argument("name")
@click.pass_obj
def alias_delete(client: Client, name: str) -> None:
    """Delete an alias (the image stays)."""
    client.call("image_alias_delete", alias=name)
    click.echo(f"Alias {name} deleted")


@alias.command("list")
@format_option
@click.pass_obj
def alias_list(client: Client, fmt: str) -> None:
    """List aliases."""
    items: list[dict[str, Any]] = client.call("image_aliases_list", query={"recursion": 1})
    show(items, fmt, [("ALIAS", lambda a: a["name"]), ("FINGERPRINT", lambda a: a["target"][:12]),
                      ("DESCRIPTION", lambda a: a["description"])])


COMMANDS = [image]
