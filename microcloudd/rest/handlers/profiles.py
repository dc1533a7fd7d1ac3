"""Handlers of the profiles API (microcloudd/api/profiles.py): decode, call a service, answer."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from microcloudd.api.declare import Recursion
from microcloudd.api.profiles import Profile, ProfilePatch, ProfilePost, ProfilePut, ProfilesPost
from microcloudd.rest.app import Context
from microcloudd.services import profiles
from microcloudd.services.cloud import Cloud


def _given(value: Any) -> Any:
    return None if value is UNSET else value


class ProfilesHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    async def profiles_list(self, ctx: Context, query: Recursion) -> list[Profile] | list[str]:
        found = profiles.list_profiles(self.cloud)
        return found if query.recursion else [profiles.url(p.name) for p in found]

    async def profile_create(self, ctx: Context, body: ProfilesPost) -> None:
        await profiles.create(self.cloud, body)

    async def profile_get(self, ctx: Context, name: str) -> Profile:
        return profiles.get_profile(self.cloud, name)

    async def profile_put(self, ctx: Context, name: str, body: ProfilePut) -> None:
        await profiles.replace(self.cloud, name, description=body.description, config=body.config,
                               devices=body.devices)

    async def profile_patch(self, ctx: Context, name: str, body: ProfilePatch) -> None:
        await profiles.patch(self.cloud, name, description=_given(body.description),
                             config=_given(body.config), devices=_given(body.devices))

    async def profile_rename(self, ctx: Context, name: str, body: ProfilePost) -> None:
        await profiles.rename(self.cloud, name, body.name)

    async def profile_delete(self, ctx: Context, name: str) -> None:
        await profiles.delete(self.cloud, name)


def make(cloud: Cloud) -> ProfilesHandlers:
    return ProfilesHandlers(cloud)
