"""LXD's PATCH rule for a config map: the given keys change, an empty value removes its key,
the keys not given stay."""

from __future__ import annotations

from collections.abc import Mapping


def patched(old: Mapping[str, str], changes: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(old)
    for key, value in (changes or {}).items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
