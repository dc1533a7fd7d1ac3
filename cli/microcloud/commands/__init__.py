"""One module per area; each exports its click commands in COMMANDS."""

from __future__ import annotations

import click

from microcloud.commands import operations, server

COMMANDS: list[click.Command] = [*server.COMMANDS, *operations.COMMANDS]
