"""What a member really holds, read with the real tools (ovsdb-client, rbd, virsh), not through
microcloudd: its database rows, RBD images, OVN logical switch ports and libvirt domains.
Tests compare it with what the database says should exist, to find leaks after a crash.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microcloudd.components import libvirtd, ovn
from microcloudd.components.ceph import LocalCeph
from microcloudd.drivers.network.ovn_txn import KIND
from microcloudd.init import record
from microcloudd.services.network_store import PORT_PREFIX
from microcloudd.stack.layout import Layout


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def _select(socket: Path, db: str, table: str, columns: list[str]) -> list[dict[str, Any]]:
    op = {"op": "select", "table": table, "where": [], "columns": columns}
    out = json.loads(_run("ovsdb-client", "transact", f"unix:{socket}", json.dumps([db, op])))
    return list(out[0]["rows"])


def _map(value: Any) -> dict[str, str]:
    return dict(value[1]) if isinstance(value, list) and value and value[0] == "map" else {}


@dataclass
class Inventory:
    rows: dict[str, str] = field(default_factory=dict)  # instance -> stage
    port_records: dict[str, str] = field(default_factory=dict)  # port id -> "instance/device"
    volumes: list[str] = field(default_factory=list)  # RBD images other than images' own
    ports: list[str] = field(default_factory=list)  # OVN LSPs of instance NICs (named by port id)
    domains: list[str] = field(default_factory=list)

    def created(self) -> set[str]:
        return {n for n, stage in self.rows.items() if stage == "created"}

    def problems(self) -> list[str]:
        """Everything that is neither part of a fully created instance nor absent: rows stuck
        mid-launch or mid-delete, backend objects without their instance, and created
        instances missing a part (each has a root disk, a seed, eth0's port and a domain)."""
        out = [f"row {n} at stage {stage}" for n, stage in sorted(self.rows.items()) if stage != "created"]
        created = self.created()
        for v in self.volumes:
            if v.removeprefix("vm_").removesuffix("-cidata") not in created:
                out.append(f"RBD image {v} without its instance")
        for pid, nic in sorted(self.port_records.items()):
            if nic.split("/")[0] not in created:
                out.append(f"port record {pid} ({nic}) without its instance")
            elif pid not in self.ports:
                out.append(f"port {pid} ({nic}) recorded but not in OVN")
        out += [f"OVN port {p} without its instance" for p in self.ports if p not in self.port_records]
        out += [f"libvirt domain {d} without its instance" for d in self.domains if d not in created]
        nics = set(self.port_records.values())
        for n in sorted(created):
            missing = [what for what, ok in (("root disk", f"vm_{n}" in self.volumes),
                                             ("seed", f"vm_{n}-cidata" in self.volumes),
                                             ("eth0 port", f"{n}/eth0" in nics),
                                             ("domain", n in self.domains)) if not ok]
            if missing:
                out.append(f"instance {n} lacks: {', '.join(missing)}")
        return out


def take(state_dir: Path) -> Inventory:
    lay = Layout(state_dir)
    inv = Inventory()
    for r in _select(state_dir / "database" / "db.sock", "Microcloud", "Instance", ["name", "stage"]):
        inv.rows[r["name"]] = r["stage"]
    for r in _select(state_dir / "database" / "db.sock", "Microcloud", "Config", ["key", "value"]):
        if r["key"].startswith(PORT_PREFIX):
            port = json.loads(r["value"])
            inv.port_records[port["id"]] = f"{port['instance']}/{port['device']}"
    nb = ovn.CentralPaths(lay.ovn_dir).state_dir / "run" / "ovnnb_db.sock"
    for r in _select(nb, "OVN_Northbound", "Logical_Switch_Port", ["name", "external_ids"]):
        ids = _map(r["external_ids"])
        if ids.get(KIND) == "port":  # not the routers' and the uplink's ports
            inv.ports.append(r["name"])
    access = LocalCeph(lay.ceph_dir).access()
    pool = record.load(state_dir).plan.storage.pool  # type: ignore[union-attr]
    rbd = ["rbd", "-c", str(access.conf_path), "-k", str(access.keyring_path), "--id", access.user]
    listed = json.loads(_run(*rbd, "ls", pool, "--format", "json"))
    inv.volumes = [v for v in listed if not v.startswith("image_")]  # images are not instances'
    inv.domains = _run("virsh", "-c", libvirtd.uri(lay.libvirt_dir), "list", "--all", "--name").split()
    inv.ports.sort()
    inv.volumes.sort()
    inv.domains.sort()
    return inv
