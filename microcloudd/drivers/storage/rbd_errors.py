"""Turn rados/rbd exceptions into our error model, worded for a user.

    with translated(f"Volume {name!r} in pool {pool!r}"):
        ...rbd call...

`what` names the object the call is about, so "ImageNotFound [errno 2]" becomes
"Volume 'data' in pool 'remote' not found".
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import rados
import rbd

from microcloudd.api.errors import (
    AlreadyExists,
    Conflict,
    Internal,
    InUse,
    InvalidArgument,
    MicrocloudError,
    NotFound,
    QuotaExceeded,
    Timeout,
    Unavailable,
)


def to_error(exc: Exception, what: str) -> MicrocloudError:
    if isinstance(exc, MicrocloudError):
        return exc
    code = getattr(exc, "errno", None)
    code = abs(code) if isinstance(code, int) else None
    if isinstance(exc, rbd.ImageNotFound | rados.ObjectNotFound) or code == errno.ENOENT:
        return NotFound(f"{what} not found")
    if isinstance(exc, rbd.ImageExists | rados.ObjectExists) or code == errno.EEXIST:
        return AlreadyExists(f"{what} already exists")
    if isinstance(exc, rbd.ImageBusy | rbd.ImageHasSnapshots) or code in (errno.EBUSY, errno.ENOTEMPTY):
        return InUse(f"{what} is in use ({_reason(exc)})")
    if isinstance(exc, rbd.DiskQuotaExceeded) or code == errno.EDQUOT:
        return QuotaExceeded(f"{what}: the storage pool is over its quota")
    if isinstance(exc, rbd.NoSpace | rados.NoSpace) or code == errno.ENOSPC:
        return QuotaExceeded(f"{what}: the storage cluster is out of space")
    if isinstance(exc, rbd.Timeout | rados.TimedOut) or code == errno.ETIMEDOUT:
        return Timeout(f"{what}: Ceph did not answer in time")
    if isinstance(exc, rbd.PermissionError | rados.PermissionError) or code in (errno.EPERM, errno.EACCES):
        return Unavailable(f"{what}: permission denied by Ceph (check the cephx user's caps)")
    if isinstance(exc, rbd.ReadOnlyImage) or code == errno.EROFS:
        return Conflict(f"{what} is read-only")
    if isinstance(exc, rbd.InvalidArgument | rados.InvalidArgumentError) or code == errno.EINVAL:
        return InvalidArgument(f"{what}: invalid request ({_reason(exc)})")
    if isinstance(exc, rados.ConnectionShutdown | rbd.ConnectionShutdown):
        return Unavailable(f"{what}: the connection to Ceph is closed")
    return Internal(f"{what}: unexpected Ceph error ({_reason(exc)})")


def _reason(exc: Exception) -> str:
    text = str(exc)
    code = getattr(exc, "errno", None)
    if text:
        return text
    return errno.errorcode.get(abs(code), "?") if isinstance(code, int) else type(exc).__name__


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except (rados.Error, rbd.Error) as e:
        raise to_error(e, what) from e
