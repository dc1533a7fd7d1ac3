"""Naming rules shared by every object a user names (instances, networks, volumes, ...)."""

from __future__ import annotations

import re

from microcloudd.api.errors import InvalidArgument

# Instance names become hostnames, so every name follows the hostname label rules (as LXD's).
_NAME = re.compile(r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")


def check_name(kind: str, name: str) -> str:
    """Return `name` if it is a valid name for a `kind`, else raise InvalidArgument."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(
            f"Invalid {kind} name {name!r}: use 1 to 63 letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen",
            name=name,
        )
    return name
