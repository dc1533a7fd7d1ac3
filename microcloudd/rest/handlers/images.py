"""Handlers of the images API (microcloudd/api/images.py)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web

from microcloudd.api import images as api
from microcloudd.api.declare import Recursion
from microcloudd.api.errors import InvalidArgument
from microcloudd.api.server import Operation
from microcloudd.api.storage import ForceQuery
from microcloudd.rest import envelope
from microcloudd.rest.app import Context
from microcloudd.services import image_staging, images
from microcloudd.services.cloud import Cloud

CHUNK = 1 << 20


def _import_request(request: web.Request) -> images.ImportRequest:
    h = request.headers
    if request.content_type == "application/json":
        raise InvalidArgument("Creating images from a JSON source is not supported; upload the disk "
                              "image file as the request body (application/octet-stream)")
    try:
        props = dict(parse_qsl(h.get(api.H_PROPERTIES, ""), keep_blank_values=True, strict_parsing=False))
    except ValueError as e:
        raise InvalidArgument(f"Invalid {api.H_PROPERTIES} header: {e}") from None
    public = h.get(api.H_PUBLIC, "").lower() in ("1", "true", "yes")
    return images.ImportRequest(filename=h.get(api.H_FILENAME, ""), public=public, properties=props,
                                pool=h.get(api.H_POOL, ""), alias=h.get(api.H_ALIAS, ""))


class ImagesHandlers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    async def images_list(self, ctx: Context, query: Recursion) -> list[object]:
        recs = images.list_images(self.cloud)
        if query.recursion:
            return [images.to_api(self.cloud, r) for r in recs]
        return [f"/1.0/images/{r.fingerprint}" for r in recs]

    async def image_import(self, ctx: Context) -> web.Response:
        req = _import_request(ctx.request)
        images.check_import(self.cloud, req)  # refuse before reading a byte of the body
        staged = await image_staging.stage(self.cloud.state_dir, ctx.request.content.iter_chunked(CHUNK))
        op = await images.start_import(self.cloud, staged, req)
        return envelope.async_(op)

    async def image_get(self, ctx: Context, fingerprint: str) -> api.Image:
        return images.to_api(self.cloud, images.resolve_now(self.cloud, fingerprint))

    async def image_put(self, ctx: Context, fingerprint: str, body: api.ImagePut) -> api.Image:
        return images.to_api(self.cloud, await images.update(self.cloud, fingerprint, body, replace=True))

    async def image_patch(self, ctx: Context, fingerprint: str, body: api.ImagePut) -> api.Image:
        return images.to_api(self.cloud, await images.update(self.cloud, fingerprint, body, replace=False))

    async def image_delete(self, ctx: Context, fingerprint: str, query: ForceQuery) -> Operation:
        return await images.start_delete(self.cloud, fingerprint, force=bool(query.force))

    async def image_aliases_list(self, ctx: Context, query: Recursion) -> list[object]:
        from microcloudd.db.records import ImageAlias

        recs = sorted(self.cloud.need_db().all(ImageAlias), key=lambda a: a.name)
        if query.recursion:
            return [images.alias_to_api(a) for a in recs]
        return [f"/1.0/images/aliases/{a.name}" for a in recs]

    async def image_alias_create(self, ctx: Context, body: api.ImageAliasesPost) -> api.ImageAlias:
        return images.alias_to_api(await images.create_alias(self.cloud, body))

    async def image_alias_get(self, ctx: Context, alias: str) -> api.ImageAlias:
        return images.alias_to_api(images.get_alias(self.cloud, alias))

    async def image_alias_put(self, ctx: Context, alias: str, body: api.ImageAliasPut) -> api.ImageAlias:
        return images.alias_to_api(await images.update_alias(self.cloud, alias, body, replace=True))

    async def image_alias_patch(self, ctx: Context, alias: str, body: api.ImageAliasPut) -> api.ImageAlias:
        return images.alias_to_api(await images.update_alias(self.cloud, alias, body, replace=False))

    async def image_alias_delete(self, ctx: Context, alias: str) -> None:
        await images.delete_alias(self.cloud, alias)


def make(cloud: Cloud) -> ImagesHandlers:
    return ImagesHandlers(cloud)
