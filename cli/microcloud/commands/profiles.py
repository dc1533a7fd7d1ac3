"""`microcloud profile ...`: profiles (config and devices instances apply in order, LXD's shape).

As lxc: `edit` reads YAML from stdin when it is not a terminal, else opens $EDITOR; `set`/`unset`
change config keys; `device add|remove` change one device.
"""

from __future__ import annotations

import click

from microcloud.client import Client
from microcloud.commands.networks import _edit, _pairs
from microcloud.output import dump, format_option, show, show_format_option
from microcloudd.api.errors import AlreadyExists, NotFound


@click.group("profile")
def profile() -> None:
    """Manage profiles: config and devices that instances apply, in order, under their own."""


@profile.command("list")
@format_option
@click.pass_obj
def list_(client: Client, fmt: str) -> None:
    """List profiles."""
    show(client.call("profiles_list", query={"recursion": 1}), fmt,
         [("NAME", lambda p: p["name"]), ("DESCRIPTION", lambda p: p["description"]),
          ("USED BY", lambda p: len(p["used_by"]))])


@profile.command("show")
@click.argument("name")
@show_format_option
@click.pass_obj
def show_(client: Client, name: str, fmt: str) -> None:
    """Show profile NAME."""
    click.echo(dump(client.call("profile_get", name=name), fmt))


@profile.command("create")
@click.argument("name")
@click.argument("config", nargs=-1)
@click.option("--description", default="", help="a description")
@click.pass_obj
def create(client: Client, name: str, config: tuple[str, ...], description: str) -> None:
    """Create profile NAME [KEY=VALUE...] (add devices with `profile device add`)."""
    client.call("profile_create", body={"name": name, "description": description, "config": _pairs(config)})
    click.echo(f"Profile {name} created")


@profile.command("edit")
@click.argument("name")
@click.pass_obj
def edit(client: Client, name: str) -> None:
    """Edit profile NAME as YAML (stdin, or $EDITOR)."""
    fields = ("description", "config", "devices")
    new = _edit(client.call("profile_get", name=name), fields, f"profile {name}")
    client.call("profile_put", name=name, body={"description": new["description"] or "",
                                                "config": new["config"] or {},
                                                "devices": new["devices"] or {}})


@profile.command("delete")
@click.argument("name")
@click.pass_obj
def delete(client: Client, name: str) -> None:
    """Delete profile NAME (no instance may use it)."""
    client.call("profile_delete", name=name)
    click.echo(f"Profile {name} deleted")


@profile.command("rename")
@click.argument("name")
@click.argument("new_name")
@click.pass_obj
def rename(client: Client, name: str, new_name: str) -> None:
    """Rename profile NAME to NEW_NAME (the instances using it follow)."""
    client.call("profile_rename", name=name, body={"name": new_name})
    click.echo(f"Profile {name} renamed to {new_name}")


@profile.command("copy")
@click.argument("name")
@click.argument("new_name")
@click.pass_obj
def copy(client: Client, name: str, new_name: str) -> None:
    """Copy profile NAME to a new profile NEW_NAME."""
    src = client.call("profile_get", name=name)
    client.call("profile_create", body={"name": new_name, "description": src["description"],
                                        "config": src["config"], "devices": src["devices"]})
    click.echo(f"Profile {name} copied to {new_name}")


@profile.command("set")
@click.argument("name")
@click.argument("config", nargs=-1, required=True)
@click.pass_obj
def set_(client: Client, name: str, config: tuple[str, ...]) -> None:
    """Set config keys of profile NAME: KEY=VALUE... (instances take limits at their next start)."""
    client.call("profile_patch", name=name, body={"config": _pairs(config)})


@profile.command("unset")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True)
@click.pass_obj
def unset(client: Client, name: str, keys: tuple[str, ...]) -> None:
    """Remove config keys of profile NAME."""
    client.call("profile_patch", name=name, body={"config": {k: "" for k in keys}})


@profile.group("device")
def device() -> None:
    """Add or remove a profile's devices."""


@device.command("add")
@click.argument("name")
@click.argument("device_name")
@click.argument("type_", metavar="TYPE", type=click.Choice(["disk", "nic"]))
@click.argument("options", nargs=-1)
@click.pass_obj
def device_add(client: Client, name: str, device_name: str, type_: str, options: tuple[str, ...]) -> None:
    """Add device DEVICE_NAME of TYPE (disk: pool= path= size= source=; nic: network= name=)."""
    current = client.call("profile_get", name=name)
    if device_name in current["devices"]:
        raise AlreadyExists(f"Device {device_name} already exists in profile {name}")
    dev = {"type": type_, **_pairs(options, "device option")}
    client.call("profile_patch", name=name, body={"devices": {device_name: dev}})
    click.echo(f"Device {device_name} added to {name}")


@device.command("remove")
@click.argument("name")
@click.argument("device_name")
@click.pass_obj
def device_remove(client: Client, name: str, device_name: str) -> None:
    """Remove device DEVICE_NAME from profile NAME."""
    current = client.call("profile_get", name=name)
    if device_name not in current["devices"]:
        raise NotFound(f"Device {device_name} not found in profile {name}")
    devices = {k: v for k, v in current["devices"].items() if k != device_name}
    client.call("profile_put", name=name, body={"description": current["description"],
                                                "config": current["config"], "devices": devices})
    click.echo(f"Device {device_name} removed from {name}")


COMMANDS: list[click.Command] = [profile]
