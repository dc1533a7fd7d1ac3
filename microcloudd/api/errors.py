"""One error model: typed errors with a stable code, each mapped to one HTTP status.

Drivers, services and the database raise only these. The REST layer turns them into
LXD's `error` envelope (`error_code` is the HTTP status, `metadata.code` our stable code),
and the CLI turns them back into the same class and one readable line.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MicrocloudError(Exception):
    """Base of every error a client may see."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details}


class InvalidArgument(MicrocloudError):
    """The request is malformed or a value breaks a rule (a name, a subnet, a size)."""

    code = "invalid-argument"
    status = 400


class Forbidden(MicrocloudError):
    code = "forbidden"
    status = 403


class NotFound(MicrocloudError):
    code = "not-found"
    status = 404


class MethodNotAllowed(MicrocloudError):
    code = "method-not-allowed"
    status = 405


class AlreadyExists(MicrocloudError):
    """A create hit a name (or fingerprint, or address) that is taken."""

    code = "already-exists"
    status = 409


class InUse(MicrocloudError):
    """The object is referenced (an image with clones, an attached volume, a network with ports)."""

    code = "in-use"
    status = 409


class Conflict(MicrocloudError):
    """The object is in the wrong state for the request (deleting a running instance)."""

    code = "conflict"
    status = 409


class Cancelled(MicrocloudError):
    code = "cancelled"
    status = 409


class Expired(MicrocloudError):
    """A token or other time-limited grant is past its expiry."""

    code = "expired"
    status = 410


class QuotaExceeded(MicrocloudError):
    """A pool quota, a full disk, not enough memory: the resource is exhausted."""

    code = "quota-exceeded"
    status = 507


class Unavailable(MicrocloudError):
    """A backend (database leader, Ceph, OVN, libvirt, a member) cannot be reached now."""

    code = "unavailable"
    status = 503


class Timeout(MicrocloudError):
    code = "timeout"
    status = 504


class Internal(MicrocloudError):
    """A bug: the REST layer logs the traceback and returns only a request id."""

    code = "internal"
    status = 500


ALL_ERRORS: tuple[type[MicrocloudError], ...] = (
    InvalidArgument,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    AlreadyExists,
    InUse,
    Conflict,
    Cancelled,
    Expired,
    QuotaExceeded,
    Unavailable,
    Timeout,
    Internal,
)
BY_CODE: dict[str, type[MicrocloudError]] = {e.code: e for e in ALL_ERRORS}


def from_wire(code: str | None, message: str, details: dict[str, Any] | None = None) -> MicrocloudError:
    """Rebuild the typed error a server sent (the CLI's side of the error model)."""
    cls = BY_CODE.get(code or "", MicrocloudError)
    return cls(message, **(details or {}))
