"""Run real programs for tests: started from a ProcessSpec, waited on, always stopped.

The fast tier starts throwaway ovsdb-servers, OVN and Ceph daemons with this; the daemon
itself uses components.supervisor. Children get PR_SET_PDEATHSIG so a killed test run
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from microcloudd.components.spec import ProcessSpec

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Running:
    def __init__(self, spec: ProcessSpec, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.spec, self.proc, self.log = spec, proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.spec.stop_signal)
            try:
                self.proc.wait(self.spec.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(spec: ProcessSpec, log_dir: Path) -> Running:
    """Start `spec`, wait for its readiness check, return the handle (raises on failure)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{spec.name}.log"
    env = {**os.environ, **spec.env}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            spec.argv, env=env, cwd=spec.cwd, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
    running = Running(spec, proc, log)
    deadline = time.monotonic() + spec.ready_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if spec.ready is None or asyncio.run(spec.ready()):
            return running
        if time.monotonic() > deadline:
            running.stop()
            raise RuntimeError(
                f"{spec.name} not ready after {spec.ready_timeout}s: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc (QEMU reparented to a subreaper included)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out
