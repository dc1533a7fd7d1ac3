"""The server itself: host info (`GET /1.0`), status, operations and the event stream."""

from __future__ import annotations

from typing import Any

import msgspec

from microcloudd.api.declare import Op, Query, Recursion

API_VERSION = "1.0"

# Exactly the LXD API extensions whose behaviour microcloudd implements: clients (LXD's Go
# client, pylxd) pick endpoints from this list, so advertising more would mislead them.
API_EXTENSIONS = [
    "instances",
    "operation_wait",
    "events_lifecycle",
    "virtual-machines",
    "network",
    "storage",
    "storage_driver_ceph",
    "images",
    "image_create_aliases",
    "clustering",
    "resources",
]


class StorageDriverInfo(msgspec.Struct):
    Name: str
    Version: str
    Remote: bool


class Environment(msgspec.Struct, kw_only=True):
    addresses: list[str]
    architectures: list[str]
    certificate: str = ""
    certificate_fingerprint: str = ""
    driver: str = "qemu"
    driver_version: str = ""
    firewall: str = "nftables"
    kernel: str
    kernel_architecture: str
    kernel_version: str
    kernel_features: dict[str, str] = {}
    os_name: str
    os_version: str
    project: str = "default"
    server: str = "microcloud"
    server_clustered: bool = False
    server_event_mode: str = "full-mesh"
    server_name: str
    server_pid: int
    server_version: str
    storage: str = "ceph"
    storage_version: str = ""
    storage_supported_drivers: list[StorageDriverInfo] = []


class ServerInfo(msgspec.Struct, kw_only=True):
    api_extensions: list[str]
    api_status: str = "stable"
    api_version: str = API_VERSION
    auth: str
    public: bool = False
    auth_methods: list[str] = msgspec.field(default_factory=lambda: ["tls"])
    config: dict[str, str] = {}
    environment: Environment | None = None


class Operation(msgspec.Struct, kw_only=True):
    """LXD's operation object (`/1.0/operations/{id}`)."""

    id: str
    class_: str = msgspec.field(name="class", default="task")
    description: str
    created_at: str
    updated_at: str
    status: str
    status_code: int
    resources: dict[str, list[str]] = {}
    metadata: dict[str, Any] | None = None
    may_cancel: bool = False
    err: str = ""
    location: str = "none"


class OperationsByStatus(msgspec.Struct, omit_defaults=True):
    """`GET /1.0/operations`: operations grouped by lower-case status, as LXD does."""

    running: list[Any] = []
    success: list[Any] = []
    failure: list[Any] = []
    cancelled: list[Any] = []
    pending: list[Any] = []


class WaitQuery(Query):
    timeout: float = -1  # seconds; -1 waits for ever, as LXD


class SecretQuery(Query):
    secret: str = ""  # one of a websocket operation's metadata.fds secrets


class EventsQuery(Query):
    type: str = ""  # comma-separated: operation, lifecycle, logging; empty means all


class Event(msgspec.Struct, kw_only=True):
    type: str
    timestamp: str
    metadata: dict[str, Any]
    location: str = "none"
    project: str = "default"


class ComponentStatus(msgspec.Struct, kw_only=True):
    name: str
    state: str  # starting, running, restarting, stopped, failed, external
    pid: int | None = None
    restarts: int = 0
    healthy: bool = False
    since: str = ""
    message: str = ""


class DatabaseStatus(msgspec.Struct, kw_only=True):
    role: str  # leader, follower, candidate, unknown
    address: str = ""
    members: list[str] = []
    schema_version: str = ""
    cluster_id: str = ""


class Status(msgspec.Struct, kw_only=True):
    """`microcloud status`: this member, its database, its components, storage and network."""

    server_name: str
    version: str
    pid: int
    uptime: float
    state_dir: str
    virtualization: str = ""  # kvm, or tcg (software emulation)
    database: DatabaseStatus | None = None
    components: list[ComponentStatus] = []
    storage: dict[str, Any] = {}
    network: dict[str, Any] = {}
    initialized: bool = False


OPS = (
    Op("GET", "/1.0", "server_info", "Server information", result=ServerInfo, access="public"),
    Op("GET", "/1.0/status", "server_status", "This member's status", result=Status),
    Op("GET", "/1.0/openapi.json", "openapi", "The OpenAPI 3 document of this API", kind="raw",
       access="public"),
    Op("GET", "/1.0/operations", "operations_list", "List operations", result=OperationsByStatus,
       query=Recursion),
    Op("GET", "/1.0/operations/{id}", "operation_get", "Show an operation", result=Operation),
    Op("DELETE", "/1.0/operations/{id}", "operation_cancel", "Cancel an operation"),
    Op("GET", "/1.0/operations/{id}/wait", "operation_wait", "Wait for an operation to finish",
       result=Operation, query=WaitQuery),
    Op("GET", "/1.0/operations/{id}/websocket", "operation_websocket",
       "Connect one channel of a websocket operation (by its secret)", query=SecretQuery, kind="websocket"),
    Op("GET", "/1.0/events", "events", "The event stream (websocket)", query=EventsQuery,
       kind="websocket"),
)
