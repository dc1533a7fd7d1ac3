"""Runs the bundled programs as children of microcloudd and keeps them running.

    sup = Supervisor()
    await sup.start(spec)        # spawn, wait for spec.ready, watch; raises Unavailable
    sup.status()                 # [ComponentStatus] for `microcloud status`
    await sup.stop_all()         # reverse start order: SIGTERM, SIGKILL after stop_timeout

Children get PR_SET_PDEATHSIG=SIGKILL, so none outlives microcloudd even when it is
SIGKILLed. A child that dies is restarted with exponential backoff (reset once it has run
for a while). Its stdout/stderr lines go to the logger `microcloudd.component.<name>`.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import signal
import time
from datetime import UTC, datetime

from microcloudd.api.errors import InvalidArgument, NotFound, Unavailable
from microcloudd.api.server import ComponentStatus
from microcloudd.components.spec import ProcessSpec

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Child:
    def __init__(self, spec: ProcessSpec, sup: Supervisor) -> None:
        self.spec, self.sup = spec, sup
        self.proc: asyncio.subprocess.Process | None = None
        self.state = "starting"
        self.restarts = 0
        self.healthy = False
        self.since = _now()
        self.message = ""
        self.stopping = False
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.logger = logging.getLogger(f"microcloudd.component.{spec.name}")
        self.watcher: asyncio.Task[None] | None = None
        self.started_at = 0.0

    def set_state(self, state: str, message: str = "") -> None:
        self.state, self.message, self.since = state, message, _now()

    async def spawn(self) -> None:
        spec = self.spec
        self.proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            env={**os.environ, **spec.env},
            cwd=spec.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.started_at = time.monotonic()
        asyncio.get_running_loop().create_task(self._forward_output(self.proc))

    async def _forward_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.tail.append(line)
                self.logger.info("%s", line)

    async def wait_ready(self) -> None:
        spec, proc = self.spec, self.proc
        assert proc is not None
        deadline = time.monotonic() + spec.ready_timeout
        while True:
            if proc.returncode is not None:
                raise Unavailable(f"{spec.name} exited with status {proc.returncode} while starting: "
                                  + " | ".join(list(self.tail)[-5:]))
            if spec.ready is None or await spec.ready():
                self.healthy = True
                self.set_state("running")
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"{spec.name} was not ready after {spec.ready_timeout:.0f}s: "
                                  + " | ".join(list(self.tail)[-5:]))
            await asyncio.sleep(0.05)

    async def watch(self) -> None:
        """Wait for the child to die; restart it (with backoff) unless we are stopping it."""
        backoff = self.sup.backoff_initial
        while True:
            assert self.proc is not None
            code = await self.proc.wait()
            if self.stopping:
                return
            self.healthy = False
            ran = time.monotonic() - self.started_at
            if ran > self.sup.stable_after:
                backoff = self.sup.backoff_initial
            self.restarts += 1
            self.set_state("restarting", f"exited with status {code}; restarting in {backoff:.1f}s")
            log.warning("component %s exited with status %s after %.1fs; restart %d in %.1fs",
                        self.spec.name, code, ran, self.restarts, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.sup.backoff_max)
            if self.stopping:
                return
            try:
                await self.spawn()
                await self.wait_ready()
            except (OSError, Unavailable) as e:
                self.set_state("restarting", str(e))
                log.warning("component %s failed to restart: %s", self.spec.name, e)
                if self.proc is not None and self.proc.returncode is None:
                    await self.terminate()
                    self.stopping = False

    async def terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.send_signal(self.spec.stop_signal)
            await asyncio.wait_for(proc.wait(), self.spec.stop_timeout)
        except ProcessLookupError:
            pass
        except TimeoutError:
            log.warning("component %s ignored signal %d for %.0fs; killing it",
                        self.spec.name, self.spec.stop_signal, self.spec.stop_timeout)
            proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        self.stopping = True
        await self.terminate()
        if self.watcher is not None:
            self.watcher.cancel()
            try:
                await self.watcher
            except asyncio.CancelledError:
                pass
        self.healthy = False
        self.set_state("stopped")


class Supervisor:
    def __init__(self, *, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 stable_after: float = 60.0) -> None:
        self.backoff_initial, self.backoff_max, self.stable_after = backoff_initial, backoff_max, stable_after
        self._children: dict[str, _Child] = {}  # in start order

    async def start(self, spec: ProcessSpec) -> None:
        """Start `spec` and wait until it is ready; from then on keep it running.
        Raises Unavailable (and leaves nothing running) if it cannot start."""
        if spec.name in self._children and self._children[spec.name].state != "stopped":
            raise InvalidArgument(f"component {spec.name} is already running")
        missing = [d for d in spec.after if d not in self._children]
        if missing:
            raise InvalidArgument(f"component {spec.name} needs {', '.join(missing)} started first")
        child = _Child(spec, self)
        self._children.pop(spec.name, None)
        self._children[spec.name] = child
        try:
            await child.spawn()
        except OSError as e:
            child.set_state("failed", f"cannot run {spec.argv[0]}: {e.strerror}")
            raise Unavailable(f"cannot start {spec.name}: {spec.argv[0]}: {e.strerror}") from e
        try:
            await child.wait_ready()
        except BaseException as e:
            await child.stop()
            child.set_state("failed", str(e))
            raise
        child.watcher = asyncio.get_running_loop().create_task(child.watch())

    async def stop(self, name: str) -> None:
        child = self._children.get(name)
        if child is None:
            raise NotFound(f"component {name} is not known")
        # Components that depend on it go first.
        for other in reversed(list(self._children.values())):
            if name in other.spec.after and other.state != "stopped":
                await self.stop(other.spec.name)
        await child.stop()

    async def stop_all(self) -> None:
        """Stop every component, the last started first."""
        for child in reversed(list(self._children.values())):
            await child.stop()

    def pid(self, name: str) -> int | None:
        child = self._children.get(name)
        if child is None or child.proc is None or child.proc.returncode is not None:
            return None
        return child.proc.pid

    def status(self) -> list[ComponentStatus]:
        return [
            ComponentStatus(name=c.spec.name, state=c.state, pid=self.pid(c.spec.name), restarts=c.restarts,
                            healthy=c.healthy and c.state == "running", since=c.since, message=c.message)
            for c in self._children.values()
        ]

    async def wait_running(self, name: str, within: float = 30.0) -> None:
        """Wait until `name` is running and ready again (after a restart)."""
        deadline = time.monotonic() + within
        while True:
            child = self._children.get(name)
            if child is not None and child.state == "running" and child.healthy:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"component {name} is not running after {within:.0f}s")
            await asyncio.sleep(0.05)
