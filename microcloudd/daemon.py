"""microcloudd's composition root: config → database → drivers → services → REST.

Run as `microcloudd --state-dir DIR`; serves LXD's 1.0 API on DIR/unix.socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import logging
import os
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from microcloudd import __version__, hostinfo, logsetup
from microcloudd.api import endpoints
from microcloudd.api.declare import Op
from microcloudd.api.errors import MicrocloudError
from microcloudd.api.server import Status
from microcloudd.events import EventBus, EventLogHandler
from microcloudd.notify import notify
from microcloudd.operations import OperationManager
from microcloudd.rest import envelope, openapi
from microcloudd.rest.access import GROUP
from microcloudd.rest.app import HandlerError, build_app
from microcloudd.rest.handlers import AREAS
from microcloudd.rest.handlers.server import ServerHandlers
from microcloudd.services.cloud import Cloud
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
                 extra_ops: tuple[Op, ...] = (), extra_handlers: tuple[object, ...] = ()) -> None:
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
        self.cloud = Cloud(state_dir, self.server_name, self.events, self.operations)

    def handler_objects(self) -> list[object]:
        doc = envelope.encode(openapi.build(endpoints.ALL, __version__))
        self._server = ServerHandlers(hostinfo.server_info(self.server_name), self.status, doc,
                                      self.operations, self.events)
        return [self._server, *(make(self.cloud) for make in AREAS), *self._extra_handlers]

    async def status(self) -> Status:
        return Status(
            server_name=self.server_name, version=__version__, pid=os.getpid(),
            uptime=round(time.monotonic() - self.started, 3), state_dir=str(self.state_dir),
            virtualization=hostinfo.virtualization(),
        )

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self._lock.acquire()
        try:
            app = build_app(self.ops, self.handler_objects())
            self._log_handler = EventLogHandler(self.events, asyncio.get_running_loop())
            logging.getLogger().addHandler(self._log_handler)
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()  # stale from a killed daemon; the lock proves it is ours
            await web.UnixSite(self._runner, str(self.socket_path)).start()
            _secure_socket(self.socket_path)
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
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
        self._lock.release()


def _secure_socket(path: Path) -> None:
    """root:microcloud 0660, as LXD's socket: the group grants access without sudo."""
    try:
        os.chown(path, 0 if os.geteuid() == 0 else -1, grp.getgrnam(GROUP).gr_gid)
    except (KeyError, PermissionError):
        pass
    os.chmod(path, 0o660)


async def run(state_dir: Path, server_name: str | None = None) -> None:
    daemon = Daemon(state_dir, server_name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        await daemon.stop()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="microcloudd", description="The microcloud daemon")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where state lives (default: $MICROCLOUD_DIR, else /var/lib/microcloud)")
    parser.add_argument("--server-name", default=None, help="this member's name (default: the hostname)")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    logsetup.setup(args.debug)
    state_dir = (args.state_dir or default_state_dir()).absolute()
    try:
        asyncio.run(run(state_dir, args.server_name))
    except MicrocloudError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except HandlerError as e:
        print(f"Error: refusing to start: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
