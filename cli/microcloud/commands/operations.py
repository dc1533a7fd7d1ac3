"""`microcloud operation list|show|wait|cancel`."""

from __future__ import annotations

from typing import Any

import click

from microcloud.client import Client
from microcloud.output import dump, format_option, show, show_format_option


@click.group("operation")
def operation() -> None:
    """Inspect, wait for and cancel background operations."""


@operation.command("list")
@format_option
@click.pass_obj
def list_(client: Client, fmt: str) -> None:
    """List operations (running and recently finished)."""
    groups: dict[str, list[dict[str, Any]]] = client.call("operations_list", query={"recursion": 1})
    ops = sorted((op for ops in groups.values() for op in ops), key=lambda o: o["created_at"])
    show(ops, fmt, [("ID", lambda o: o["id"]), ("DESCRIPTION", lambda o: o["description"]),
                    ("STATUS", lambda o: o["status"]), ("CREATED", lambda o: o["created_at"]),
                    ("CANCELABLE", lambda o: "yes" if o["may_cancel"] else "no")])


@operation.command("show")
@click.argument("op_id")
@show_format_option
@click.pass_obj
def show_(client: Client, op_id: str, fmt: str) -> None:
    """Show one operation."""
    click.echo(dump(client.call("operation_get", id=op_id), fmt))



@operation.command()
@click.argument("op_id")
@click.option("--timeout", type=float, default=None, help="seconds to wait at most")
@click.pass_obj
def wait(client: Client, op_id: str, timeout: float | None) -> None:
    """Wait for an operation to finish; fails if the operation failed."""
    op = client.wait_operation(op_id, timeout)
    click.echo(f"{op['description']}: {op['status']}")


@operation.command()
@click.argument("op_id")
@click.pass_obj
def cancel(client: Client, op_id: str) -> None:
    """Cancel a running operation."""
    client.call("operation_cancel", id=op_id)
    click.echo(f"Operation {op_id} cancelled")


COMMANDS = [operation]
