"""Handlers of the images API (microcloudd/api/images.py)."""

from __future__ import annotations

from microcloudd.services.cloud import Cloud


class ImagesHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud


def make(cloud: Cloud) -> ImagesHandlers:
    return ImagesHandlers(cloud)
