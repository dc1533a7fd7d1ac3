"""Thin handlers: decode → call a service → return API types. One module per resource.

Each resource module has a `make(cloud)` factory listed in AREAS; the daemon builds every
handler object from the shared Cloud (services/cloud.py).
"""

from __future__ import annotations

from collections.abc import Callable

from microcloudd.rest.handlers import images, init, instances, networks, profiles, storage
from microcloudd.services.cloud import Cloud

AREAS: list[Callable[[Cloud], object]] = [images.make, storage.make, networks.make, profiles.make,
                                          instances.make, init.make]
