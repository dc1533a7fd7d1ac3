"""One typed record per table of the Microcloud database.

A record class declares its table: `__table__`, the key columns that name a row
(`__key__`, unique by a schema index), extra unique indexes (`__unique__`), fields stored as
JSON strings (`__json__`: nested or ordered structures) and references to other tables
(`__refs__`: field -> table; the record holds the referenced row's key, the database a
strong reference, so a referenced row cannot disappear under its referrers).
Scalars map to OVSDB atoms, `dict[str, str]` to maps, `list[str]` to sets (unordered).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class Record(msgspec.Struct, kw_only=True, frozen=True):
    __table__: ClassVar[str]
    __key__: ClassVar[tuple[str, ...]]
    __unique__: ClassVar[tuple[tuple[str, ...], ...]] = ()
    __json__: ClassVar[frozenset[str]] = frozenset()
    __refs__: ClassVar[dict[str, str]] = {}

    def row_key(self) -> Any:
        """The key naming this row: the value of the one key field, or a tuple of them."""
        names = type(self).__key__
        if len(names) == 1:
            return getattr(self, names[0])
        return tuple(getattr(self, n) for n in names)


class Config(Record, kw_only=True, frozen=True):
    """Cluster-wide key/value settings."""

    __table__ = "Config"
    __key__ = ("key",)
    key: str
    value: str = ""


class Member(Record, kw_only=True, frozen=True):
    __table__ = "Member"
    __key__ = ("name",)
    __unique__ = (("address",),)
    name: str
    address: str
    fingerprint: str = ""  # SHA-256 of the member certificate
    roles: list[str] = []  # database-voter, ceph-mon, ovn-central, ...
    status: str = "Online"
    heartbeat: float = 0.0  # unix time of the last heartbeat
    description: str = ""


class Token(Record, kw_only=True, frozen=True):
    """A join token: only a hash of its secret is kept."""

    __table__ = "Token"
    __key__ = ("name",)
    name: str
    secret_hash: str
    expires_at: float = 0.0  # unix time
    created_at: str = ""


class Instance(Record, kw_only=True, frozen=True):
    __table__ = "Instance"
    __key__ = ("name",)
    __json__ = frozenset({"devices", "profiles"})
    name: str
    uuid: str = ""
    type: str = "virtual-machine"
    status: str = "Stopped"  # desired status: Running, Stopped
    location: str = ""  # member name
    image: str = ""  # image fingerprint it was created from
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    profiles: list[str] = []  # ordered
    description: str = ""
    created_at: str = ""
    stage: str = ""  # launch/delete state machine step


class InstanceSnapshot(Record, kw_only=True, frozen=True):
    __table__ = "InstanceSnapshot"
    __key__ = ("instance", "name")
    __json__ = frozenset({"devices"})
    __refs__ = {"instance": "Instance"}
    instance: str
    name: str
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    description: str = ""
    stateful: bool = False
    created_at: str = ""


class Image(Record, kw_only=True, frozen=True):
    __table__ = "Image"
    __key__ = ("fingerprint",)
    fingerprint: str
    filename: str = ""
    size: int = 0
    format: str = ""  # source format: qcow2, raw
    pool: str = ""
    properties: dict[str, str] = {}
    public: bool = False
    created_at: str = ""
    # "importing" from the upload until its RBD image and snapshot exist, then "ready"; an
    # import that died with its member is found by this and `worker` and cleaned up.
    status: str = "ready"
    worker: str = ""  # the member running the import


class ImageAlias(Record, kw_only=True, frozen=True):
    __table__ = "ImageAlias"
    __key__ = ("name",)
    __refs__ = {"image": "Image"}
    name: str
    image: str  # fingerprint
    description: str = ""


class StoragePool(Record, kw_only=True, frozen=True):
    __table__ = "StoragePool"
    __key__ = ("name",)
    name: str
    driver: str = "ceph"
    config: dict[str, str] = {}
    status: str = "Created"
    description: str = ""


class Volume(Record, kw_only=True, frozen=True):
    __table__ = "Volume"
    __key__ = ("pool", "type", "name")
    pool: str
    type: str = "custom"
    name: str
    content_type: str = "block"
    size: int = 0
    config: dict[str, str] = {}
    description: str = ""
    used_by: list[str] = []  # instance names it is attached to
    location: str = ""
    created_at: str = ""
    # "creating" until its RBD volume is whole (create, copy, backup import), then "ready";
    # work that died with its member (`worker`) is undone at that member's next start.
    status: str = "ready"
    worker: str = ""


class VolumeSnapshot(Record, kw_only=True, frozen=True):
    __table__ = "VolumeSnapshot"
    __key__ = ("volume", "name")
    __refs__ = {"volume": "Volume"}
    volume: tuple[str, str, str]  # (pool, type, name)
    name: str
    config: dict[str, str] = {}
    description: str = ""
    created_at: str = ""


class Network(Record, kw_only=True, frozen=True):
    __table__ = "Network"
    __key__ = ("name",)
    name: str
    type: str = "ovn"
    config: dict[str, str] = {}
    description: str = ""
    status: str = "Created"


class NetworkACL(Record, kw_only=True, frozen=True):
    __table__ = "NetworkACL"
    __key__ = ("name",)
    __json__ = frozenset({"ingress", "egress"})
    name: str
    ingress: list[dict[str, str]] = []  # ordered rules
    egress: list[dict[str, str]] = []
    config: dict[str, str] = {}
    description: str = ""


class NetworkForward(Record, kw_only=True, frozen=True):
    __table__ = "NetworkForward"
    __key__ = ("network", "listen_address")
    __json__ = frozenset({"ports"})
    __refs__ = {"network": "Network"}
    network: str
    listen_address: str
    config: dict[str, str] = {}
    ports: list[dict[str, Any]] = []
    description: str = ""


class Profile(Record, kw_only=True, frozen=True):
    __table__ = "Profile"
    __key__ = ("name",)
    __json__ = frozenset({"devices"})
    name: str
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    description: str = ""


class Operation(Record, kw_only=True, frozen=True):
    __table__ = "Operation"
    __key__ = ("id",)
    __json__ = frozenset({"resources", "metadata"})
    id: str
    class_: str = "task"  # LXD's "class": task, websocket, token
    description: str = ""
    status: str = "Pending"
    status_code: int = 105
    resources: dict[str, list[str]] = {}
    metadata: dict[str, Any] = {}
    err: str = ""
    location: str = ""
    may_cancel: bool = False
    created_at: str = ""
    updated_at: str = ""


ALL_RECORDS: tuple[type[Record], ...] = (
    Config, Member, Token, Instance, InstanceSnapshot, Image, ImageAlias, StoragePool, Volume,
    VolumeSnapshot, Network, NetworkACL, NetworkForward, Profile, Operation,
)
BY_TABLE: dict[str, type[Record]] = {r.__table__: r for r in ALL_RECORDS}
