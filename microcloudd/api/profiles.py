"""The profiles API (LXD 1.0 shape): named sets of config and devices that instances apply
in order, under their own config and devices.

PUT replaces description, config and devices; PATCH merges the config keys and devices it
is given (a config value "" removes that key); POST on a profile renames it.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from microcloudd.api.declare import Op, Recursion

Devices = dict[str, dict[str, str]]


class Profile(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    config: dict[str, str] = {}
    devices: Devices = {}
    used_by: list[str] = []  # "/1.0/instances/NAME" of every instance that applies it


class ProfilesPost(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    config: dict[str, str] = {}
    devices: Devices = {}


class ProfilePut(msgspec.Struct, kw_only=True):
    description: str = ""
    config: dict[str, str] = {}
    devices: Devices = {}


class ProfilePatch(msgspec.Struct, kw_only=True):
    description: str | UnsetType = UNSET
    config: dict[str, str] | UnsetType = UNSET  # merged; "" removes a key
    devices: Devices | UnsetType = UNSET  # merged by device name


class ProfilePost(msgspec.Struct, kw_only=True):
    name: str  # the new name


_P = "/1.0/profiles/{name}"

OPS: tuple[Op, ...] = (
    Op("GET", "/1.0/profiles", "profiles_list", "List profiles", result=list[Profile | str], query=Recursion),
    Op("POST", "/1.0/profiles", "profile_create", "Create a profile", body=ProfilesPost),
    Op("GET", _P, "profile_get", "Show a profile", result=Profile),
    Op("PUT", _P, "profile_put", "Replace a profile's description, config and devices", body=ProfilePut),
    Op("PATCH", _P, "profile_patch", "Change some config keys or devices of a profile", body=ProfilePatch),
    Op("POST", _P, "profile_rename", "Rename a profile (and the instances' references to it)",
       body=ProfilePost),
    Op("DELETE", _P, "profile_delete", "Delete a profile no instance uses"),
)
