"""Handlers of the networks API (microcloudd/api/networks.py)."""

from __future__ import annotations

from microcloudd.services.cloud import Cloud


class NetworksHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud


def make(cloud: Cloud) -> NetworksHandlers:
    return NetworksHandlers(cloud)
