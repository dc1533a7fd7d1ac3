"""The aiohttp binding of microcloudd.api: routes, envelope, access, operations, events."""
