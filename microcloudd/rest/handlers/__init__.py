"""Thin handlers: decode → call a service → return API types. One module per resource.

Each resource module adds its factory to AREAS; the daemon builds every handler object
from the shared Cloud (services/cloud.py).
"""

from __future__ import annotations

from collections.abc import Callable

from microcloudd.services.cloud import Cloud

AREAS: list[Callable[[Cloud], object]] = []
