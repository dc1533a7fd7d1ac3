"""CLI commands of the storage area."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
