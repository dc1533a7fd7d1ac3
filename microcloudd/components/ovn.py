"""OVN central (NB and SB ovsdb-servers, ovn-northd): database bootstrap and ProcessSpecs.

The NB/SB servers use components.ovsdb, so they are Raft-ready: pass `raft_local`
("tcp:ADDR:6643") to bootstrap a one-member cluster that later members join. Every file
lives under the given state dir; every program runs in the foreground with a private
OVS_RUNDIR/OVN_RUNDIR so nothing touches the system's /run/openvswitch or /run/ovn.
The chassis side (ovs-vswitchd, ovn-controller) is in components.ovs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from microcloudd.components import ovsdb
from microcloudd.components.spec import ProcessSpec

NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")


@dataclass(frozen=True)
class CentralPaths:
    """Where OVN central keeps its databases, sockets and control sockets."""

    state_dir: Path

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def nb_db(self) -> Path:
        return self.state_dir / "ovnnb_db.db"

    @property
    def sb_db(self) -> Path:
        return self.state_dir / "ovnsb_db.db"

    @property
    def nb_sock(self) -> Path:
        return self.run_dir / "ovnnb_db.sock"

    @property
    def sb_sock(self) -> Path:
        return self.run_dir / "ovnsb_db.sock"

    @property
    def nb_remote(self) -> str:
        return f"unix:{self.nb_sock}"

    @property
    def sb_remote(self) -> str:
        return f"unix:{self.sb_sock}"

    @property
    def northd_ctl(self) -> Path:
        return self.run_dir / "ovn-northd.ctl"


def private_env(run_dir: Path) -> dict[str, str]:
    """Environment that keeps OVS/OVN tools off the system's /run/openvswitch and /run/ovn."""
    d = str(run_dir)
    return {"OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d, "OVN_RUNDIR": d, "OVN_LOGDIR": d}


def bootstrap_central(
    paths: CentralPaths, nb_raft_local: str | None = None, sb_raft_local: str | None = None
) -> bool:
    """Create the NB and SB databases (standalone, or one-member Raft clusters when the
    raft addresses are given). Existing files are kept. True if anything was created."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    made_nb = ovsdb.create_db(paths.nb_db, NB_SCHEMA, nb_raft_local)
    made_sb = ovsdb.create_db(paths.sb_db, SB_SCHEMA, sb_raft_local)
    return made_nb or made_sb


def join_central(
    paths: CentralPaths,
    nb_raft_local: str,
    nb_raft_remotes: Sequence[str],
    sb_raft_local: str,
    sb_raft_remotes: Sequence[str],
) -> bool:
    """Prepare NB/SB database files that join existing Raft clusters when the servers start."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    made_nb = ovsdb.join_db(paths.nb_db, "OVN_Northbound", nb_raft_local, nb_raft_remotes)
    made_sb = ovsdb.join_db(paths.sb_db, "OVN_Southbound", sb_raft_local, sb_raft_remotes)
    return made_nb or made_sb


def nb_spec(paths: CentralPaths, remotes: Sequence[str] = ()) -> ProcessSpec:
    return ovsdb.server_spec("ovnnb_db", [paths.nb_db], paths.run_dir, paths.nb_sock, remotes)


def sb_spec(paths: CentralPaths, remotes: Sequence[str] = ()) -> ProcessSpec:
    return ovsdb.server_spec("ovnsb_db", [paths.sb_db], paths.run_dir, paths.sb_sock, remotes)


async def _northd_active(ctl: Path) -> bool:
    # "Status: active" once northd holds the SB lock and does its work (standby otherwise).
    try:
        proc = await asyncio.create_subprocess_exec(
            "ovs-appctl", "--timeout=2", "-t", str(ctl), "status",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    out, _ = await proc.communicate()
    return proc.returncode == 0 and b"active" in out


def northd_spec(
    paths: CentralPaths, nb_remote: str | None = None, sb_remote: str | None = None
) -> ProcessSpec:
    """ovn-northd translating NB into SB logical flows. With Raft clusters, pass every
    member's remote comma-separated so northd follows the leader."""
    run = paths.run_dir
    argv = [
        "ovn-northd",
        "--no-chdir",
        f"--pidfile={run / 'ovn-northd.pid'}",
        f"--unixctl={paths.northd_ctl}",
        f"--ovnnb-db={nb_remote or paths.nb_remote}",
        f"--ovnsb-db={sb_remote or paths.sb_remote}",
        "-vconsole:info",
        "-vsyslog:off",
    ]

    async def ready() -> bool:
        return await _northd_active(paths.northd_ctl)

    return ProcessSpec(
        name="ovn-northd", argv=argv, env=private_env(run), ready=ready,
        after=("ovnnb_db", "ovnsb_db"),
    )


def central_specs(
    paths: CentralPaths, nb_remotes: Sequence[str] = (), sb_remotes: Sequence[str] = ()
) -> list[ProcessSpec]:
    """NB server, SB server, northd: in start order."""
    return [nb_spec(paths, nb_remotes), sb_spec(paths, sb_remotes), northd_spec(paths)]
