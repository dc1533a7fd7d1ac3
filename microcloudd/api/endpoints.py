"""The whole endpoint tree: every resource module's Ops, in one place."""

from __future__ import annotations

from microcloudd.api import images, init, instances, networks, profiles, server, storage
from microcloudd.api.declare import Op

ALL: tuple[Op, ...] = (*server.OPS, *images.OPS, *storage.OPS, *networks.OPS, *profiles.OPS, *instances.OPS,
                       *init.OPS)

BY_NAME: dict[str, Op] = {op.name: op for op in ALL}
