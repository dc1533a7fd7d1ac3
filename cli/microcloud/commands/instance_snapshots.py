"""`microcloud snapshot create|list|restore|delete`: snapshots of an instance's disks."""

from __future__ import annotations

import click

from microcloud.client import Client
from microcloud.output import format_option, show


@click.group()
def snapshot() -> None:
    """Snapshots of an instance's disks."""


@snapshot.command(name="create")
@click.argument("instance")
@click.argument("name", required=False, default="")
@click.pass_obj
def snapshot_create(client: Client, instance: str, name: str) -> None:
    """Snapshot INSTANCE (NAME defaults to snap0, snap1, ...)."""
    client.call("instance_snapshots_create", name=instance, body={"name": name}, wait=True)


@snapshot.command(name="list")
@click.argument("instance")
@format_option
@click.pass_obj
def snapshot_list(client: Client, instance: str, fmt: str) -> None:
    """List INSTANCE's snapshots."""
    snaps = client.call("instance_snapshots_list", name=instance, query={"recursion": 1})
    show(snaps, fmt, [("NAME", lambda s: s["name"]), ("TAKEN AT", lambda s: s["created_at"])])


@snapshot.command(name="restore")
@click.argument("instance")
@click.argument("name")
@click.pass_obj
def snapshot_restore(client: Client, instance: str, name: str) -> None:
    """Put INSTANCE's disk (and config) back to snapshot NAME; the instance must be stopped."""
    client.call("instance_put", name=instance, body={"restore": name}, wait=True)


@snapshot.command(name="delete")
@click.argument("instance")
@click.argument("name")
@click.pass_obj
def snapshot_delete(client: Client, instance: str, name: str) -> None:
    """Delete snapshot NAME of INSTANCE."""
    client.call("instance_snapshot_delete", name=instance, snapshot=name, wait=True)
