"""`microcloud init --auto` to ready, and the resident memory of the idle stack.

    .venv/bin/python -m bench.init [--runs 1]

Each run: a fresh state dir and a fresh daemon; times `init --auto` (the CLI's wall time,
every component started and ready, pool/network/profile created), then, after the stack has
idled for a few seconds, sums the RSS of microcloudd and every process below it (database,
OVN NB/SB/northd, OVS, ovn-controller, ceph-mon/mgr/osd, libvirtd), and times a restart of
an initialised member until its stack runs again. Figures only; nothing here fails on timing.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

from microcloudd.stack.purge import purge
from tests.fixtures.daemon import RunningDaemon, start_daemon
from tests.support.proc import descendants


def rss_by_name(pid: int) -> dict[str, int]:
    """RSS (bytes) per command name over the whole tree."""
    out: dict[str, int] = {}
    for p in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        name = status.split("\n", 1)[0].split(":", 1)[1].strip()
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        out[name] = out.get(name, 0) + kb * 1024
    return out


def wait_stack(d: RunningDaemon, within: float = 300) -> None:
    deadline = time.monotonic() + within
    while "stack: running" not in d.cli("init", "--show").stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("the stack did not start")
        time.sleep(0.1)


def one_run(idle: float) -> tuple[float, float, dict[str, int]]:
    base = Path(tempfile.mkdtemp(prefix="mc-bench-init-"))
    state = base / "s"
    d = start_daemon(state)
    try:
        t0 = time.monotonic()
        d.cli("init", "--auto", check=True, timeout=600)
        init_s = time.monotonic() - t0
        time.sleep(idle)
        rss = rss_by_name(d.proc.pid)
        d.stop(signal.SIGTERM, timeout=120)
        t0 = time.monotonic()
        d = start_daemon(state)
        wait_stack(d)
        restart_s = time.monotonic() - t0
        return init_s, restart_s, rss
    finally:
        d.stop(signal.SIGTERM, timeout=120)
        purge(state)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds to idle before measuring RSS")
    a = ap.parse_args()
    inits, restarts, rss = [], [], {}
    for _ in range(a.runs):
        i, r, rss = one_run(a.idle)
        inits.append(i)
        restarts.append(r)
    print(f"init --auto to ready:           median {statistics.median(inits):6.1f} s  (runs: "
          + ", ".join(f"{x:.1f}" for x in inits) + ")")
    print(f"restart of an initialised member: median {statistics.median(restarts):6.1f} s")
    total = sum(rss.values())
    print(f"idle stack RSS (microcloudd + every child): {total / 2**20:7.1f} MiB")
    for name, b in sorted(rss.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<18} {b / 2**20:7.1f} MiB")


if __name__ == "__main__":
    main()
