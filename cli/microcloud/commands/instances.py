"""CLI commands of the instances area."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
