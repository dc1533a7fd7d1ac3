"""Facts about this machine for `GET /1.0` (read once at start-up)."""

from __future__ import annotations

import os
import platform
import socket

from microcloudd import __version__
from microcloudd.api.server import API_EXTENSIONS, Environment, ServerInfo


def _os_release() -> tuple[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                fields[k] = v.strip('"')
    except OSError:
        pass
    return fields.get("NAME", "Linux"), fields.get("VERSION_ID", "")


def virtualization() -> str:
    """kvm, or tcg (QEMU's software emulation, much slower): the compute driver's own guess,
    so what `microcloud status` says is what guests get."""
    from microcloudd.drivers.compute.domain_xml import host_virt_type

    return "kvm" if host_virt_type() == "kvm" else "tcg"


def server_info(server_name: str, addresses: list[str] | None = None) -> ServerInfo:
    uname = platform.uname()
    os_name, os_version = _os_release()
    arches = [uname.machine] + (["i686"] if uname.machine == "x86_64" else [])
    env = Environment(
        addresses=addresses or [], architectures=arches, kernel=uname.system,
        kernel_architecture=uname.machine, kernel_version=uname.release, os_name=os_name,
        os_version=os_version, server_name=server_name, server_pid=os.getpid(),
        server_version=__version__, driver="qemu", driver_version=virtualization(),
    )
    return ServerInfo(api_extensions=list(API_EXTENSIONS), auth="trusted", environment=env)


def default_server_name() -> str:
    return socket.gethostname().split(".")[0] or "microcloud"
