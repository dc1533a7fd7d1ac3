"""libvirtError -> the project's error model, with a message a user understands."""

from __future__ import annotations

import libvirt

from microcloudd.api.errors import (
    AlreadyExists,
    Conflict,
    Internal,
    InvalidArgument,
    MicrocloudError,
    NotFound,
    QuotaExceeded,
    Timeout,
    Unavailable,
)


def _codes(*names: str) -> frozenset[int]:
    # getattr: a few codes are newer than some libvirt builds
    return frozenset(getattr(libvirt, n) for n in names if hasattr(libvirt, n))


_NOT_FOUND = _codes("VIR_ERR_NO_DOMAIN", "VIR_ERR_NO_SECRET", "VIR_ERR_NO_DOMAIN_METADATA",
                    "VIR_ERR_NO_NETWORK", "VIR_ERR_NO_STORAGE_VOL", "VIR_ERR_NO_STORAGE_POOL")
_EXISTS = _codes("VIR_ERR_DOM_EXIST")
_CONFLICT = _codes("VIR_ERR_OPERATION_INVALID", "VIR_ERR_NO_SUPPORT", "VIR_ERR_OPERATION_UNSUPPORTED",
                   "VIR_ERR_OPERATION_ABORTED", "VIR_ERR_ARGUMENT_UNSUPPORTED", "VIR_ERR_DEVICE_MISSING")
_INVALID = _codes("VIR_ERR_XML_ERROR", "VIR_ERR_XML_DETAIL", "VIR_ERR_CONFIG_UNSUPPORTED",
                  "VIR_ERR_INVALID_ARG", "VIR_ERR_XML_INVALID_SCHEMA")
_UNAVAILABLE = _codes("VIR_ERR_NO_CONNECT", "VIR_ERR_INVALID_CONN", "VIR_ERR_RPC", "VIR_ERR_AUTH_FAILED",
                      "VIR_ERR_SYSTEM_ERROR", "VIR_ERR_INTERNAL_ERROR", "VIR_ERR_OPERATION_FAILED",
                      "VIR_ERR_AUTH_UNAVAILABLE", "VIR_ERR_AGENT_UNRESPONSIVE", "VIR_ERR_HOOK_SCRIPT_FAILED",
                      "VIR_ERR_STORAGE_PROBE_FAILED")
_TIMEOUT = _codes("VIR_ERR_OPERATION_TIMEOUT", "VIR_ERR_AGENT_COMMAND_TIMEOUT")
_QUOTA = _codes("VIR_ERR_RESOURCE_BUSY")


def translate(err: libvirt.libvirtError, action: str) -> MicrocloudError:
    """`action` says what we tried, e.g. "start instance 'web1'"."""
    code = err.get_error_code()
    msg = (err.get_error_message() or str(err)).strip()
    text = f"cannot {action}: {msg}"
    if code in _NOT_FOUND:
        return NotFound(text, libvirt_code=code)
    if code in _EXISTS or "already exists" in msg:
        return AlreadyExists(text, libvirt_code=code)
    if code in _CONFLICT:
        return Conflict(text, libvirt_code=code)
    if code in _INVALID:
        return InvalidArgument(text, libvirt_code=code)
    if code in _TIMEOUT:
        return Timeout(text, libvirt_code=code)
    if code in _QUOTA:
        return QuotaExceeded(text, libvirt_code=code)
    if code in _UNAVAILABLE:
        return Unavailable(text, libvirt_code=code)
    return Internal(text, libvirt_code=code)
