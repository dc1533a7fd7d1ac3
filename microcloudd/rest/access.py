"""Who may call what.

On the Unix socket the kernel tells us the caller (SO_PEERCRED): root and members of the
`microcloud` group are trusted, anyone else who can connect sees only public endpoints.
(The socket itself is 0660 root:microcloud, so this is a second fence, as LXD's.)
The mutual-TLS port for members arrives with clustering.
"""

from __future__ import annotations

import grp
import os
import socket
import struct
from dataclasses import dataclass

from aiohttp import web

GROUP = "microcloud"


@dataclass(frozen=True, slots=True)
class Credentials:
    pid: int
    uid: int
    gid: int
    trusted: bool
    member: bool = False  # a cluster member over mTLS (clustering)


def _group_members() -> tuple[int | None, set[str]]:
    try:
        g = grp.getgrnam(GROUP)
    except KeyError:
        return None, set()
    return g.gr_gid, set(g.gr_mem)


def _trusted(uid: int, gid: int) -> bool:
    if uid == 0 or uid == os.getuid():
        return True
    gid_ok, members = _group_members()
    if gid_ok is None:
        return False
    if gid == gid_ok:
        return True
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name in members
    except KeyError:
        return False


def peer_credentials(request: web.Request) -> Credentials | None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    # Cached on the transport: one getsockopt per connection, not per request.
    cached = getattr(transport, "_microcloud_creds", None)
    if cached is not None:
        return cached
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    creds = Credentials(pid, uid, gid, _trusted(uid, gid))
    try:
        transport._microcloud_creds = creds  # type: ignore[union-attr]
    except AttributeError:
        pass
    return creds


def allowed(access: str, creds: Credentials | None) -> bool:
    if access == "public":
        return True
    if creds is None:
        return False
    if access == "member":
        return creds.member
    return creds.trusted or creds.member
