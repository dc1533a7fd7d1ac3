"""`microcloud network ...`: networks, `network acl ...`, `network forward ...`, leases.

Edits follow lxc: `edit` reads YAML from stdin when it is not a terminal, else opens $EDITOR
on the current object; `set`/`unset` change single config keys.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from microcloud.client import Client
from microcloud.output import dump, format_option, show, show_format_option
from microcloudd.api.errors import InvalidArgument, NotFound


def _pairs(items: Iterable[str], what: str = "config") -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"Bad {what} pair {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def _edit(current: dict[str, Any], fields: tuple[str, ...], what: str) -> dict[str, Any]:
    """The new editable fields: YAML from stdin, or from $EDITOR started on the current ones."""
    import yaml

    if not sys.stdin.isatty():
        text = sys.stdin.read()
    else:
        header = f"### Edit {what} below; the lines starting with # are ignored.\n"
        body = dump({f: current.get(f) for f in fields}, "yaml")
        edited = click.edit(header + body + "\n", extension=".yaml")
        if edited is None:
            raise click.ClickException("Nothing changed (the editor was closed without saving)")
        text = edited
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InvalidArgument(f"The YAML of {what} does not parse: {e}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"The YAML of {what} must be a mapping of {', '.join(fields)}")
    unknown = sorted(set(data) - set(fields) - {"name", "listen_address", "used_by", "type", "managed",
                                                "status", "locations", "location"})
    if unknown:
        raise InvalidArgument(f"{what}: unknown field(s) {', '.join(unknown)} "
                              f"(editable: {', '.join(fields)})")
    return {f: data.get(f, current.get(f)) for f in fields}


# ------------------------------------------------------------------------------ networks

@click.group("network")
def network() -> None:
    """Manage networks (OVN), their ACLs, forwards and leases."""


@network.command("create")
@click.argument("name")
@click.argument("config", nargs=-1)
@click.option("--ipv4", default=None, help="gateway address and prefix (10.1.0.1/24), or auto")
@click.option("--ipv6", default=None, help="gateway address and /64, auto or none")
@click.option("--description", default="", help="a description")
@click.pass_obj
def create(client: Client, name: str, config: tuple[str, ...], ipv4: str | None, ipv6: str | None,
           description: str) -> None:
    """Create network NAME [KEY=VALUE...]."""
    cfg = _pairs(config)
    if ipv4 is not None:
        cfg["ipv4.address"] = ipv4
    if ipv6 is not None:
        cfg["ipv6.address"] = ipv6
    client.call("network_create", body={"name": name, "description": description, "config": cfg})
    click.echo(f"Network {name} created")


@network.command("list")
@format_option
@click.pass_obj
def list_(client: Client, fmt: str) -> None:
    """List networks."""
    nets = client.call("networks_list", query={"recursion": 1})
    show(nets, fmt, [("NAME", lambda n: n["name"]), ("TYPE", lambda n: n["type"]),
                     ("IPV4", lambda n: n["config"].get("ipv4.address", "")),
                     ("IPV6", lambda n: n["config"].get("ipv6.address", "")),
                     ("DESCRIPTION", lambda n: n["description"]), ("USED BY", lambda n: len(n["used_by"])),
                     ("STATE", lambda n: n["status"].upper())])


@network.command("show")
@click.argument("name")
@show_format_option
@click.pass_obj
def show_(client: Client, name: str, fmt: str) -> None:
    """Show network NAME."""
    click.echo(dump(client.call("network_get", network=name), fmt))


@network.command("edit")
@click.argument("name")
@click.pass_obj
def edit(client: Client, name: str) -> None:
    """Edit network NAME as YAML (stdin, or $EDITOR)."""
    new = _edit(client.call("network_get", network=name), ("description", "config"), f"network {name}")
    client.call("network_put", network=name, body={"description": new["description"] or "",
                                                "config": new["config"] or {}})


@network.command("set")
@click.argument("name")
@click.argument("config", nargs=-1, required=True)
@click.pass_obj
def set_(client: Client, name: str, config: tuple[str, ...]) -> None:
    """Set config keys of network NAME: KEY=VALUE..."""
    client.call("network_patch", network=name, body={"config": _pairs(config)})


@network.command("unset")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True)
@click.pass_obj
def unset(client: Client, name: str, keys: tuple[str, ...]) -> None:
    """Remove config keys of network NAME."""
    client.call("network_patch", network=name, body={"config": {k: "" for k in keys}})


@network.command("delete")
@click.argument("name")
@click.pass_obj
def delete(client: Client, name: str) -> None:
    """Delete network NAME."""
    client.call("network_delete", network=name)
    click.echo(f"Network {name} deleted")


@network.command("list-leases")
@click.argument("name")
@format_option
@click.pass_obj
def list_leases(client: Client, name: str, fmt: str) -> None:
    """List the addresses handed out on network NAME."""
    show(client.call("network_leases", network=name), fmt,
         [("HOSTNAME", lambda le: le["hostname"]), ("MAC ADDRESS", lambda le: le["hwaddr"]),
          ("IP ADDRESS", lambda le: le["address"]), ("TYPE", lambda le: le["type"].upper()),
          ("LOCATION", lambda le: le["location"])])


# ------------------------------------------------------------------------------ ACLs

@network.group("acl")
def acl() -> None:
    """Manage network ACLs (applied to NICs through security.acls)."""


@acl.command("create")
@click.argument("name")
@click.argument("config", nargs=-1)
@click.option("--description", default="")
@click.pass_obj
def acl_create(client: Client, name: str, config: tuple[str, ...], description: str) -> None:
    """Create ACL NAME [user.KEY=VALUE...] (add rules with `rule add`)."""
    client.call("network_acl_create",
                body={"name": name, "description": description, "config": _pairs(config)})
    click.echo(f"Network ACL {name} created")


@acl.command("list")
@format_option
@click.pass_obj
def acl_list(client: Client, fmt: str) -> None:
    """List network ACLs."""
    show(client.call("network_acls_list", query={"recursion": 1}), fmt,
         [("NAME", lambda a: a["name"]), ("DESCRIPTION", lambda a: a["description"]),
          ("INGRESS", lambda a: len(a["ingress"])), ("EGRESS", lambda a: len(a["egress"])),
          ("USED BY", lambda a: len(a["used_by"]))])


@acl.command("show")
@click.argument("name")
@show_format_option
@click.pass_obj
def acl_show(client: Client, name: str, fmt: str) -> None:
    """Show network ACL NAME."""
    click.echo(dump(client.call("network_acl_get", acl=name), fmt))


@acl.command("edit")
@click.argument("name")
@click.pass_obj
def acl_edit(client: Client, name: str) -> None:
    """Edit network ACL NAME as YAML (stdin, or $EDITOR)."""
    fields = ("description", "ingress", "egress", "config")
    new = _edit(client.call("network_acl_get", acl=name), fields, f"network ACL {name}")
    client.call("network_acl_put", acl=name, body={
        "description": new["description"] or "", "ingress": new["ingress"] or [],
        "egress": new["egress"] or [], "config": new["config"] or {}})


@acl.command("delete")
@click.argument("name")
@click.pass_obj
def acl_delete(client: Client, name: str) -> None:
    """Delete network ACL NAME."""
    client.call("network_acl_delete", acl=name)
    click.echo(f"Network ACL {name} deleted")


@acl.group("rule")
def rule() -> None:
    """Add or remove rules of an ACL."""


_DIRECTION = click.argument("direction", type=click.Choice(["ingress", "egress"]))


@rule.command("add")
@click.argument("name")
@_DIRECTION
@click.argument("fields", nargs=-1, required=True)
@click.pass_obj
def rule_add(client: Client, name: str, direction: str, fields: tuple[str, ...]) -> None:
    """Add a rule: NAME ingress|egress action=allow [protocol=tcp destination_port=22 ...]."""
    new_rule = _pairs(fields, "rule")
    current = client.call("network_acl_get", acl=name)
    client.call("network_acl_patch", acl=name, body={direction: [*current[direction], new_rule]})


@rule.command("remove")
@click.argument("name")
@_DIRECTION
@click.argument("fields", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="remove every matching rule when several match")
@click.pass_obj
def rule_remove(client: Client, name: str, direction: str, fields: tuple[str, ...], force: bool) -> None:
    """Remove the rule(s) whose fields match: NAME ingress|egress KEY=VALUE..."""
    want = _pairs(fields, "rule")
    current = client.call("network_acl_get", acl=name)
    rules = current[direction]
    keep = [r for r in rules if any(str(r.get(k, "")) != v for k, v in want.items())]
    removed = len(rules) - len(keep)
    if removed == 0:
        raise NotFound(f"No {direction} rule of ACL {name} matches {' '.join(fields)}")
    if removed > 1 and not force:
        raise InvalidArgument(f"{removed} {direction} rules match {' '.join(fields)}: "
                              "narrow it, or use --force")
    client.call("network_acl_patch", acl=name, body={direction: keep})


# ------------------------------------------------------------------------------ forwards

@network.group("forward")
def forward() -> None:
    """Manage forwards: a listen address on the uplink sent to instances on a network."""


@forward.command("create")
@click.argument("network_name", metavar="NETWORK")
@click.argument("listen_address")
@click.argument("config", nargs=-1)
@click.option("--description", default="")
@click.pass_obj
def forward_create(client: Client, network_name: str, listen_address: str, config: tuple[str, ...],
                   description: str) -> None:
    """Create a forward: NETWORK LISTEN_ADDRESS [target_address=IP]."""
    client.call("network_forward_create", network=network_name,
                body={"listen_address": listen_address, "description": description, "config": _pairs(config)})
    click.echo(f"Network forward {listen_address} created")


@forward.command("list")
@click.argument("network_name", metavar="NETWORK")
@format_option
@click.pass_obj
def forward_list(client: Client, network_name: str, fmt: str) -> None:
    """List the forwards of NETWORK."""
    show(client.call("network_forwards_list", network=network_name, query={"recursion": 1}), fmt,
         [("LISTEN ADDRESS", lambda f: f["listen_address"]), ("DESCRIPTION", lambda f: f["description"]),
          ("DEFAULT TARGET ADDRESS", lambda f: f["config"].get("target_address", "")),
          ("PORTS", lambda f: len(f["ports"]))])


@forward.command("show")
@click.argument("network_name", metavar="NETWORK")
@click.argument("listen_address")
@show_format_option
@click.pass_obj
def forward_show(client: Client, network_name: str, listen_address: str, fmt: str) -> None:
    """Show a forward."""
    fwd = client.call("network_forward_get", network=network_name, listen_address=listen_address)
    click.echo(dump(fwd, fmt))


@forward.command("edit")
@click.argument("network_name", metavar="NETWORK")
@click.argument("listen_address")
@click.pass_obj
def forward_edit(client: Client, network_name: str, listen_address: str) -> None:
    """Edit a forward as YAML (stdin, or $EDITOR)."""
    current = client.call("network_forward_get", network=network_name, listen_address=listen_address)
    new = _edit(current, ("description", "config", "ports"), f"forward {listen_address}")
    client.call("network_forward_put", network=network_name, listen_address=listen_address,
                body={"description": new["description"] or "", "config": new["config"] or {},
                      "ports": new["ports"] or []})


@forward.command("delete")
@click.argument("network_name", metavar="NETWORK")
@click.argument("listen_address")
@click.pass_obj
def forward_delete(client: Client, network_name: str, listen_address: str) -> None:
    """Delete a forward."""
    client.call("network_forward_delete", network=network_name, listen_address=listen_address)
    click.echo(f"Network forward {listen_address} deleted")


@forward.group("port")
def forward_port() -> None:
    """Add or remove port rules of a forward."""


def _patch_ports(client: Client, network_name: str, listen_address: str,
                 change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    current = client.call("network_forward_get", network=network_name, listen_address=listen_address)
    client.call("network_forward_patch", network=network_name, listen_address=listen_address,
                body={"ports": change(current["ports"])})


@forward_port.command("add")
@click.argument("network_name", metavar="NETWORK")
@click.argument("listen_address")
@click.argument("protocol", type=click.Choice(["tcp", "udp"]))
@click.argument("listen_ports")
@click.argument("target_address")
@click.argument("target_ports", required=False, default="")
@click.option("--description", default="")
@click.pass_obj
def forward_port_add(client: Client, network_name: str, listen_address: str, protocol: str, listen_ports: str,
                     target_address: str, target_ports: str, description: str) -> None:
    """Add a port rule: NETWORK LISTEN_ADDRESS tcp|udp LISTEN_PORTS TARGET_ADDRESS [TARGET_PORTS]."""
    new = {"protocol": protocol, "listen_port": listen_ports, "target_address": target_address,
           "target_port": target_ports, "description": description}
    _patch_ports(client, network_name, listen_address, lambda ports: [*ports, new])


@forward_port.command("remove")
@click.argument("network_name", metavar="NETWORK")
@click.argument("listen_address")
@click.argument("protocol", type=click.Choice(["tcp", "udp"]), required=False)
@click.argument("listen_ports", required=False)
@click.option("--force", is_flag=True, help="remove every matching rule when several match")
@click.pass_obj
def forward_port_remove(client: Client, network_name: str, listen_address: str, protocol: str | None,
                        listen_ports: str | None, force: bool) -> None:
    """Remove port rules matching [PROTOCOL] [LISTEN_PORTS]."""
    def change(ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = [p for p in ports if (protocol and p["protocol"] != protocol)
                or (listen_ports and p["listen_port"] != listen_ports)]
        removed = len(ports) - len(keep)
        if removed == 0:
            raise NotFound(f"No port rule of forward {listen_address} matches")
        if removed > 1 and not force:
            raise InvalidArgument(f"{removed} port rules match: name the protocol and ports, or use --force")
        return keep

    _patch_ports(client, network_name, listen_address, change)


COMMANDS: list[click.Command] = [network]
