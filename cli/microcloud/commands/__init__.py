"""One module per area; each exports its click commands in COMMANDS."""

from __future__ import annotations

import click

from microcloud.commands import images, init, instances, networks, operations, profiles, server, storage

COMMANDS: list[click.Command] = [
    *server.COMMANDS, *operations.COMMANDS, *images.COMMANDS, *storage.COMMANDS, *networks.COMMANDS,
    *profiles.COMMANDS, *instances.COMMANDS, *init.COMMANDS,
]
