"""How our objects are named and tagged inside RBD.

RBD image names carry the volume type as a prefix ("custom_data", "vm_web1",
"image_<sha256>"). User names follow api.names (letters, digits, hyphens), so the "_"
separator and our internal snapshot names (which contain "_") never clash with theirs.
Tags are RBD image metadata under "microcloud.", the owner tag being what the orphan
reconciler looks for.
"""

from __future__ import annotations

import re

from microcloudd.api.errors import InvalidArgument
from microcloudd.api.names import check_name
from microcloudd.drivers.storage.base import VolumeType

TAG = "microcloud."
OWNER = TAG + "owner"
KIND = TAG + "kind"  # a VolumeType value, or PARTIAL while an import is still streaming
NAME = TAG + "name"
ATTACHED = TAG + "attached"  # comma-separated instance names
FINGERPRINT = TAG + "fingerprint"
FORMAT = TAG + "format"  # the file format an image was imported from
PARTIAL = "partial"

IMAGE_SNAPSHOT = "mc_base"  # the protected snapshot root disks are cloned from
_PREFIX = {VolumeType.CUSTOM: "custom_", VolumeType.VM: "vm_", VolumeType.IMAGE: "image_"}
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def backend_name(vtype: VolumeType, name: str) -> str:
    """The RBD image name of a volume, after checking the user's name."""
    if vtype is VolumeType.IMAGE:
        check_fingerprint(name)
    else:
        check_name("volume" if vtype is VolumeType.CUSTOM else "instance", name)
    return _PREFIX[vtype] + name


def partial_name(token: str) -> str:
    """Where an import streams before it has a name (renamed when complete)."""
    return f"{PARTIAL}_{token}"


def is_partial(backend_name: str) -> bool:
    return backend_name.startswith(f"{PARTIAL}_")


def check_fingerprint(fingerprint: str) -> str:
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise InvalidArgument(f"Invalid image fingerprint {fingerprint!r}: expected 64 lowercase hex digits")
    return fingerprint


def check_snapshot_name(name: str) -> str:
    return check_name("snapshot", name)


def is_user_snapshot(rbd_snap: str) -> bool:
    return "_" not in rbd_snap


def parse_backend_name(rbd_name: str) -> tuple[VolumeType, str] | None:
    for vtype, prefix in _PREFIX.items():
        if rbd_name.startswith(prefix):
            return vtype, rbd_name[len(prefix):]
    return None
