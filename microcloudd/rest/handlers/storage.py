"""Handlers of the storage API (microcloudd/api/storage.py)."""

from __future__ import annotations

from microcloudd.services.cloud import Cloud


class StorageHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud


def make(cloud: Cloud) -> StorageHandlers:
    return StorageHandlers(cloud)
