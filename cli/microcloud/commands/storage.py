"""`microcloud storage list|show|info|create|delete|set` and `microcloud storage volume ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from microcloud.client import Client
from microcloud.commands.transfer import download, upload, wait_with_progress
from microcloud.output import dump, format_option, show, show_format_option
from microcloudd.api.endpoints import BY_NAME
from microcloudd.api.errors import NotFound
from microcloudd.api.storage import parse_size


def default_pool(client: Client) -> str:
    """The pool a volume command means when it names none: the default profile's root disk
    pool (where instances go), else the only pool there is."""
    try:
        devices = client.call("profile_get", name="default").get("devices") or {}
    except NotFound:
        devices = {}
    for dev in devices.values():
        if dev.get("type") == "disk" and dev.get("path") == "/" and dev.get("pool"):
            return str(dev["pool"])
    pools = client.call("storage_pools_list")
    if len(pools) == 1:
        return str(pools[0]).rsplit("/", 1)[-1]
    raise click.UsageError(f"name the storage pool with --pool: there are {len(pools)} pools and the "
                           "default profile has no root disk")


def _pool_or_default(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value or ctx.resilient_parsing:
        return value
    return default_pool(ctx.obj)


pool_option = click.option("--pool", default=None, callback=_pool_or_default,
                           help="the storage pool [default: the default profile's root disk pool]")


def _mib(n: int | str) -> str:
    return f"{int(n) / (1 << 20):.1f}MiB"


def _key_values(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise click.BadParameter(f"{p!r}: use KEY=VALUE")
        k, v = p.split("=", 1)
        out[k] = v
    return out


@click.group("storage")
def storage() -> None:
    """Manage storage pools (Ceph RBD) and custom volumes."""


@storage.command("list")
@format_option
@click.pass_obj
def list_(client: Client, fmt: str) -> None:
    """List storage pools."""
    items: list[dict[str, Any]] = client.call("storage_pools_list", query={"recursion": 1})
    show(items, fmt, [("NAME", lambda p: p["name"]), ("DRIVER", lambda p: p["driver"]),
                      ("DESCRIPTION", lambda p: p["description"]), ("STATUS", lambda p: p["status"]),
                      ("USED BY", lambda p: len(p["used_by"]))])


@storage.command("show")
@click.argument("pool")
@show_format_option
@click.pass_obj
def show_(client: Client, pool: str, fmt: str) -> None:
    """Show a storage pool."""
    click.echo(dump(client.call("storage_pool_get", pool=pool), fmt))


@storage.command("info")
@click.argument("pool")
@show_format_option
@click.pass_obj
def info(client: Client, pool: str, fmt: str) -> None:
    """Show a storage pool's usage, quota and replication."""
    click.echo(dump(client.call("storage_pool_resources", pool=pool), fmt))


@storage.command("create")
@click.argument("pool")
@click.argument("config", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--description", default="")
@click.pass_obj
def create(client: Client, pool: str, config: tuple[str, ...], description: str) -> None:
    """Create a storage pool (e.g. `microcloud storage create fast quota=100GiB`)."""
    client.call("storage_pool_create", body={"name": pool, "driver": "ceph", "description": description,
                                             "config": _key_values(config)})
    click.echo(f"Storage pool {pool} created")


@storage.command("set")
@click.argument("pool")
@click.argument("config", nargs=-1, metavar="KEY=VALUE...")
@click.option("--description", default=None)
@click.pass_obj
def set_(client: Client, pool: str, config: tuple[str, ...], description: str | None) -> None:
    """Change a pool's config (quota=SIZE; quota= unsets) or description."""
    body: dict[str, Any] = {"config": _key_values(config)} if config else {}
    if description is not None:
        body["description"] = description
    if not body:
        raise click.UsageError("nothing to set: give KEY=VALUE or --description")
    client.call("storage_pool_patch", pool=pool, body=body)
    click.echo(f"Storage pool {pool} updated")


@storage.command("delete")
@click.argument("pool")
@click.pass_obj
def delete(client: Client, pool: str) -> None:
    """Delete an empty storage pool."""
    client.call("storage_pool_delete", pool=pool)
    click.echo(f"Storage pool {pool} deleted")


# -- volumes ------------------------------------------------------------------------------

@storage.group("volume")
def volume() -> None:
    """Manage custom volumes: create, resize, copy, snapshots, export and import."""


@volume.command("create")
@click.argument("name")
@click.argument("size")
@pool_option
@click.option("--description", default="")
@click.pass_obj
def volume_create(client: Client, name: str, size: str, pool: str, description: str) -> None:
    """Create an empty block volume NAME of SIZE (e.g. 10GiB)."""
    client.call("storage_volume_create", pool=pool, wait=True,
                body={"name": name, "description": description, "config": {"size": size}})
    click.echo(f"Volume {name} created")


@volume.command("list")
@pool_option
@format_option
@click.pass_obj
def volume_list(client: Client, pool: str, fmt: str) -> None:
    """List a pool's custom volumes."""
    items: list[dict[str, Any]] = client.call("storage_volumes_custom_list", pool=pool,
                                              query={"recursion": 1})
    show(items, fmt, [("NAME", lambda v: v["name"]), ("SIZE", lambda v: _mib(v["config"].get("size", 0))),
                      ("USED BY", lambda v: [u.rsplit("/", 1)[-1] for u in v["used_by"]]),
                      ("DESCRIPTION", lambda v: v["description"]), ("CREATED", lambda v: v["created_at"])])


@volume.command("show")
@click.argument("name")
@pool_option
@show_format_option
@click.pass_obj
def volume_show(client: Client, name: str, pool: str, fmt: str) -> None:
    """Show a custom volume."""
    click.echo(dump(client.call("storage_volume_get", pool=pool, volume=name), fmt))


@volume.command("resize")
@click.argument("name")
@click.argument("size")
@pool_option
@click.option("--force", is_flag=True, help="allow shrinking (loses the data past the new end)")
@click.pass_obj
def volume_resize(client: Client, name: str, size: str, pool: str, force: bool) -> None:
    """Grow a volume to SIZE (shrinking needs --force)."""
    parse_size(size, "size")  # a clear error before asking the daemon
    client.call("storage_volume_patch", pool=pool, volume=name, query={"force": int(force)},
                body={"config": {"size": size}})
    click.echo(f"Volume {name} resized to {size}")


@volume.command("copy")
@click.argument("source")
@click.argument("target")
@pool_option
@click.option("--target-pool", default="", help="copy into another pool")
@click.pass_obj
def volume_copy(client: Client, source: str, target: str, pool: str, target_pool: str) -> None:
    """Copy volume SOURCE to a new, independent volume TARGET."""
    client.call("storage_volume_create", pool=target_pool or pool, wait=True,
                body={"name": target, "source": {"type": "copy", "name": source, "pool": pool}})
    click.echo(f"Volume {source} copied to {target}")


@volume.command("delete")
@click.argument("name")
@pool_option
@click.pass_obj
def volume_delete(client: Client, name: str, pool: str) -> None:
    """Delete a custom volume (refused while attached to an instance)."""
    client.call("storage_volume_delete", pool=pool, volume=name)
    click.echo(f"Volume {name} deleted")


@volume.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path))
@pool_option
@click.pass_obj
def volume_export(client: Client, name: str, file: Path, pool: str) -> None:
    """Export a volume to a backup FILE."""
    size = download(client, BY_NAME["storage_volume_export"].url(pool=pool, volume=name), file)
    click.echo(f"Volume {name} exported to {file} ({_mib(size)})")


@volume.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.argument("name")
@pool_option
@click.pass_obj
def volume_import(client: Client, file: Path, name: str, pool: str) -> None:
    """Create volume NAME from a backup FILE made by `volume export`."""
    env = upload(client, BY_NAME["storage_volume_import"].url(pool=pool, volume=name), file, {}, "Uploading")
    wait_with_progress(client, env["metadata"]["id"], "Importing")
    click.echo(f"Volume {name} imported from {file}")


@volume.group("snapshot")
def snapshot() -> None:
    """Snapshots of a custom volume."""


@snapshot.command("create")
@click.argument("name")
@click.argument("snap")
@pool_option
@click.pass_obj
def snapshot_create(client: Client, name: str, snap: str, pool: str) -> None:
    """Snapshot volume NAME as SNAP."""
    client.call("storage_volume_snapshot_create", pool=pool, volume=name, body={"name": snap}, wait=True)
    click.echo(f"Snapshot {snap} of volume {name} created")


@snapshot.command("list")
@click.argument("name")
@pool_option
@format_option
@click.pass_obj
def snapshot_list(client: Client, name: str, pool: str, fmt: str) -> None:
    """List a volume's snapshots."""
    items: list[dict[str, Any]] = client.call("storage_volume_snapshots_list", pool=pool, volume=name,
                                              query={"recursion": 1})
    show(items, fmt, [("NAME", lambda s: s["name"]), ("CREATED", lambda s: s["created_at"])])


@snapshot.command("restore")
@click.argument("name")
@click.argument("snap")
@pool_option
@click.pass_obj
def snapshot_restore(client: Client, name: str, snap: str, pool: str) -> None:
    """Roll volume NAME back to snapshot SNAP."""
    client.call("storage_volume_patch", pool=pool, volume=name, query={"force": 0}, body={"restore": snap})
    click.echo(f"Volume {name} restored to snapshot {snap}")


@snapshot.command("delete")
@click.argument("name")
@click.argument("snap")
@pool_option
@click.pass_obj
def snapshot_delete(client: Client, name: str, snap: str, pool: str) -> None:
    """Delete snapshot SNAP of volume NAME."""
    client.call("storage_volume_snapshot_delete", pool=pool, volume=name, snapshot=snap, wait=True)
    click.echo(f"Snapshot {snap} of volume {name} deleted")


COMMANDS = [storage]
