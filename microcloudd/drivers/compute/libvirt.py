"""The libvirt compute driver: KVM/TCG domains through libvirt-python, async on the surface.

Every libvirt call runs on the process's libvirt thread (see libvirt_thread); each public
method is one job there, so a method's steps are not interleaved with other calls. Only
domains whose <metadata> names our owner are ever touched; others look absent.
Config changes (limits, devices) always rewrite the persistent definition (so they hold at
the next start on any driver, test:/// included) and are applied live where libvirt can.

Power states come from one `virConnectGetAllDomainStats` call (the STATE group: no job, no
QEMU monitor) for every domain or the ones asked for. A stopped domain's figures are its
definition's; a running one's come from virDomainGetInfo (the balloon as libvirt last saw it,
CPU time from its cgroup; no monitor either), one round trip per running domain. What a
definition says (owner tag, instance, virtualization, vCPUs, memory) is read once per
definition and kept by UUID (`_Known`); libvirt's DEFINED/UNDEFINED and metadata-change events,
our own (re)definitions and a closed connection drop it. Listing 500 stopped domains is then
one libvirtd round trip instead of 1,500; the BALLOON/VCPU stats groups would cost a monitor
call per running domain (~4 ms each under TCG).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from microcloudd.api.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unavailable
from microcloudd.drivers.compute import domain_xml as dx
from microcloudd.drivers.compute import validate
from microcloudd.drivers.compute.base import ComputeDriver, ConsoleStream
from microcloudd.drivers.compute.console import LibvirtConsole, tail
from microcloudd.drivers.compute.events import RESYNC, EventHub, Subscription
from microcloudd.drivers.compute.libvirt_errors import translate
from microcloudd.drivers.compute.libvirt_thread import LibvirtThread
from microcloudd.drivers.compute.secret_xml import ceph_secret_xml
from microcloudd.drivers.compute.types import (
    Disk,
    DomainSpec,
    DomainStatus,
    EventKind,
    LimitsChange,
    Nic,
    ParsedDomain,
    PowerState,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_RECONNECT_WAIT = 10.0  # s a call waits for a lost libvirt connection to come back
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 2.0  # s between attempts to reopen it
_JOIN_WAIT = 5.0  # s close() waits for the reconnect thread
_OPEN_FLOOR = 5.0  # s at least that a guest start's own connection may take to open (see _run_long)
_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "I/O error on the connection",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd closed the connection (exited?)",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "libvirtd stopped answering keepalives",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "the connection was closed",
}

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.ERROR,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.FROZEN,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.STOPPING,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.ERROR,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.FROZEN,
}
_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
# Power state of any number of domains in one round trip, without a job or the QEMU monitor.
_STATS = libvirt.VIR_DOMAIN_STATS_STATE
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF


@dataclass(frozen=True, slots=True)
class _Known:
    """What one (persistent) definition of a domain says: changes only with a (re)definition."""

    owner: str | None
    instance: str
    project: str
    virt_type: str
    vcpus: int
    memory_kib: int
    max_memory_kib: int

    @classmethod
    def parse(cls, xml: str) -> _Known:
        d = dx.parse_domain_xml(xml)
        return cls(d.owner, d.instance or "", d.project or "", d.virt_type, d.vcpus, d.memory_kib,
                   d.max_memory_kib)


class _Down(Exception):
    """Raised by a job on the libvirt thread: no usable connection. `started`: the job had
    begun its libvirt calls, so part of its work may have reached libvirtd."""

    def __init__(self, why: str, *, started: bool) -> None:
        super().__init__(why)
        self.why, self.started = why, started


class LibvirtDriver(ComputeDriver):
    """Use `await LibvirtDriver.connect(uri, owner)`; `await close()` when done.

    The connection survives libvirtd restarts: when it closes (libvirt's close callback:
    end of file, I/O error, keepalive timeout; or a call that finds its connection dead) the
    driver drops it (callbacks deregistered, connection closed), empties `_known`, and
    reopens the same URI from a reconnect thread, retrying with a capped backoff until it
    works or the driver is closed. The new connection gets the same callbacks (lifecycle,
    metadata change, close, keepalive) and every subscriber then gets `events.RESYNC`.
    Meanwhile a call waits up to `reconnect_wait` s for the connection (from the moment it
    was made) and then fails with Unavailable; a call the loss interrupted fails at once with
    Unavailable (it may or may not have taken effect), unless it only reads: that one is
    repeated on the new connection, within the same bound. A guest start's create runs on a
    short-lived connection of its own (`_run_long`), bounded the same way while libvirtd is
    down or restarting.
    """

    def __init__(self, lt: LibvirtThread, conn: libvirt.virConnect, uri: str, owner: str,
                 virt_type: str, reconnect_wait: float = DEFAULT_RECONNECT_WAIT,
                 guest_ceph_conf: Path | None = None) -> None:
        self._lt = lt
        self._uri = uri
        self.owner = owner
        self.virt_type = virt_type
        self.reconnect_wait = reconnect_wait
        self.guest_ceph_conf = guest_ceph_conf
        self._hub = EventHub()
        self._known: dict[str, _Known] = {}  # by domain UUID; libvirt thread only
        # The connection: written on the libvirt thread only; `_alive`, `_closed` and
        # `_waiters` under `_lock` (the asyncio side reads them).
        self._conn: libvirt.virConnect | None = conn
        self._callback_ids: list[int] = []
        self._lock = threading.Lock()
        self._alive = True
        self._closed = False
        self._lost_at = 0.0  # time.monotonic() of the last loss
        self._why = ""  # why the connection was lost, then why reopening it fails
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._teardown_timer: int | None = None
        self._reconnector: threading.Thread | None = None
        self._stop_reconnecting = threading.Event()

    @classmethod
    async def connect(cls, uri: str, owner: str, *, virt_type: str | None = None,
                      reconnect_wait: float = DEFAULT_RECONNECT_WAIT,
                      guest_ceph_conf: Path | None = None) -> LibvirtDriver:
        """`owner` tags every domain we define (e.g. the cluster member's name);
        `reconnect_wait`: how long a call waits for a lost connection to come back;
        `guest_ceph_conf`: a ceph.conf for QEMU's RBD client (domain_xml.guest_ceph_conf, bounded
        Ceph timeouts) every RBD disk is given, readable by QEMU at that path."""
        if not owner or any(c in owner for c in "<>&\"'"):
            raise InvalidArgument(f"invalid compute owner tag {owner!r}")
        if reconnect_wait < 0:
            raise InvalidArgument(f"reconnect_wait must not be negative, not {reconnect_wait}")
        lt = LibvirtThread.get()

        def open_conn() -> libvirt.virConnect:
            try:
                return libvirt.open(uri)
            except libvirt.libvirtError as e:
                raise Unavailable(f"cannot connect to libvirt at {uri}: {e.get_error_message()}") from None

        conn = await lt.call(open_conn)
        drv = cls(lt, conn, uri, owner, virt_type or dx.host_virt_type(), reconnect_wait, guest_ceph_conf)
        try:
            await lt.call(drv._register_events, conn)
        except libvirt.libvirtError as e:
            await lt.call(drv._drop, conn)
            raise Unavailable(f"cannot watch libvirt events at {uri}: {e.get_error_message()}") from None
        return drv

    def _register_events(self, conn: libvirt.virConnect) -> None:
        ids = self._callback_ids
        try:
            ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None))
            try:
                ids.append(conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, self._on_metadata, None))
            except libvirt.libvirtError:  # a driver without the event: our own changes still forget
                pass
        except libvirt.libvirtError:
            self._deregister(conn)
            raise
        try:  # the connection broke (or libvirtd exited): drop it and reconnect
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            pass
        try:  # notice a dead daemon within ~15 s (remote URIs; the test driver has no keepalive)
            conn.setKeepAlive(5, 3)
        except libvirt.libvirtError:
            pass

    def _on_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int,
                      opaque: object) -> None:
        if event in (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
            self._forget(dom)
        self._hub.on_lifecycle(conn, dom, event, detail, opaque)

    def _on_metadata(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, *_args: object) -> None:
        self._forget(dom)

    def _forget(self, dom: libvirt.virDomain) -> None:
        self._known.pop(dom.UUIDString(), None)

    # -- the connection: loss, reconnection, close -------------------------------------------
    def _on_close(self, conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        self._lost(conn, _CLOSE_REASONS.get(reason, f"the connection closed (reason {reason})"))

    def _lost(self, conn: libvirt.virConnect, why: str) -> None:
        """Any thread; may run inside a libvirt call (the close callback
        does), so the connection is dropped later, from a timer on the libvirt thread."""
        with self._lock:
            if conn is not self._conn or not self._alive or self._closed:
                return
            self._alive = False
            self._lost_at, self._why = time.monotonic(), why
        log.warning("lost the connection to libvirt at %s (%s): reconnecting", self._uri, why)
        self._teardown_timer = self._lt.call_later(0, self._teardown)

    def _teardown(self) -> None:
        """libvirt thread, from a timer: drop the dead connection, start reconnecting."""
        self._teardown_timer = None
        self._known.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            self._drop(conn)
        if self._closed:
            return
        self._stop_reconnecting.clear()
        self._reconnector = threading.Thread(target=self._reconnect, name="libvirt-reconnect", daemon=True)
        self._reconnector.start()

    def _reconnect(self) -> None:
        """The reconnect thread (one per outage). It only opens connections: a libvirtd that
        accepts but does not answer (starting, or stuck) blocks virConnectOpen, which has no
        timeout and no keepalive yet, and must not block the libvirt thread. Everything else
        (events, callbacks) happens on the libvirt thread, in `_adopt`."""
        backoff = _BACKOFF_FIRST
        while not self._stop_reconnecting.is_set():
            try:
                conn = libvirt.open(self._uri)
            except libvirt.libvirtError as e:
                self._why = f"cannot reconnect: {(e.get_error_message() or str(e)).strip()}"
            else:
                try:
                    if self._lt.submit(functools.partial(self._adopt, conn)).result():
                        return
                except Exception as e:  # registering failed: the connection was dropped
                    self._why = f"cannot watch events after reconnecting: {e}"
            self._stop_reconnecting.wait(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _adopt(self, conn: libvirt.virConnect) -> bool:
        """libvirt thread: make `conn` the driver's connection (False: the driver is closed)."""
        if self._closed:
            self._drop(conn)
            return False
        try:
            self._register_events(conn)
        except libvirt.libvirtError:
            self._drop(conn)
            raise
        self._known.clear()  # whatever changed while we were away
        self._conn = conn
        with self._lock:
            self._alive = True
            waiters, self._waiters = self._waiters, []
            down = time.monotonic() - self._lost_at
        log.warning("reconnected to libvirt at %s after %.1f s", self._uri, down)
        _wake(waiters)
        self._hub.publish(RESYNC)
        return True

    def _deregister(self, conn: libvirt.virConnect) -> None:
        # On a dead remote connection libvirt drops the callbacks locally, then fails to tell
        # the daemon: the error is expected.
        for cid in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(cid)
            except libvirt.libvirtError:
                pass
        self._callback_ids = []

    def _drop(self, conn: libvirt.virConnect) -> None:
        """libvirt thread: deregister every callback of `conn`, then close it."""
        self._deregister(conn)
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        self._stop_reconnecting.set()
        _wake(waiters)

        def close_sync() -> threading.Thread | None:
            if self._teardown_timer is not None:
                self._lt.cancel(self._teardown_timer)
                self._teardown_timer = None
            conn, self._conn = self._conn, None
            if conn is not None:
                # Deregister before closing, or libvirt keeps the connection's watches alive.
                self._drop(conn)
            self._known.clear()
            return self._reconnector

        reconnector = await self._lt.call(close_sync)
        if reconnector is not None:
            # it returns at once unless stuck in virConnectOpen on a libvirtd that does not answer
            await asyncio.to_thread(reconnector.join, _JOIN_WAIT)
            if reconnector.is_alive():
                log.warning("libvirt reconnect thread for %s is stuck opening a connection", self._uri)

    # -- plumbing --------------------------------------------------------------------------
    def _unavailable(self, action: str) -> Unavailable:
        with self._lock:
            if self._closed:
                return Unavailable(f"cannot {action}: the libvirt driver is closed")
            down = time.monotonic() - self._lost_at
        return Unavailable(f"cannot {action}: libvirt at {self._uri} is unreachable ({self._why}); "
                           f"reconnecting for {down:.1f} s already", uri=self._uri)

    async def _wait_connected(self, action: str, deadline: float) -> None:
        """Return once the connection is up; Unavailable at `deadline` or if the driver closes."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                closed, alive = self._closed, self._alive
                if not closed and not alive:
                    waiter = (loop, loop.create_future())
                    self._waiters.append(waiter)
            if closed:
                raise self._unavailable(action)
            if alive:
                return
            try:
                async with asyncio.timeout_at(loop.time() + max(0.0, deadline - time.monotonic())):
                    await waiter[1]
            except TimeoutError:
                raise self._unavailable(action) from None
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    async def _run(self, action: str, fn: Callable[..., T], *args: Any, reads: bool = False) -> T:
        """Run `fn(*args)` on the libvirt thread, libvirtError translated with `action`.
        `reads`: `fn` changes nothing, so it may be repeated if the connection breaks under it."""
        deadline = time.monotonic() + self.reconnect_wait

        def job() -> T:
            conn = self._conn
            if conn is None or not self._alive:
                raise _Down(self._why, started=False)
            try:
                return fn(*args)
            except libvirt.libvirtError as e:
                if not self._broken(conn):
                    raise translate(e, action) from None
                why = (e.get_error_message() or str(e)).strip()
                self._lost(conn, why)
                raise _Down(why, started=True) from None

        while True:
            await self._wait_connected(action, deadline)
            try:
                return await self._lt.call(job)
            except _Down as e:
                if e.started and not reads:
                    raise Unavailable(f"cannot {action}: the connection to libvirt at {self._uri} broke "
                                      f"during the call ({e.why}); it may or may not have taken effect",
                                      uri=self._uri) from None

    @property
    def _c(self) -> libvirt.virConnect:
        """The connection, in a job of `_run` (which checked it is there)."""
        assert self._conn is not None
        return self._conn

    def _broken(self, conn: libvirt.virConnect) -> bool:
        """libvirt thread, after a libvirtError: is `conn` dead? (isAlive asks nothing of libvirtd)"""
        if not self._alive:  # the close callback ran inside the failing call
            return True
        try:
            return not conn.isAlive()
        except libvirt.libvirtError:
            return True

    def _find(self, name: str) -> libvirt.virDomain | None:
        """Our domain called `name`, or None (absent, or someone else's)."""
        try:
            dom = self._c.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        return dom if self._owner_of(dom) == self.owner else None

    def _owned(self, name: str) -> libvirt.virDomain:
        dom = self._find(name)
        if dom is None:
            raise NotFound(f"instance {name!r} has no libvirt domain on this member")
        return dom

    def _owner_of(self, dom: libvirt.virDomain) -> str | None:
        try:
            return self._known_of(dom).owner
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile: absent
                return None
            raise

    def _known_of(self, dom: libvirt.virDomain) -> _Known:
        """What `dom`'s definition says: one XML read per definition (the UUID is in the handle)."""
        uuid = dom.UUIDString()
        known = self._known.get(uuid)
        if known is None:
            known = self._known[uuid] = _Known.parse(dom.XMLDesc(_INACTIVE))
        return known

    def _status(self, dom: libvirt.virDomain, known: _Known, state: int) -> DomainStatus:
        if state == _SHUTOFF:  # the definition says it all
            max_kib, cur_kib, vcpus, cpu_ns = known.max_memory_kib, known.memory_kib, known.vcpus, 0
        else:  # live figures
            state, max_kib, cur_kib, vcpus, cpu_ns = dom.info()
            if state == _SHUTOFF:  # it stopped meanwhile
                max_kib, cur_kib, vcpus, cpu_ns = known.max_memory_kib, known.memory_kib, known.vcpus, 0
        return DomainStatus(
            name=dom.name(), uuid=dom.UUIDString(), instance=known.instance, project=known.project,
            state=_STATES.get(state, PowerState.ERROR), vcpus=vcpus, memory_kib=cur_kib,
            max_memory_kib=max_kib, cpu_time_ns=cpu_ns, virt_type=known.virt_type,
        )

    def _statuses(self, doms: list[libvirt.virDomain] | None) -> list[DomainStatus]:
        """Our domains among `doms` (None: all of this connection's), their states in one call."""
        if doms is None:
            listed = self._c.getAllDomainStats(_STATS, 0)
        elif doms:
            listed = self._c.domainListGetStats(doms, _STATS, 0)
        else:
            return []
        out = []
        for dom, stats in listed:
            try:
                known = self._known_of(dom)
                if known.owner == self.owner:
                    out.append(self._status(dom, known, stats.get("state.state", libvirt.VIR_DOMAIN_NOSTATE)))
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
                    raise
                self._forget(dom)
        return out

    def _redefine(self, dom: libvirt.virDomain, edit: Callable[[ET.Element], object]) -> None:
        """Rewrite the persistent definition: applies at the next start, on any driver."""
        root = ET.fromstring(dom.XMLDesc(_INACTIVE))
        edit(root)
        self._forget(dom)
        self._c.defineXML(ET.tostring(root, encoding="unicode"))

    # -- definition ------------------------------------------------------------------------
    async def define(self, spec: DomainSpec, *, may_exist: bool = True) -> ParsedDomain:
        validate.check_spec(spec)
        xml = dx.build_domain_xml(spec, self.owner, self.virt_type, self.guest_ceph_conf)
        return await self._run(f"define instance {spec.instance!r}", self._define_sync, spec, xml, may_exist)

    def _define_sync(self, spec: DomainSpec, xml: str, may_exist: bool) -> ParsedDomain:
        try:
            existing = self._c.lookupByName(spec.name)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            existing = None
        if existing is not None:
            if self._owner_of(existing) != self.owner:
                raise AlreadyExists(f"a libvirt domain named {spec.name!r} exists and is not ours")
            if not may_exist:
                raise AlreadyExists(f"instance {spec.instance!r} is already defined")
            if existing.UUIDString() != spec.uuid:
                raise AlreadyExists(f"instance {spec.instance!r} is already defined with another UUID "
                                    f"({existing.UUIDString()})")
        else:
            try:
                other = self._c.lookupByUUIDString(spec.uuid)
                raise AlreadyExists(f"UUID {spec.uuid} is already used by domain {other.name()!r}")
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        dom = self._c.defineXML(xml)
        self._forget(dom)
        return dx.parse_domain_xml(dom.XMLDesc(_INACTIVE))

    async def undefine(self, name: str, *, if_exists: bool = True, force: bool = False) -> bool:
        return await self._run(f"delete instance {name!r}", self._undefine_sync, name, if_exists, force)

    def _undefine_sync(self, name: str, if_exists: bool, force: bool) -> bool:
        dom = self._find(name)
        if dom is None:
            if if_exists:
                return False
            raise NotFound(f"instance {name!r} has no libvirt domain on this member")
        if dom.isActive():
            if not force:
                raise Conflict(f"instance {name!r} is running: stop it first, or force the deletion")
            dom.destroy()
        try:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                              | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                raise
            dom.undefine()  # a driver without those flags (none of that state can exist there)
        self._forget(dom)
        return True

    async def get(self, name: str) -> ParsedDomain:
        def get_sync() -> ParsedDomain:
            return dx.parse_domain_xml(self._owned(name).XMLDesc(_INACTIVE))

        return await self._run(f"read instance {name!r}", get_sync, reads=True)

    async def exists(self, name: str) -> bool:
        return await self._run(f"look up instance {name!r}", lambda: self._find(name) is not None, reads=True)

    async def list_owned(self, names: Sequence[str] | None = None) -> list[DomainStatus]:
        def list_sync() -> list[DomainStatus]:
            if names is None:
                return self._statuses(None)
            doms = [d for d in map(self._find, dict.fromkeys(names)) if d is not None]
            return self._statuses(doms)

        return await self._run("list instances", list_sync, reads=True)

    # -- power -----------------------------------------------------------------------------
    async def start(self, name: str) -> None:
        action = f"start instance {name!r}"

        def prepare() -> libvirt.virDomain:
            dom = self._owned(name)
            if dom.isActive():
                raise Conflict(f"instance {name!r} is already running")
            conf = self.guest_ceph_conf
            if conf is not None and dx.set_rbd_config(ET.fromstring(dom.XMLDesc(_INACTIVE)), conf):
                self._redefine(dom, lambda root: dx.set_rbd_config(root, conf))  # defined before it was set
            return dom

        uuid = await self._run(action, lambda: prepare().UUIDString())
        # QEMU opens its RBD disks before libvirt's create returns: with Ceph unreachable that
        # takes up to the guest ceph.conf's client_mount_timeout (300 s without one). So the
        # call runs off the libvirt thread, on a connection of its own (sharing the main one
        # between threads delayed other calls by up to a keepalive interval, measured), and the
        # driver's other calls go on meanwhile.
        await self._run_long(action, lambda dom: dom.create(), uuid)

    async def _run_long(self, action: str, fn: Callable[[libvirt.virDomain], T], uuid: str) -> T:
        """`fn(domain)` on a libvirt-long thread over a short-lived connection of its own; errors
        translated as `_run`'s. While libvirtd is down or restarting this fails with Unavailable
        instead of hanging: the connection is opened (retried while refused) for at most
        max(reconnect_wait, _OPEN_FLOOR) s once a long thread is free (waiting for a free one
        is not bounded: starts queue behind each other, not behind other calls), and an open
        still blocked then (a libvirtd that accepts but does not answer yet) is abandoned: its
        connection is closed when it comes. Once `fn` runs, the connection's keepalive (as the
        main one's) notices a dead or stuck libvirtd; a connection that breaks under `fn`:
        Unavailable, it may or may not have taken effect."""
        await self._wait_connected(action, time.monotonic() + self.reconnect_wait)
        open_wait = max(self.reconnect_wait, _OPEN_FLOOR)
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        gave_up = threading.Event()
        handoff = threading.Lock()  # `opened` set xor `gave_up` set

        def job() -> T:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # caller cancelled
                started.set_result(None)
            conn = self._open_short(action, time.monotonic() + open_wait, gave_up)
            try:
                with handoff:
                    if gave_up.is_set():
                        raise self._unavailable(action)  # nobody reads it
                    opened.set_result(None)
                if self._closed:
                    raise self._unavailable(action)
                return fn(conn.lookupByUUIDString(uuid))
            except libvirt.libvirtError as e:
                alive = False
                with contextlib.suppress(libvirt.libvirtError):
                    alive = bool(conn.isAlive())
                if alive:
                    raise translate(e, action) from None
                why = (e.get_error_message() or str(e)).strip()
                raise Unavailable(f"cannot {action}: the connection to libvirt at {self._uri} broke "
                                  f"during the call ({why}); it may or may not have taken effect",
                                  uri=self._uri) from None
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()

        result = self._lt.call_long(job)
        result_w, opened_w = asyncio.wrap_future(result), asyncio.wrap_future(opened)
        try:
            await asyncio.wrap_future(started)
            # the job's own retries end at open_wait: the grace lets its reason arrive first
            either: list[asyncio.Future[Any]] = [opened_w, result_w]
            await asyncio.wait(either, timeout=open_wait + 1.0,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            with handoff:
                if not opened.done():
                    gave_up.set()
            if gave_up.is_set():
                result.cancel()  # still queued (we were cancelled): never runs
                if not result_w.done():  # else its outcome is raised below
                    result_w.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody awaits it
        if gave_up.is_set() and not result_w.done():
            raise Unavailable(f"cannot {action}: libvirt at {self._uri} accepts connections but does not "
                              f"answer them (for {open_wait:.1f} s)", uri=self._uri)
        return await result_w

    def _open_short(self, action: str, deadline: float, gave_up: threading.Event) -> libvirt.virConnect:
        """A libvirt-long thread: `_run_long`'s connection, with the main one's keepalive; retried
        with the reconnect backoff while refused (libvirtd restarting) until `deadline`."""
        backoff = _BACKOFF_FIRST
        while True:
            try:
                conn = libvirt.open(self._uri)
            except libvirt.libvirtError as e:
                why = (e.get_error_message() or str(e)).strip()
                if gave_up.is_set() or time.monotonic() + backoff > deadline:
                    raise Unavailable(f"cannot {action}: cannot connect to libvirt at {self._uri}: {why}",
                                      uri=self._uri) from None
                gave_up.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            with contextlib.suppress(libvirt.libvirtError):
                conn.setKeepAlive(5, 3)  # a dead or stuck libvirtd fails the call in ~20 s
            return conn

    async def stop(self, name: str, *, force: bool = False, grace: float = 30.0) -> bool:
        if grace < 0:
            raise InvalidArgument(f"the shutdown grace period must not be negative, not {grace}")

        def begin() -> str:
            dom = self._owned(name)
            if not dom.isActive():
                return "stopped"
            if force:
                dom.destroy()
                return "destroyed"
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()  # a frozen guest cannot see the ACPI power button
            dom.shutdown()
            return "requested"

        with self._hub.subscribe() as sub:
            outcome = await self._run(f"stop instance {name!r}", begin)
            if outcome != "requested":
                return False
            if await self._wait_stopped(name, sub, grace):
                return True
        await self._run(f"force-stop instance {name!r}", self._destroy_if_active, name)
        return False

    def _destroy_if_active(self, name: str) -> None:
        dom = self._find(name)
        if dom is not None and dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # it stopped meanwhile
                    raise

    async def _wait_stopped(self, name: str, sub: Subscription, grace: float) -> bool:
        deadline = time.monotonic() + grace
        while True:
            if not await self._run(f"check instance {name!r}", self._is_active, name, reads=True):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # the STOPPED event wakes us early; the poll covers an event lost to a reconnect
            try:
                async with asyncio.timeout(min(left, 0.5)):
                    async for ev in sub:
                        if ev.name == name and ev.kind == EventKind.STOPPED:
                            break
            except TimeoutError:
                pass

    def _is_active(self, name: str) -> bool:
        dom = self._find(name)
        return bool(dom is not None and dom.isActive())

    def _running(self, name: str, what: str) -> libvirt.virDomain:
        dom = self._owned(name)
        if not dom.isActive():
            raise Conflict(f"instance {name!r} is not running: cannot {what} it")
        return dom

    async def reboot(self, name: str, *, force: bool = False) -> None:
        def reboot_sync() -> None:
            dom = self._running(name, "restart")
            if force:
                dom.reset(0)
            else:
                dom.reboot(0)

        await self._run(f"restart instance {name!r}", reboot_sync)

    async def freeze(self, name: str) -> None:
        def freeze_sync() -> None:
            dom = self._running(name, "freeze")
            if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                dom.suspend()

        await self._run(f"freeze instance {name!r}", freeze_sync)

    async def unfreeze(self, name: str) -> None:
        def unfreeze_sync() -> None:
            dom = self._running(name, "unfreeze")
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()

        await self._run(f"unfreeze instance {name!r}", unfreeze_sync)

    async def state(self, name: str) -> DomainStatus:
        def state_sync() -> DomainStatus:
            found = self._statuses([self._owned(name)])
            if not found:  # its definition changed hands since the lookup
                raise NotFound(f"instance {name!r} has no libvirt domain on this member")
            return found[0]

        return await self._run(f"read the state of instance {name!r}", state_sync, reads=True)

    # -- configuration ---------------------------------------------------------------------
    async def set_limits(self, name: str, *, vcpus: int | None = None,
                         memory_mib: int | None = None) -> LimitsChange:
        if vcpus is not None:
            validate.check_vcpus(vcpus)
        if memory_mib is not None:
            validate.check_memory(memory_mib)
        return await self._run(f"change the limits of instance {name!r}", self._set_limits_sync, name, vcpus,
                               memory_mib)

    def _set_limits_sync(self, name: str, vcpus: int | None, memory_mib: int | None) -> LimitsChange:
        dom = self._owned(name)

        def edit(root: ET.Element) -> None:
            if vcpus is not None:
                vcpu = root.find("vcpu")
                assert vcpu is not None
                vcpu.text = str(max(vcpus, int(vcpu.text or 0)))  # the maximum only grows
                vcpu.set("current", str(vcpus))
            if memory_mib is not None:
                mem, cur = root.find("memory"), root.find("currentMemory")
                assert mem is not None
                max_mib = max(memory_mib, dx._kib(mem) // 1024)
                mem.text, mem.attrib = str(max_mib), {"unit": "MiB"}
                if cur is None:
                    cur = ET.SubElement(root, "currentMemory")
                cur.text, cur.attrib = str(memory_mib), {"unit": "MiB"}

        self._redefine(dom, edit)
        if not dom.isActive():
            return LimitsChange(live=False, next_start=True)
        live = True
        try:
            if vcpus is not None and vcpus != dom.info()[3]:
                if vcpus > dom.maxVcpus():
                    live = False
                else:
                    dom.setVcpusFlags(vcpus, _LIVE)
            if memory_mib is not None and memory_mib * 1024 != dom.info()[2]:
                if memory_mib * 1024 > dom.maxMemory():
                    live = False
                else:
                    dom.setMemoryFlags(memory_mib * 1024, _LIVE)
        except libvirt.libvirtError:
            live = False  # e.g. a guest without hot-plug support: the next start applies it
        return LimitsChange(live=live, next_start=True)

    async def attach_disk(self, name: str, disk: Disk) -> str:
        validate.check_disk(disk)
        return await self._run(f"attach a disk to instance {name!r}", self._attach_disk_sync, name, disk)

    @staticmethod
    def _disks(root: ET.Element) -> dict[str, ET.Element]:
        out = {}
        for disk in root.findall("devices/disk"):
            target = disk.find("target")
            if target is not None:
                out[target.get("dev", "")] = disk
        return out

    @staticmethod
    def _appender(xml: str) -> Callable[[ET.Element], None]:
        def append(root: ET.Element) -> None:
            devices = root.find("devices")
            assert devices is not None
            devices.append(ET.fromstring(xml))

        return append

    def _attach_disk_sync(self, name: str, disk: Disk) -> str:
        dom = self._owned(name)
        active = bool(dom.isActive())
        persistent = self._disks(ET.fromstring(dom.XMLDesc(_INACTIVE)))
        live = self._disks(ET.fromstring(dom.XMLDesc(0))) if active else {}
        wanted = f"{disk.source.pool}/{disk.source.image}"
        for target, el in persistent.items():
            src = el.find("source")
            if src is not None and src.get("name") == wanted:
                if not active or target in live:
                    return target  # already attached: nothing to do
        used = set(persistent) | set(live)
        target = disk.target or dx.next_disk_target(used)
        if disk.target in persistent or disk.target in live:
            raise Conflict(f"device {disk.target} of instance {name!r} is used by another disk")
        xml = dx.to_xml(dx.disk_element(disk, target, self.guest_ceph_conf))
        if active:
            dom.attachDeviceFlags(xml, _LIVE)
        try:
            self._redefine(dom, self._appender(xml))
        except libvirt.libvirtError:
            if active:
                dom.detachDeviceFlags(xml, _LIVE)  # undo the live half
            raise
        return target

    async def detach_disk(self, name: str, target: str, *, if_exists: bool = True) -> bool:
        def detach_sync() -> bool:
            dom = self._owned(name)
            found = False
            if dom.isActive():
                live = self._disks(ET.fromstring(dom.XMLDesc(0))).get(target)
                if live is not None:
                    dom.detachDeviceFlags(dx.to_xml(live), _LIVE)
                    found = True
            found = self._remove_persistent(dom, lambda root: self._disks(root).get(target)) or found
            if not found and not if_exists:
                raise NotFound(f"instance {name!r} has no disk {target}")
            return found

        return await self._run(f"detach disk {target} from instance {name!r}", detach_sync)

    def _remove_persistent(self, dom: libvirt.virDomain,
                           pick: Callable[[ET.Element], ET.Element | None]) -> bool:
        root = ET.fromstring(dom.XMLDesc(_INACTIVE))
        el = pick(root)
        if el is None:
            return False
        devices = root.find("devices")
        assert devices is not None
        devices.remove(el)
        self._c.defineXML(ET.tostring(root, encoding="unicode"))
        return True

    @staticmethod
    def _nic(root: ET.Element, mac: str) -> ET.Element | None:
        for iface in root.findall("devices/interface"):
            m = iface.find("mac")
            if m is not None and (m.get("address") or "").lower() == mac.lower():
                return iface
        return None

    async def attach_nic(self, name: str, nic: Nic) -> None:
        validate.check_nic(nic)

        def attach_sync() -> None:
            dom = self._owned(name)
            active = bool(dom.isActive())
            in_config = self._nic(ET.fromstring(dom.XMLDesc(_INACTIVE)), nic.mac) is not None
            in_live = active and self._nic(ET.fromstring(dom.XMLDesc(0)), nic.mac) is not None
            xml = dx.to_xml(dx.nic_element(nic))
            if active and not in_live:
                dom.attachDeviceFlags(xml, _LIVE)
            if not in_config:
                try:
                    self._redefine(dom, self._appender(xml))
                except libvirt.libvirtError:
                    if active and not in_live:
                        dom.detachDeviceFlags(xml, _LIVE)
                    raise

        await self._run(f"attach a NIC to instance {name!r}", attach_sync)

    async def detach_nic(self, name: str, mac: str, *, if_exists: bool = True) -> bool:
        def detach_sync() -> bool:
            dom = self._owned(name)
            found = False
            if dom.isActive():
                live = self._nic(ET.fromstring(dom.XMLDesc(0)), mac)
                if live is not None:
                    dom.detachDeviceFlags(dx.to_xml(live), _LIVE)
                    found = True
            found = self._remove_persistent(dom, lambda root: self._nic(root, mac)) or found
            if not found and not if_exists:
                raise NotFound(f"instance {name!r} has no NIC with MAC {mac}")
            return found

        return await self._run(f"detach NIC {mac} from instance {name!r}", detach_sync)

    # -- secrets ---------------------------------------------------------------------------
    async def ensure_ceph_secret(self, uuid: str, user: str, key_base64: str) -> None:
        uuid = validate.check_uuid("the ceph secret", uuid)
        try:
            key = base64.b64decode(key_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("the ceph key is not valid base64") from None
        if not key:
            raise InvalidArgument("the ceph key is empty")
        xml = ceph_secret_xml(uuid, user)

        def ensure_sync() -> None:
            secret = self._c.secretDefineXML(xml, 0)  # defines, or updates the same UUID
            secret.setValue(key, 0)

        await self._run(f"store the ceph key of client.{user} in libvirt", ensure_sync)

    async def delete_ceph_secret(self, uuid: str, *, if_exists: bool = True) -> bool:
        uuid = validate.check_uuid("the ceph secret", uuid)

        def delete_sync() -> bool:
            try:
                secret = self._c.secretLookupByUUIDString(uuid)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_SECRET and if_exists:
                    return False
                raise
            secret.undefine()
            return True

        return await self._run(f"delete libvirt secret {uuid}", delete_sync)

    # -- observation -----------------------------------------------------------------------
    def subscribe(self) -> Subscription:
        return self._hub.subscribe()

    async def open_console(self, name: str) -> ConsoleStream:
        dom = await self._run(f"open the console of instance {name!r}", self._running, name, "attach to")
        return await LibvirtConsole.open(self._lt, self._conn, dom, name)

    async def read_console_log(self, name: str, max_bytes: int = 1 << 20) -> bytes:
        parsed = await self.get(name)
        if parsed.console_log is None:
            return b""
        return await asyncio.to_thread(tail, parsed.console_log, max_bytes)


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Wake callers waiting in `_wait_connected` (any thread; each future on its own loop)."""

    def done(fut: asyncio.Future[None]) -> None:
        if not fut.done():
            fut.set_result(None)

    for loop, fut in waiters:
        try:
            loop.call_soon_threadsafe(done, fut)
        except RuntimeError:  # that caller's loop is closed
            pass
