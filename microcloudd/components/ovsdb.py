"""Generic ovsdb-server plumbing: create or join a database file, run the server, read Raft status.

Used for the Microcloud database (microcloudd.db.service) and for OVN's NB/SB databases.
The functions that run ovsdb-tool/ovs-appctl block: call them from asyncio through
`asyncio.to_thread` (or use the `*_async` variants).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from microcloudd.api.errors import Internal, InvalidArgument, Unavailable
from microcloudd.components.spec import ProcessSpec


def _run(argv: list[str], timeout: float = 30.0) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise Unavailable(f"{argv[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"{' '.join(argv[:3])} did not answer within {timeout:.0f}s") from e
    if done.returncode != 0:
        raise Internal(f"{' '.join(argv[:3])} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def schema_name(schema_path: Path) -> str:
    return str(json.loads(Path(schema_path).read_text())["name"])


def schema_version(schema_path: Path) -> str:
    return str(json.loads(Path(schema_path).read_text()).get("version", ""))


def create_db(db_path: Path, schema_path: Path, raft_local: str | None = None) -> bool:
    """Create a standalone database, or a new one-member Raft cluster when `raft_local`
    (e.g. "tcp:10.0.0.1:6644") is given. An existing file is reused: returns False then."""
    if raft_local:
        return _make_db(db_path, lambda tmp: ["ovsdb-tool", "create-cluster", str(tmp), str(schema_path),
                                              raft_local])
    return _make_db(db_path, lambda tmp: ["ovsdb-tool", "create", str(tmp), str(schema_path)])


def join_db(db_path: Path, schema_name: str, raft_local: str, raft_remotes: Sequence[str]) -> bool:
    """Prepare a database file that joins an existing Raft cluster through `raft_remotes`
    once the server starts. An existing file is reused: returns False then."""
    if not raft_remotes:
        raise InvalidArgument("joining a database cluster needs the address of at least one member")
    return _make_db(db_path, lambda tmp: ["ovsdb-tool", "join-cluster", str(tmp), schema_name, raft_local,
                                          *raft_remotes])


def _make_db(db_path: Path, command: Callable[[Path], list[str]]) -> bool:
    """Run `command(tmp)` to build the file, unless a non-empty one exists (False then). It is
    built under a temporary name so a crash never leaves a half-written database behind."""
    db_path = Path(db_path)
    if db_path.exists() and db_path.stat().st_size > 0:
        return False
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".creating")
    tmp.unlink(missing_ok=True)
    _run(command(tmp))
    tmp.rename(db_path)
    return True


async def socket_answers(unix_socket: Path, wait: float = 1.0) -> bool:
    """True when an ovsdb-server answers a JSON-RPC `list_dbs` on `unix_socket`."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(unix_socket)), wait)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b'{"id":0,"method":"list_dbs","params":[]}')
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), wait)
        return b'"result"' in data
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


def ctl_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / f"{name}.ctl"


def server_spec(
    name: str,
    db_paths: Sequence[Path],
    run_dir: Path,
    unix_socket: Path,
    remotes: Sequence[str] = (),
    *,
    ssl: tuple[Path, Path, Path] | None = None,
    log_level: str = "info",
    after: tuple[str, ...] = (),
    ready_timeout: float = 30.0,
) -> ProcessSpec:
    """A foreground ovsdb-server serving `db_paths` on `unix_socket` plus extra `remotes`
    ("ptcp:6641:127.0.0.1", "pssl:..."); pidfile and control socket `<name>.ctl` under run_dir.
    `ssl` = (private key, certificate, CA certificate) for pssl remotes and Raft over ssl."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        "ovsdb-server",
        "--no-chdir",
        f"--pidfile={run_dir / (name + '.pid')}",
        f"--unixctl={ctl_path(run_dir, name)}",
        f"--remote=punix:{unix_socket}",
        f"-vconsole:{log_level}",
        "-vsyslog:off",
    ]
    argv += [f"--remote={r}" for r in remotes]
    if ssl:
        key, cert, ca = ssl
        argv += [f"--private-key={key}", f"--certificate={cert}", f"--ca-cert={ca}"]
    argv += [str(p) for p in db_paths]

    async def ready() -> bool:
        return await socket_answers(Path(unix_socket))

    return ProcessSpec(
        name=name,
        argv=argv,
        # ovsdb-server otherwise wants /var/run/openvswitch for defaults it may touch.
        env={"OVS_RUNDIR": str(run_dir), "OVS_LOGDIR": str(run_dir), "OVS_DBDIR": str(run_dir)},
        ready=ready,
        ready_timeout=ready_timeout,
        after=after,
    )


@dataclass
class ClusterStatus:
    """What `ovs-appctl cluster/status DB` says about one member of a Raft database."""

    role: str  # leader, follower, candidate
    status: str  # "cluster member", "joining cluster", ...
    cluster_id: str
    server_id: str
    address: str
    term: int
    leader: str  # server id of the leader, "unknown" or "self"
    members: list[str] = field(default_factory=list)  # Raft addresses, e.g. tcp:127.0.0.1:6644


_SERVER_LINE = re.compile(r"^\s+(\S+)\s+\((\S+)\s+at\s+(\S+)\)")


def parse_cluster_status(text: str) -> ClusterStatus:
    def line(key: str) -> str:
        m = re.search(rf"^{key}:\s*(.*)$", text, re.M)
        return m.group(1).strip() if m else ""

    members: list[str] = []
    in_servers = False
    for raw in text.splitlines():
        if raw.startswith("Servers:"):
            in_servers = True
            continue
        if in_servers:
            m = _SERVER_LINE.match(raw)
            if not m:
                break
            members.append(m.group(3))
    cid = line("Cluster ID")
    return ClusterStatus(
        role=line("Role") or "unknown",
        status=line("Status"),
        cluster_id=cid.split()[-1].strip("()") if cid else "",
        server_id=(line("Server ID").split() or [""])[-1].strip("()"),
        address=line("Address"),
        term=int(line("Term") or 0),
        leader=line("Leader"),
        members=members,
    )


def cluster_status(ctl: Path, db_name: str, timeout: float = 5.0) -> ClusterStatus:
    """Raft status of `db_name` from the server whose control socket is `ctl`."""
    return parse_cluster_status(
        _run(["ovs-appctl", f"--timeout={int(max(1, timeout))}", "-t", str(ctl), "cluster/status", db_name],
             timeout=timeout + 1)
    )


async def cluster_status_async(ctl: Path, db_name: str, wait: float = 5.0) -> ClusterStatus:
    return await asyncio.to_thread(cluster_status, ctl, db_name, wait)


def served_schema_version(unix_socket: Path, db_name: str, timeout: float = 5.0) -> str:
    """The schema version the running server holds (changes after an online conversion)."""
    out = _run(["ovsdb-client", f"--timeout={int(max(1, timeout))}", "get-schema-version",
                f"unix:{unix_socket}", db_name], timeout=timeout + 1)
    return out.strip()


def convert_online(unix_socket: Path, schema_path: Path, timeout: float = 60.0) -> bool:
    """Convert the live database to `schema_path` if its version differs (ovsdb-server's
    online conversion: data kept, clients reconnect). Returns True if it converted."""
    remote = f"unix:{unix_socket}"
    needed = _run(["ovsdb-client", f"--timeout={int(timeout)}", "needs-conversion", remote, str(schema_path)],
                  timeout=timeout + 1).strip()
    if needed != "yes":
        return False
    _run(["ovsdb-client", f"--timeout={int(timeout)}", "convert", remote, str(schema_path)],
         timeout=timeout + 1)
    return True


async def wait_for_leader(ctls: Sequence[Path], db_name: str, within: float = 30.0) -> ClusterStatus:
    """Poll the members' control sockets until one of them reports being the Raft leader."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        for ctl in ctls:
            try:
                st = await cluster_status_async(ctl, db_name, 2.0)
            except (Internal, Unavailable):
                continue
            if st.role == "leader":
                return st
        if loop.time() > deadline:
            raise Unavailable(f"no leader for database {db_name} after {within:.0f}s")
        await asyncio.sleep(0.05)
