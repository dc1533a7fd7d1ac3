"""What init has done on this member, kept in <state_dir>/init/state.json.

Written atomically after every step, so a daemon killed at any point (or a Ctrl-C'd
`microcloud init`) continues from the recorded steps with the recorded plan.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec

from microcloudd.api.init import InitPlan
from microcloudd.atomic_file import write_atomic


class InitRecord(msgspec.Struct, kw_only=True):
    plan: InitPlan | None = None
    done: list[str] = []
    failed_step: str = ""
    error: str = ""
    initialized: bool = False
    secret_uuid: str = msgspec.field(default_factory=lambda: str(uuid.uuid4()))  # libvirt's Ceph secret


def path(state_dir: Path) -> Path:
    return Path(state_dir) / "init" / "state.json"


def load(state_dir: Path) -> InitRecord:
    try:
        return msgspec.json.decode(path(state_dir).read_bytes(), type=InitRecord)
    except FileNotFoundError:
        return InitRecord()


def save(state_dir: Path, rec: InitRecord) -> None:
    p = path(state_dir)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(p, msgspec.json.format(msgspec.json.encode(rec)), mode=0o644, durable=True)
