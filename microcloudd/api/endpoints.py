"""The whole endpoint tree: every resource module's Ops, in one place."""

from __future__ import annotations

from microcloudd.api import server
from microcloudd.api.declare import Op

ALL: tuple[Op, ...] = (*server.OPS,)

BY_NAME: dict[str, Op] = {op.name: op for op in ALL}
