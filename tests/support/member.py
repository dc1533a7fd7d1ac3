"""A real microcloud member for slow tests and benchmarks: microcloudd under a temp state dir,
`microcloud init --auto`, the test image imported; restarts (with an environment of our
choosing) and a cleanup that leaves the host as found.

    with member("mc-faults-") as m:
        m.start(); m.init(); m.import_test_image()
        m.restart(env={"MICROCLOUD_KILL_AT": "launch.root"})
        m.api("POST", "/1.0/instances", {...})

Cleanup: microcloudd stopped, anything still running from our state dir killed by pid, the
host leftovers purged (namespace, veths, nftables table: `scripts/down.sh --purge`), the
temp dir deleted, and IPv4 forwarding (which the NAT uplink turns on) restored unless another
microcloud still runs on this host.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from microcloudd.stack import netns
from microcloudd.stack.layout import Layout
from microcloudd.stack.purge import purge
from tests.fixtures.daemon import REPO, RunningDaemon, start_daemon

FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def wait_until(what: str, check: Callable[[], Any], within: float = 120.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        time.sleep(every)


class Member:
    def __init__(self, base: Path) -> None:
        self.base, self.state = base, base / "s"
        self.lay = Layout(self.state)
        self.daemon: RunningDaemon | None = None

    @property
    def d(self) -> RunningDaemon:
        assert self.daemon is not None, "microcloudd is not running"
        return self.daemon

    # -- the daemon ---------------------------------------------------------------------
    def start(self, env: dict[str, str | None] | None = None) -> RunningDaemon:
        """Start microcloudd; `env` is added to ours (a None value removes the variable)."""
        full = dict(os.environ)
        for k, v in (env or {}).items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
        self.daemon = start_daemon(self.state, env=full)
        return self.daemon

    def stop(self, timeout: float = 120) -> None:
        if self.daemon is not None:
            self.daemon.stop(signal.SIGTERM, timeout=timeout)

    def restart(self, env: dict[str, str | None] | None = None) -> RunningDaemon:
        self.stop()
        return self.start(env)

    def init(self) -> None:
        r = self.d.cli("init", "--auto", timeout=600)
        if r.returncode != 0:
            raise AssertionError(f"init --auto failed: {r.stderr}{self.d.log.read_text()[-3000:]}")

    def init_preseed(self, text: str, *, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """`microcloud init --preseed` with `text` (as init.yaml); with `ok`, it must succeed."""
        preseed = self.base / "init.yaml"
        preseed.write_text(text)
        r = self.d.cli("init", "--preseed", str(preseed), timeout=600)
        if ok and r.returncode != 0:
            raise AssertionError(f"init --preseed failed: {r.stderr}{self.d.log.read_text()[-3000:]}")
        return r

    def stack_running(self) -> bool:
        return "stack: running" in self.d.cli("init", "--show").stdout

    def wait_ready(self, within: float = 300) -> None:
        """The stack started and the drivers in: the member serves its whole API."""
        wait_until("the member's stack", self.stack_running, within, every=0.3)

    def import_test_image(self, alias: str = "testimage") -> None:
        build = [sys.executable, str(REPO / "scripts/build-test-image.py"), str(self.base / "img")]
        out = subprocess.run(build, capture_output=True, text=True, check=True, timeout=600)
        self.d.cli("image", "import", out.stdout.strip().splitlines()[-1], "--alias", alias, check=True)

    # -- the API (blocking, one connection per request) ---------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 120) -> dict[str, Any]:
        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(str(self.d.socket))
        conn.sock = sock
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            return dict(json.loads(conn.getresponse().read()))
        finally:
            conn.close()

    def wait_operation(self, env: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """The finished operation of an async response (an error envelope as it is)."""
        if env.get("type") != "async":
            return env
        return self.api("GET", f"/1.0/operations/{env['metadata']['id']}/wait?timeout={timeout:.0f}",
                        timeout=timeout + 10)

    # -- ours on this host --------------------------------------------------------------
    def our_pids(self) -> list[int]:
        """Processes whose command line names our state dir (what a failed test may leave)."""
        out = subprocess.run(["pgrep", "-f", f"{self.state}/"], capture_output=True, text=True).stdout
        return [int(p) for p in out.split() if int(p) != os.getpid()]


@contextlib.contextmanager
def member(prefix: str = "mc-member-") -> Iterator[Member]:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    # traversable, as /var/lib above the default state dir (the daemon makes the state dir
    # 0711): a host libvirtd's unprivileged QEMU reads the guest ceph.conf (stack/guest_ceph.py)
    base.chmod(0o711)
    forwarding = FORWARD.read_text()
    m = Member(base)
    try:
        yield m
    finally:
        with contextlib.suppress(Exception):
            m.stop()
        for pid in m.our_pids():  # only if something went wrong: ours by their path
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        purge(m.state)
        shutil.rmtree(base, ignore_errors=True)
        if not netns.other_microclouds(m.lay):
            FORWARD.write_text(forwarding)
