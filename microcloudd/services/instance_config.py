"""Validating an instance's config and devices before anything is created.

Everything a request can get wrong is checked here, up front, so a bad request fails with
a 4xx and creates nothing: limits (CPUs against this host, memory between a floor and the
host's RAM), sizes, device shapes and the keys users may set.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from microcloudd.api.errors import InvalidArgument

DEFAULT_CPUS = 1
DEFAULT_MEMORY = "1GiB"
MIN_MEMORY_MIB = 64  # below this no distribution's kernel boots
USER_KEYS = re.compile(r"^(limits\.cpu|limits\.memory|boot\.autostart|user\.[\w.-]+|cloud-init\.[\w-]+"
                       r"|security\.secureboot|environment\.[\w.-]+)$")
READONLY_PREFIXES = ("volatile.", "image.")
DEVICE_TYPES = ("disk", "nic")
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")  # LXD's boolean spellings
BOOL_KEYS = ("boot.autostart", "security.secureboot")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "p": 1000**5, "pb": 1000**5, "kib": 1 << 10, "mib": 1 << 20,
          "gib": 1 << 30, "tib": 1 << 40, "pib": 1 << 50}


def parse_size(value: str, what: str) -> int:
    """LXD's size syntax: "512MiB", "1GiB", "2GB", "1073741824" → bytes."""
    m = _SIZE.match(value or "")
    unit = (m.group(2) or "").lower() if m else ""
    if not m or unit not in _UNITS:
        raise InvalidArgument(f"{what}: invalid size {value!r} (expected e.g. 512MiB, 2GiB or a byte count)")
    return int(float(m.group(1)) * _UNITS[unit])


def host_cpus() -> int:
    return os.cpu_count() or 1


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Limits:
    vcpus: int
    memory_mib: int


def limits(config: dict[str, str]) -> Limits:
    """The instance's vCPUs and memory, checked against what this host can give one guest."""
    raw_cpu = config.get("limits.cpu", str(DEFAULT_CPUS))
    if not re.fullmatch(r"\d+", raw_cpu.strip()):
        raise InvalidArgument(f"limits.cpu must be a whole number of CPUs, not {raw_cpu!r}")
    vcpus = int(raw_cpu)
    if vcpus < 1:
        raise InvalidArgument("limits.cpu must be at least 1")
    if vcpus > host_cpus():
        raise InvalidArgument(f"limits.cpu {vcpus} is more than this host's {host_cpus()} CPUs")
    raw_mem = config.get("limits.memory", DEFAULT_MEMORY)
    if raw_mem.strip().endswith("%"):
        raise InvalidArgument("limits.memory as a percentage is not supported for virtual machines")
    mem = parse_size(raw_mem, "limits.memory")
    mib = mem // (1 << 20)
    if mib < MIN_MEMORY_MIB:
        raise InvalidArgument(f"limits.memory {raw_mem} is below the {MIN_MEMORY_MIB}MiB "
                              "a virtual machine needs")
    if mem > host_memory_bytes():
        raise InvalidArgument(f"limits.memory {raw_mem} is more than this host's "
                              f"{host_memory_bytes() // (1 << 20)}MiB of RAM")
    return Limits(vcpus, mib)


def check_user_config(config: dict[str, str], *, allow_volatile: bool = False) -> None:
    for key, value in config.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"config {key!r}: values are strings")
        if key.startswith(READONLY_PREFIXES):
            if allow_volatile:
                continue
            raise InvalidArgument(f"config key {key!r} is set by microcloud and cannot be changed")
        if not USER_KEYS.match(key):
            raise InvalidArgument(f"unknown config key {key!r} (supported: limits.cpu, limits.memory, "
                                  "boot.autostart, cloud-init.*, user.*, environment.*)")
        if key in BOOL_KEYS and value.strip().lower() not in TRUE + FALSE:
            raise InvalidArgument(f"config {key!r} must be true or false, not {value!r}")
    limits(config)


def check_devices(devices: dict[str, dict[str, str]]) -> None:
    roots = [n for n, d in devices.items() if d.get("type") == "disk" and d.get("path") == "/"]
    if len(roots) > 1:
        raise InvalidArgument(f"devices {roots} are all root disks; an instance has one")
    for name, dev in devices.items():
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_.-]{0,14}", name):
            raise InvalidArgument(f"invalid device name {name!r}: 1-15 letters, digits, '-', '_' or '.'")
        kind = dev.get("type")
        if kind not in DEVICE_TYPES:
            raise InvalidArgument(f"device {name!r}: type must be one of {', '.join(DEVICE_TYPES)}, "
                                  f"not {kind!r}")
        if kind == "disk":
            if dev.get("path") == "/":
                if "size" in dev:
                    parse_size(dev["size"], f"device {name!r} size")
            elif not dev.get("source"):
                raise InvalidArgument(f"device {name!r}: a disk needs `source` (a custom volume name)")
        if kind == "nic":
            if not dev.get("network"):
                raise InvalidArgument(f"device {name!r}: a nic needs `network` (an OVN network name)")
            mac = dev.get("hwaddr")
            if mac is not None and not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac.lower()):
                raise InvalidArgument(f"device {name!r}: invalid hwaddr {mac!r}")
            if mac is not None and int(mac[:2], 16) & 1:
                raise InvalidArgument(f"device {name!r}: hwaddr {mac} is a multicast address")


def root_device(devices: dict[str, dict[str, str]]) -> tuple[str, dict[str, str]]:
    for name, dev in devices.items():
        if dev.get("type") == "disk" and dev.get("path") == "/":
            return name, dev
    raise InvalidArgument("the instance has no root disk device")


def nic_devices(devices: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {n: d for n, d in sorted(devices.items()) if d.get("type") == "nic"}


def volume_devices(devices: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {n: d for n, d in sorted(devices.items()) if d.get("type") == "disk" and d.get("path") != "/"}
