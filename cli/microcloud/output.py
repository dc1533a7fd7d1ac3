"""`--format table|json|yaml` for every listing."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

FORMATS = ("table", "json", "yaml")
format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                             show_default=True, help="output format")
# For `show` commands: one object, so YAML (readable) or JSON (for scripts), no table.
show_format_option = click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
                                  show_default=True, help="output format")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return ", ".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items())
    return str(v)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[_cell(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([sep, line(headers), sep, *(line(r) for r in cells), sep])


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False)
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()


def show(data: Any, fmt: str, columns: Sequence[tuple[str, Callable[[Any], Any]]] | None = None) -> None:
    """Print `data` (a list of objects for listings) in the requested format."""
    if fmt != "table" or columns is None:
        click.echo(dump(data, "yaml" if fmt == "table" else fmt))
        return
    click.echo(table([[get(item) for _, get in columns] for item in data], [h for h, _ in columns]))
