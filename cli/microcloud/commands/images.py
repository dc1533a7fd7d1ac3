"""CLI commands of the images area."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
