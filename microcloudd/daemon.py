"""microcloudd's composition root: config → database → drivers → services → REST.

Run as `microcloudd --state-dir DIR`; serves LXD's 1.0 API on DIR/unix.socket.

Start: the Microcloud database (a one-member Raft ovsdb-server under DIR/database, created on
the first start, reused later) through the Supervisor, then the API socket. If this member is
initialised (DIR/init/state.json), the whole stack starts in the background in dependency
order (microcloudd.stack), the drivers are built into the Cloud and the reconcilers start;
`microcloud status` answers meanwhile.

Stop (SIGTERM): operations, API, the running guests (an ACPI shutdown each, 30 s in all, then
power-off; each recorded `volatile.last_state.power=RUNNING`), reconcilers, drivers, then every
component in reverse start order, the database last. An uninitialised daemon exits within
STOP_BUDGET; with the stack, the components' own stop timeouts apply (typically 2-6 s; at
worst a Ceph OSD's 30 s flush), within the unit's TimeoutStopSec (90 s). After a restart the
instance reconciler starts again what ran before (`boot.autostart`, else the last state), and
the storage reconciler finishes or undoes image and volume work the old daemon left half done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import logging
import os
import signal
import socket
import sys
import time
import warnings
from pathlib import Path

from aiohttp import web

from microcloudd import __version__, hostinfo, logsetup, malloc
from microcloudd.api import endpoints
from microcloudd.api.declare import Op
from microcloudd.api.errors import MicrocloudError
from microcloudd.api.server import DatabaseStatus, Status
from microcloudd.components.supervisor import Supervisor
from microcloudd.db.service import DEFAULT_RAFT_PORT, DatabaseService
from microcloudd.events import EventBus, EventLogHandler
from microcloudd.notify import notify
from microcloudd.operations import OperationManager
from microcloudd.rest import envelope, openapi
from microcloudd.rest.access import GROUP
from microcloudd.rest.app import HandlerError, build_app
from microcloudd.rest.handlers import AREAS
from microcloudd.rest.handlers.init import InitHandlers
from microcloudd.rest.handlers.server import ServerHandlers
from microcloudd.services.cloud import Cloud
from microcloudd.stack import netns, runtime
from microcloudd.stack.layout import Layout
from microcloudd.statelock import StateLock

log = logging.getLogger("microcloudd")

DEFAULT_STATE_DIR = Path("/var/lib/microcloud")
SOCKET_NAME = "unix.socket"
STOP_BUDGET = 4.0  # seconds; systemd and the issue both expect an exit within 5 s


def default_state_dir() -> Path:
    # Inside the snap, SNAP_COMMON is the state dir; MICROCLOUD_DIR overrides (like LXD_DIR).
    env = os.environ.get("MICROCLOUD_DIR") or os.environ.get("SNAP_COMMON")
    return Path(env) if env else DEFAULT_STATE_DIR


class Daemon:
    def __init__(self, state_dir: Path, server_name: str | None = None, *,
                 extra_ops: tuple[Op, ...] = (), extra_handlers: tuple[object, ...] = (),
                 db_address: str | None = None) -> None:
        self.state_dir = state_dir
        # Extra endpoints beside the declared ones (tests exercise the operation machinery so).
        self.ops = (*endpoints.ALL, *extra_ops)
        self._extra_handlers = extra_handlers
        self.socket_path = state_dir / SOCKET_NAME
        self.server_name = server_name or hostinfo.default_server_name()
        self.started = time.monotonic()
        self._lock = StateLock(state_dir)
        self._runner: web.AppRunner | None = None
        self._server: ServerHandlers | None = None
        self._log_handler: logging.Handler | None = None
        self.events = EventBus(location=self.server_name)
        self.operations = OperationManager(self.events, location=self.server_name)
        self.supervisor = Supervisor()
        self.cloud = Cloud(state_dir, self.server_name, self.events, self.operations,
                           supervisor=self.supervisor)
        self.database = DatabaseService(state_dir, self.supervisor,
                                        raft_address=db_address or _raft_address(state_dir))
        self.runtime = runtime.Runtime(self.cloud, self.supervisor)

    def handler_objects(self) -> list[object]:
        doc = envelope.encode(openapi.build(endpoints.ALL, __version__))
        self._server = ServerHandlers(hostinfo.server_info(self.server_name), self.status, doc,
                                      self.operations, self.events)
        areas = [make(self.cloud) for make in AREAS]
        for obj in areas:
            if isinstance(obj, InitHandlers):
                obj.init.on_ready = self.runtime.member_ready
                obj.init.stack_state = lambda: self.runtime.state
        return [self._server, *areas, *self._extra_handlers]

    async def status(self) -> Status:
        db: DatabaseStatus | None = None
        if self.supervisor.pid("database") is not None:
            db = await self.database.status()
        storage, network = await self.runtime.summaries()
        return Status(
            server_name=self.server_name, version=__version__, pid=os.getpid(),
            uptime=round(time.monotonic() - self.started, 3), state_dir=str(self.state_dir),
            virtualization=hostinfo.virtualization(), database=db, components=self.supervisor.status(),
            storage=storage, network=network, initialized=self.runtime.initialized(),
        )

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self._lock.acquire()
        try:
            await self.database.start()
            self.cloud.db = await self.database.connect()
            app = build_app(self.ops, self.handler_objects())
            self._log_handler = EventLogHandler(self.events, asyncio.get_running_loop())
            logging.getLogger().addHandler(self._log_handler)
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()  # stale from a killed daemon; the lock proves it is ours
            await web.UnixSite(self._runner, str(self.socket_path)).start()
            _secure_socket(self.socket_path)
            self.runtime.start_in_background()
        except BaseException:
            await self.stop()
            raise
        notify(READY="1", STATUS=f"serving {self.socket_path}")
        log.info("microcloudd %s ready on %s", __version__, self.socket_path)

    async def stop(self) -> None:
        notify(STOPPING="1", STATUS="stopping")
        await self.operations.shutdown(timeout=STOP_BUDGET / 2)
        if self._server is not None:
            await self._server.close_event_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.runtime.stop()
        if self.cloud.db is not None:
            db, self.cloud.db = self.cloud.db, None
            await db.close()
        await self.supervisor.stop_all()  # reverse start order: the database last
        # The host routes for this member only while it runs: forwarding goes back off if it was
        # off before us and no other microcloud is here (the next start turns it on again).
        try:
            if await asyncio.to_thread(netns.restore_forwarding, Layout(self.state_dir)):
                log.info("IPv4 forwarding is off again, as it was before this member")
        except OSError as e:
            log.warning("cannot put IPv4 forwarding back: %s", e)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
        self._lock.release()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _raft_address(state_dir: Path) -> str:
    """Where the database's Raft listens; only used when the database is created (the first
    start), so it is chosen once: the usual port if free, else one the kernel picks."""
    if (state_dir / "database" / "microcloud.db").exists() or _port_free(DEFAULT_RAFT_PORT):
        return f"tcp:127.0.0.1:{DEFAULT_RAFT_PORT}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp:127.0.0.1:{s.getsockname()[1]}"


def _secure_socket(path: Path) -> None:
    """root:microcloud 0660, as LXD's socket: the group grants access without sudo."""
    try:
        os.chown(path, 0 if os.geteuid() == 0 else -1, grp.getgrnam(GROUP).gr_gid)
    except (KeyError, PermissionError):
        pass
    os.chmod(path, 0o660)


def _forget_our_signals_in_child() -> None:
    """In a child forked without exec (a library's helper process): when that child gets SIGTERM,
    Python's handler would write it into the event loop's wakeup fd, which the child shares
    with us, and microcloudd would take it for its own SIGTERM and stop. Not in children."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_DFL)


os.register_at_fork(after_in_child=_forget_our_signals_in_child)


async def run(state_dir: Path, server_name: str | None = None, db_address: str | None = None) -> None:
    daemon = Daemon(state_dir, server_name, db_address=db_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    trimmer = asyncio.create_task(malloc.keep_trimmed(), name="malloc-trim")
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        trimmer.cancel()
        await daemon.stop()
    log.info("stopped")


def _watch_children_with_pidfds() -> None:
    """Python 3.11's default child watcher parks one thread in waitpid() per child for the
    child's whole life: a dozen idle threads for our components. A pidfd in the event loop
    does it with none (3.12 chooses it by itself)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # an old kernel, or a sandbox refusing it: keep the default
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


def main(argv: list[str] | None = None) -> int:
    """The `microcloudd` command (`argv` given: called in-process, as tests do, never re-executed)."""
    if argv is None:
        malloc.exec_tuned()
    parser = argparse.ArgumentParser(prog="microcloudd", description="The microcloud daemon")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where state lives (default: $MICROCLOUD_DIR, else /var/lib/microcloud)")
    parser.add_argument("--server-name", default=None, help="this member's name (default: the hostname)")
    parser.add_argument("--db-address", default=None,
                        help="Raft address of the database when it is created, e.g. tcp:10.0.0.1:6644 "
                             "(default: tcp:127.0.0.1:6644, or a free port when that is taken)")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    logsetup.setup(args.debug)
    malloc.tune()
    _watch_children_with_pidfds()
    state_dir = (args.state_dir or default_state_dir()).absolute()
    try:
        asyncio.run(run(state_dir, args.server_name, args.db_address))
    except MicrocloudError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except HandlerError as e:
        print(f"Error: refusing to start: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
