"""The images API (LXD 1.0 shape): types and Ops."""

from __future__ import annotations

from microcloudd.api.declare import Op

OPS: tuple[Op, ...] = ()
