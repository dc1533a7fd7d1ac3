"""Handlers of the instances API (microcloudd/api/instances.py)."""

from __future__ import annotations

from microcloudd.services.cloud import Cloud


class InstancesHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud


def make(cloud: Cloud) -> InstancesHandlers:
    return InstancesHandlers(cloud)
