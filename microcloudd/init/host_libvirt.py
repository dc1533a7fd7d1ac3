"""Is a host libvirtd usable for `compute: {libvirt: host}`? Checked before init changes anything.

It must be local (guest NICs are veths on this host, drivers/compute/host_nic.py), answer on
its URI, have the QEMU driver for this machine's architecture, and run in microcloudd's own
network namespace: its QEMU then reaches the veths and Ceph (our monitors listen on the host
end of the member's link, an external cluster where this daemon reached it).
"""

from __future__ import annotations

import os
import platform
import socket
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from microcloudd.components import libvirtd

TIMEOUT = 5.0  # seconds for the libvirtd to answer
# the sockets a privileged libvirtd listens on when the URI names none (monolithic, modular)
DEFAULT_SOCKETS = (Path("/run/libvirt/libvirt-sock"), Path("/run/libvirt/virtqemud-sock"))


def socket_path(uri: str) -> Path | None:
    """The Unix socket of a local qemu:///system URI, or None if the URI is not one."""
    u = urlsplit(uri)
    if u.scheme not in ("qemu", "qemu+unix") or u.netloc or u.path != "/system":
        return None
    given = parse_qs(u.query).get("socket")
    if given:
        return Path(given[0])
    return next((p for p in DEFAULT_SOCKETS if p.exists()), DEFAULT_SOCKETS[0])


def _peer_pid(path: Path) -> int | None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(TIMEOUT)
        try:
            s.connect(str(path))
        except OSError:
            return None
        pid, _, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return pid


def _same_netns(pid: int) -> bool | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None


def _capabilities(uri: str) -> tuple[str, str]:
    """(capabilities XML, error)."""
    try:
        done = subprocess.run(["virsh", "-q", "-c", uri, "capabilities"], capture_output=True, text=True,
                              timeout=TIMEOUT)
    except FileNotFoundError:
        return "", "virsh (libvirt-clients) is not installed"
    except subprocess.TimeoutExpired:
        return "", f"no answer within {TIMEOUT:.0f}s"
    if done.returncode != 0:
        return "", done.stderr.strip().removeprefix("error: ").replace("\nerror: ", ": ")
    return done.stdout, ""


def _has_qemu(caps: str, arch: str) -> bool:
    try:
        root = ET.fromstring(caps)
    except ET.ParseError:
        return False
    for guest in root.findall("guest"):
        a = guest.find("arch")
        if guest.findtext("os_type") == "hvm" and a is not None and a.get("name") == arch and \
                any(d.get("type") in ("qemu", "kvm") for d in a.findall("domain")):
            return True
    return False


def problem(uri: str) -> str:
    """Why the libvirtd at `uri` cannot be used, or ""."""
    uri = uri or libvirtd.HOST_URI
    path = socket_path(uri)
    if path is None:
        return (f"{uri}: give a local system URI (qemu:///system, optionally with ?socket=PATH): "
                "guests plug into this member's network through devices on this host")
    if not path.exists():
        return f"no libvirtd listens on {uri} ({path} does not exist)"
    caps, why = _capabilities(uri)
    if why:
        return f"the libvirtd at {uri} does not answer: {why}"
    arch = platform.machine()
    if not _has_qemu(caps, arch):
        return (f"the libvirtd at {uri} has no QEMU driver for {arch} guests "
                "(install libvirt-daemon-driver-qemu)")
    pid = _peer_pid(path)
    if pid is not None and _same_netns(pid) is False:
        return (f"the libvirtd at {uri} (pid {pid}) runs in another network namespace than microcloudd: "
                "its guests could reach neither this member's network nor its Ceph monitors")
    return ""
