"""The images API (LXD 1.0 shape): images and their aliases.

An image is uploaded as the raw body of `POST /1.0/images` (LXD's direct upload) with the
headers below; the daemon stages it, refuses a non-disk file or a known fingerprint with a
4xx at once, and imports it into RBD as an operation.
"""

from __future__ import annotations

from typing import Any

import msgspec

from microcloudd.api.declare import Op, Recursion
from microcloudd.api.storage import ForceQuery

# Upload headers (LXD's names, plus ours for the pool and alias).
H_FILENAME = "X-LXD-filename"
H_PUBLIC = "X-LXD-public"  # "1"/"true"
H_PROPERTIES = "X-LXD-properties"  # URL-encoded query string: os=debian&release=12
H_POOL = "X-Microcloud-pool"  # the storage pool to keep the image in (default: "remote")
H_ALIAS = "X-Microcloud-alias"  # an alias to create with the image


class ImageAliasRef(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""


class Image(msgspec.Struct, kw_only=True):
    fingerprint: str
    filename: str = ""
    size: int = 0  # bytes of the uploaded file
    architecture: str = ""
    type: str = "virtual-machine"
    properties: dict[str, str] = {}
    aliases: list[ImageAliasRef] = []
    public: bool = False
    auto_update: bool = False
    cached: bool = False
    profiles: list[str] = msgspec.field(default_factory=lambda: ["default"])
    created_at: str = ""
    uploaded_at: str = ""
    expires_at: str = "0001-01-01T00:00:00Z"
    last_used_at: str = "0001-01-01T00:00:00Z"
    # microcloud's additions: where it lives and what it was imported from.
    pool: str = ""
    format: str = ""
    virtual_size: int = 0


class ImagePut(msgspec.Struct, kw_only=True):
    public: bool | None = None
    properties: dict[str, str] | None = None


class ImageAlias(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    target: str = ""  # the image fingerprint
    type: str = "virtual-machine"


class ImageAliasesPost(msgspec.Struct, kw_only=True):
    name: str
    target: str  # fingerprint, unique prefix, or another alias
    description: str = ""


class ImageAliasPut(msgspec.Struct, kw_only=True):
    target: str | None = None
    description: str | None = None


_I = "/1.0/images"

# The alias routes come before `{fingerprint}` so that "aliases" is never taken for one.
OPS: tuple[Op, ...] = (
    Op("GET", _I + "/aliases", "image_aliases_list", "List image aliases", result=list[Any],
       query=Recursion),
    Op("POST", _I + "/aliases", "image_alias_create", "Create an image alias", body=ImageAliasesPost),
    Op("GET", _I + "/aliases/{alias}", "image_alias_get", "Show an image alias", result=ImageAlias),
    Op("PUT", _I + "/aliases/{alias}", "image_alias_put", "Point an alias elsewhere or describe it",
       body=ImageAliasPut, result=ImageAlias),
    Op("PATCH", _I + "/aliases/{alias}", "image_alias_patch", "Change an alias", body=ImageAliasPut,
       result=ImageAlias),
    Op("DELETE", _I + "/aliases/{alias}", "image_alias_delete", "Delete an image alias"),
    Op("GET", _I, "images_list", "List images", result=list[Any], query=Recursion),
    Op("POST", _I, "image_import",
       "Upload a qcow2 or raw disk image as the request body (application/octet-stream)", kind="raw"),
    Op("GET", _I + "/{fingerprint}", "image_get", "Show an image (full fingerprint or unique prefix)",
       result=Image),
    Op("PUT", _I + "/{fingerprint}", "image_put", "Replace an image's properties and public flag",
       body=ImagePut, result=Image),
    Op("PATCH", _I + "/{fingerprint}", "image_patch", "Change an image's properties or public flag",
       body=ImagePut, result=Image),
    Op("DELETE", _I + "/{fingerprint}", "image_delete",
       "Delete an image (refused while disks are cloned from it, unless force=1 flattens them)",
       query=ForceQuery, kind="async"),
)
