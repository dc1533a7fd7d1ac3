"""Guest NICs for a libvirtd outside the member's network namespace (`compute.libvirt: host`).

Our Open vSwitch (br-int) runs in the member's namespace; a host libvirtd's QEMU runs in the
host's, where it cannot open a TAP of that bridge. So each guest NIC gets a veth pair:
- the namespace end is a br-int port with external_ids:iface-id = the OVN port (what libvirt's
  <virtualport type='openvswitch'> sets on the private path), so ovn-controller binds it;
- the host end carries the guest: <interface type='direct'> (macvtap, passthrough mode) on it,
  with the OVN port's MAC, virtio and the guest's own checksums (domain_xml.nic_element).
Measured on a TCG host (see doc/preseed.md): DHCP from OVN, ICMP and TCP from a port on the
switch, hot-plug and unplug, QEMU as the host's unprivileged QEMU user.

Names come from (namespace, port id), so a restarted daemon finds its veths again and two
microclouds on one host never share one: host end "mcv" + 12 hex, namespace end "mcw" + the
same 12. The host end's alias, "microcloud:<namespace>:<port id>", says whose it is and for
which port, so leftovers can be listed and removed (`list` / `remove`).

    nics = HostNics(netns, ovs_db_sock, bridge="br-int")
    dev = await nics.ensure(port_id, mac)   # idempotent; the host end for the domain XML
    await nics.remove(port_id)              # idempotent
    await nics.list()                       # {port id: host end} of ours

`HostNicCompute` wraps the libvirt driver so that every path which starts a guest or plugs a NIC
(launch, start, restart, autostart, the reconciler's redefinitions, hot-plug) finds its veths
there, and undefine, detach and a redefinition without a NIC remove them: the services see an
ordinary ComputeDriver and only the reconciler's leftover sweep knows about host NICs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from microcloudd.api.errors import Internal, Unavailable
from microcloudd.drivers.compute.base import ComputeDriver, ConsoleStream, EventSubscription
from microcloudd.drivers.compute.types import (
    Disk,
    DomainSpec,
    DomainStatus,
    LimitsChange,
    Nic,
    NicKind,
    ParsedDomain,
)

log = logging.getLogger(__name__)

ALIAS_PREFIX = "microcloud:"
_TIMEOUT = 20.0


async def _run(*argv: str, check: bool = True) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError as e:
        raise Unavailable(f"{argv[0]} is not installed") from e
    try:
        out, err = await asyncio.wait_for(proc.communicate(), _TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise Internal(f"{' '.join(argv[:5])} took more than {_TIMEOUT:.0f} s") from None
    if check and proc.returncode != 0:
        raise Internal(f"{' '.join(argv[:6])} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


class HostNics:
    """veth pairs between the host namespace (guest side) and `netns` (the br-int port)."""

    def __init__(self, netns: str, ovs_db_sock: Path, bridge: str = "br-int") -> None:
        self.netns, self.bridge = netns, bridge
        self._db = f"unix:{Path(ovs_db_sock).absolute()}"

    def names(self, port_id: str) -> tuple[str, str]:
        """(host end, namespace end) of `port_id`'s veth: 15 characters each."""
        h = hashlib.sha256(f"{self.netns}/{port_id}".encode()).hexdigest()[:12]
        return f"mcv{h}", f"mcw{h}"

    def alias(self, port_id: str) -> str:
        return f"{ALIAS_PREFIX}{self.netns}:{port_id}"

    async def _vsctl(self, *args: str) -> str:
        return await _run("ovs-vsctl", f"--db={self._db}", "--timeout=10", *args)

    async def _exists(self, dev: str, netns: str | None = None) -> bool:
        prefix = ["-n", netns] if netns else []
        return bool(await _run("ip", *prefix, "-o", "link", "show", "dev", dev, check=False))

    async def ensure(self, port_id: str, mac: str) -> str:
        """The veth of `port_id` with its namespace end bound to the OVN port; the host end."""
        host, peer = self.names(port_id)
        ns = self.netns
        if not await self._exists(host):
            await _run("ip", "-n", ns, "link", "del", peer, check=False)  # half of a crashed creation
            await _run("ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
        # no IPv6 link-local address (so no ND/RS of the host's own) on either end
        await _run("ip", "link", "set", host, "alias", self.alias(port_id), "addrgenmode", "none", "up")
        await _run("ip", "-n", ns, "link", "set", peer, "addrgenmode", "none", "up")
        await self._vsctl("--may-exist", "add-port", self.bridge, peer, "--", "set", "Interface", peer,
                          f"external_ids:iface-id={port_id}", f'external_ids:attached-mac="{mac}"',
                          "external_ids:iface-status=active")
        return host

    async def remove(self, port_id: str) -> bool:
        """The br-int port and both veth ends of `port_id`; False if there was nothing."""
        host, peer = self.names(port_id)
        await self._vsctl("--if-exists", "del-port", self.bridge, peer)
        found = False
        if await self._exists(host):
            await _run("ip", "link", "del", host)  # takes the peer with it
            found = True
        if await self._exists(peer, self.netns):
            await _run("ip", "-n", self.netns, "link", "del", peer, check=False)
            found = True
        return found

    async def list(self) -> dict[str, str]:
        """{port id: host end} of every veth of ours in the host namespace."""
        out = await _run("ip", "-j", "link", "show", "type", "veth")
        mine = f"{ALIAS_PREFIX}{self.netns}:"
        found = {}
        for link in json.loads(out or "[]"):
            alias = link.get("ifalias") or ""
            if alias.startswith(mine):
                found[alias.removeprefix(mine)] = link.get("ifname", "")
        return found


class HostNicCompute(ComputeDriver):
    """A ComputeDriver whose NICs are realised as `HostNics` veths (see the module doc)."""

    def __init__(self, inner: ComputeDriver, nics: HostNics) -> None:
        self.inner, self.nics = inner, nics
        self.owner, self.virt_type = inner.owner, inner.virt_type

    def __getattr__(self, name: str) -> object:  # anything beyond the interface: the inner driver's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _direct(self, nic: Nic) -> Nic:
        host, _ = self.nics.names(nic.port_id)
        return dataclasses.replace(nic, kind=NicKind.DIRECT, host_dev=host, bridge=self.nics.bridge)

    async def _plug(self, nics: list[Nic] | tuple[Nic, ...]) -> None:
        for nic in nics:
            if nic.kind is NicKind.DIRECT:
                await self.nics.ensure(nic.port_id, nic.mac)

    async def _unplug(self, nics: list[Nic] | tuple[Nic, ...]) -> None:
        for nic in nics:
            if nic.kind is NicKind.DIRECT:
                await self.nics.remove(nic.port_id)

    async def _nics_of(self, name: str) -> list[Nic]:
        return (await self.inner.get(name)).nics if await self.inner.exists(name) else []

    async def close(self) -> None:
        await self.inner.close()

    # -- definition: NICs become direct ones; a NIC dropped by a redefinition is unplugged ----
    async def define(self, spec: DomainSpec, *, may_exist: bool = True) -> ParsedDomain:
        spec = dataclasses.replace(spec, nics=tuple(self._direct(n) for n in spec.nics))
        before = await self._nics_of(spec.name) if may_exist else []
        parsed = await self.inner.define(spec, may_exist=may_exist)
        kept = {n.port_id for n in spec.nics}
        await self._unplug([n for n in before if n.port_id not in kept])
        return parsed

    async def undefine(self, name: str, *, if_exists: bool = True, force: bool = False) -> bool:
        nics = await self._nics_of(name)
        done = await self.inner.undefine(name, if_exists=if_exists, force=force)
        await self._unplug(nics)
        return done

    async def get(self, name: str) -> ParsedDomain:
        return await self.inner.get(name)

    async def exists(self, name: str) -> bool:
        return await self.inner.exists(name)

    async def list_owned(self, names: Sequence[str] | None = None) -> list[DomainStatus]:
        return await self.inner.list_owned(names)

    # -- power: the veths exist before QEMU opens them --------------------------------------
    async def start(self, name: str) -> None:
        await self._plug(await self._nics_of(name))
        await self.inner.start(name)

    async def stop(self, name: str, *, force: bool = False, grace: float = 30.0) -> bool:
        return await self.inner.stop(name, force=force, grace=grace)

    async def reboot(self, name: str, *, force: bool = False) -> None:
        await self.inner.reboot(name, force=force)  # the same QEMU: its macvtaps stay

    async def freeze(self, name: str) -> None:
        await self.inner.freeze(name)

    async def unfreeze(self, name: str) -> None:
        await self.inner.unfreeze(name)

    async def state(self, name: str) -> DomainStatus:
        return await self.inner.state(name)

    # -- configuration ---------------------------------------------------------------------
    async def set_limits(self, name: str, *, vcpus: int | None = None,
                         memory_mib: int | None = None) -> LimitsChange:
        return await self.inner.set_limits(name, vcpus=vcpus, memory_mib=memory_mib)

    async def attach_disk(self, name: str, disk: Disk) -> str:
        return await self.inner.attach_disk(name, disk)

    async def detach_disk(self, name: str, target: str, *, if_exists: bool = True) -> bool:
        return await self.inner.detach_disk(name, target, if_exists=if_exists)

    async def attach_nic(self, name: str, nic: Nic) -> None:
        direct = self._direct(nic)
        await self.nics.ensure(direct.port_id, direct.mac)
        await self.inner.attach_nic(name, direct)

    async def detach_nic(self, name: str, mac: str, *, if_exists: bool = True) -> bool:
        gone = [n for n in await self._nics_of(name) if n.mac.lower() == mac.lower()]
        done = await self.inner.detach_nic(name, mac, if_exists=if_exists)
        await self._unplug(gone)
        return done

    async def host_nic_ports(self) -> set[str]:
        return set(await self.nics.list())

    async def remove_host_nic(self, port_id: str) -> bool:
        return await self.nics.remove(port_id)

    # -- secrets and observation -------------------------------------------------------------
    async def ensure_ceph_secret(self, uuid: str, user: str, key_base64: str) -> None:
        await self.inner.ensure_ceph_secret(uuid, user, key_base64)

    async def delete_ceph_secret(self, uuid: str, *, if_exists: bool = True) -> bool:
        return await self.inner.delete_ceph_secret(uuid, if_exists=if_exists)

    def subscribe(self) -> EventSubscription:
        return self.inner.subscribe()

    async def open_console(self, name: str) -> ConsoleStream:
        return await self.inner.open_console(name)

    async def read_console_log(self, name: str, max_bytes: int = 1 << 20) -> bytes:
        return await self.inner.read_console_log(name, max_bytes)
