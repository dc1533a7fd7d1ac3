"""GET /1.0 latency over the Unix socket, and microcloudd's idle RSS.

    .venv/bin/python -m bench.api [--requests 2000]

Same method as the LXD 5.0 figure in reference/README.md (plain Python stdlib client,
sequential requests): LXD's median was ≈0.84 ms on this machine; target: at or below it.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from tests.fixtures.daemon import start_daemon

LXD_MEDIAN_MS = 0.84


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def timed(n: int, path: str, persistent: bool) -> list[float]:
    conn = UnixHTTP(path)
    out = []
    for _ in range(n):
        if not persistent:
            conn = UnixHTTP(path)
        t0 = time.perf_counter()
        conn.request("GET", "/1.0")
        resp = conn.getresponse()
        body = resp.read()
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status == 200 and b'"sync"' in body
        if not persistent:
            conn.close()
    conn.close()
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    med = statistics.median(ms)
    p99 = ms[int(len(ms) * 0.99) - 1]
    print(f"{name:<34} median {med:6.3f} ms  p99 {p99:6.3f} ms  "
          f"(n={len(ms)}; LXD 5.0 median {LXD_MEDIAN_MS} ms → ratio {med / LXD_MEDIAN_MS:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mc-bench-api-"))
    d = start_daemon(base / "state")
    try:
        time.sleep(1.0)
        print(f"microcloudd idle RSS after start:  {rss_mb(d.proc.pid):.1f} MB (target < 50 MB; a member "
              "not initialised: drivers load with the stack, see bench.init for an initialised one)")
        path = str(d.socket)
        timed(200, path, True)  # warm-up
        report("GET /1.0, one persistent conn", timed(args.requests, path, True))
        report("GET /1.0, new conn per request", timed(args.requests, path, False))
        print(f"microcloudd RSS after the runs:    {rss_mb(d.proc.pid):.1f} MB")
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
