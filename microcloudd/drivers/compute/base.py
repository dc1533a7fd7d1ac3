"""The compute driver interface the services layer uses; `libvirt.LibvirtDriver` implements it.

Every method is async and never blocks the event loop. Errors are only those of
microcloudd.api.errors. Domains are addressed by their libvirt name (`types.domain_name`)
and the driver acts only on domains tagged with its owner.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence

from microcloudd.drivers.compute.types import (
    Disk,
    DomainSpec,
    DomainStatus,
    LifecycleEvent,
    LimitsChange,
    Nic,
    ParsedDomain,
)


class ConsoleStream(abc.ABC):
    """An interactive serial console: bytes both ways."""

    @abc.abstractmethod
    async def read(self) -> bytes:
        """The next chunk of console output; b"" once the console is closed."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class EventSubscription(abc.ABC):
    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[LifecycleEvent]: ...

    @abc.abstractmethod
    async def get(self, wait: float | None = None) -> LifecycleEvent: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class ComputeDriver(abc.ABC):
    owner: str
    virt_type: str  # "kvm", or "qemu" when guests run under TCG emulation

    @abc.abstractmethod
    async def close(self) -> None: ...

    # -- definition ------------------------------------------------------------------------
    @abc.abstractmethod
    async def define(self, spec: DomainSpec, *, may_exist: bool = True) -> ParsedDomain:
        """Define (or, with may_exist, re-define the same UUID) a domain; it stays stopped."""

    @abc.abstractmethod
    async def undefine(self, name: str, *, if_exists: bool = True, force: bool = False) -> bool:
        """Remove the definition; a running domain needs force (it is destroyed first).
        Returns False if there was nothing to remove."""

    @abc.abstractmethod
    async def get(self, name: str) -> ParsedDomain: ...

    @abc.abstractmethod
    async def exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    async def list_owned(self, names: Sequence[str] | None = None) -> list[DomainStatus]:
        """Our domains (those among `names`, if given) with their state, read together: the
        cost of one backend round trip, not one per domain."""

    # -- power -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def start(self, name: str) -> None:
        """Boot a stopped domain (Conflict if it runs already)."""

    @abc.abstractmethod
    async def stop(self, name: str, *, force: bool = False, grace: float = 30.0) -> bool:
        """ACPI shutdown, waiting up to `grace` s, then power off; `force` powers off at once.
        A stopped domain is left alone. Returns True if the guest shut down by itself."""

    @abc.abstractmethod
    async def reboot(self, name: str, *, force: bool = False) -> None: ...

    @abc.abstractmethod
    async def freeze(self, name: str) -> None: ...

    @abc.abstractmethod
    async def unfreeze(self, name: str) -> None: ...

    @abc.abstractmethod
    async def state(self, name: str) -> DomainStatus: ...

    # -- configuration ---------------------------------------------------------------------
    @abc.abstractmethod
    async def set_limits(self, name: str, *, vcpus: int | None = None,
                         memory_mib: int | None = None) -> LimitsChange: ...

    @abc.abstractmethod
    async def attach_disk(self, name: str, disk: Disk) -> str:
        """Attach (live too if running); returns the device name. Idempotent per RBD image."""

    @abc.abstractmethod
    async def detach_disk(self, name: str, target: str, *, if_exists: bool = True) -> bool: ...

    @abc.abstractmethod
    async def attach_nic(self, name: str, nic: Nic) -> None:
        """Attach (live too if running). Idempotent per MAC."""

    @abc.abstractmethod
    async def detach_nic(self, name: str, mac: str, *, if_exists: bool = True) -> bool: ...

    # -- host-side NIC plumbing (host_nic.HostNicCompute; none for a libvirtd of our own) --
    async def host_nic_ports(self) -> set[str]:
        """OVN port ids of the host-side NIC plumbing this driver made and still holds."""
        return set()

    async def remove_host_nic(self, port_id: str) -> bool:
        """Remove the host-side plumbing of `port_id` (a leftover); False if there was none."""
        return False

    # -- secrets (cephx keys QEMU uses to open RBD images) -------------------------------
    @abc.abstractmethod
    async def ensure_ceph_secret(self, uuid: str, user: str, key_base64: str) -> None: ...

    @abc.abstractmethod
    async def delete_ceph_secret(self, uuid: str, *, if_exists: bool = True) -> bool: ...

    # -- observation -----------------------------------------------------------------------
    @abc.abstractmethod
    def subscribe(self) -> EventSubscription:
        """Lifecycle events of every domain on this connection, delivered to the calling loop."""

    @abc.abstractmethod
    async def open_console(self, name: str) -> ConsoleStream: ...

    @abc.abstractmethod
    async def read_console_log(self, name: str, max_bytes: int = 1 << 20) -> bytes: ...
