"""A single-host Ceph cluster (mon, mgr, OSDs) under a state dir, run as children of microcloudd.

`LocalCeph(state_dir).bootstrap(...)` does the offline part (fsid, ceph.conf, keys, monmap,
`ceph-mon --mkfs`); the mon and mgr then run from `mon_spec()`/`mgr_spec()`; with the mon
up, `create_osd()` registers and formats an OSD (memstore for tests, a sparse file-backed
bluestore otherwise) and `osd_spec(id)` runs it. Every step records its result on disk
before the next, so re-running after a crash continues where it stopped.
`external(conf, keyring, user)` describes a Ceph cluster someone else runs: nothing to start.

Functions that talk to the mon block (rados): call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from microcloudd.api.errors import Internal, InvalidArgument, NotFound, Unavailable
from microcloudd.atomic_file import write_atomic
from microcloudd.components.spec import ProcessSpec

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class CephAccess:
    """Everything a client needs to reach a Ceph cluster (drivers, libvirt, QEMU)."""

    conf_path: Path
    keyring_path: Path
    user: str  # cephx user without the "client." prefix, e.g. "admin"
    fsid: str
    mon_host: str  # first mon's msgr v2 address "IP:PORT", as libvirt's <host> wants it

    @property
    def key(self) -> str:
        """The base64 cephx key of `user` (for a libvirt secret)."""
        return read_key(self.keyring_path, f"client.{self.user}")


@dataclass
class CephSettings:
    """Chosen once at bootstrap and kept in ceph.json, so a re-run renders the same cluster."""

    fsid: str
    address: str
    base_port: int  # mon v2 = base, v1 = base+1, daemons bind base+2 .. base+99
    mon_id: str
    mgr_id: str
    objectstore: str  # "memstore" (tests, RAM) or "bluestore" (file-backed, sparse)
    osd_bytes: int  # memstore capacity or bluestore block file size per OSD

    @property
    def mon_v2(self) -> str:
        return f"{self.address}:{self.base_port}"

    @property
    def mon_v1(self) -> str:
        return f"{self.address}:{self.base_port + 1}"


def generate_key() -> str:
    """A new cephx secret, encoded as Ceph's CryptoKey (type AES, created, len, 16 bytes)."""
    now = time.time()
    raw = struct.pack("<HIIH", 1, int(now), int((now % 1) * 1e9), 16) + os.urandom(16)
    return base64.b64encode(raw).decode()


def keyring_text(entity: str, key: str, caps: dict[str, str] | None = None) -> str:
    lines = [f"[{entity}]", f"\tkey = {key}"]
    lines += [f'\tcaps {svc} = "{cap}"' for svc, cap in (caps or {}).items()]
    return "\n".join(lines) + "\n"


def read_key(keyring_path: Path, entity: str) -> str:
    """The key of `entity` in a keyring file (NotFound if the file has no such section)."""
    section = None
    for line in Path(keyring_path).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == entity and line.startswith("key"):
            return line.split("=", 1)[1].strip()
    raise NotFound(f"Keyring {keyring_path} has no key for {entity}")


def _run(argv: list[str], timeout: float = 60.0) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise Unavailable(f"{argv[0]} is not installed (install Ceph)") from e
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"{argv[0]} did not finish within {timeout:.0f}s") from e
    if done.returncode != 0:
        raise Internal(f"{' '.join(argv[:3])} failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return done.stdout


# Only the always-on mgr modules (+iostat) are imported: all ~27 cost ~9 s of start-up on 2 cores.
_MGR_DISABLED = (
    "alerts diskprediction_local influx insights localpool mirroring nfs osd_perf_query osd_support "
    "prometheus restful selftest snap_schedule stats telegraf test_orchestrator zabbix dashboard "
    "k8sevents cephadm rook"
)


def render_conf(root: Path, s: CephSettings) -> str:
    """ceph.conf for this host. The fast settings (paxos interval, stats periods) make pool and
    snapshot changes take ~0.1 s instead of ~1 s; the health settings keep a one-host,
    one-replica cluster at HEALTH_OK (it is honest about its redundancy through pool sizes)."""
    return f"""[global]
    fsid = {s.fsid}
    mon host = [v2:{s.mon_v2},v1:{s.mon_v1}]
    mon initial members = {s.mon_id}
    public network = {s.address}/32
    ms bind ipv6 = false
    ms bind port min = {s.base_port + 2}
    ms bind port max = {s.base_port + 99}
    auth cluster required = cephx
    auth service required = cephx
    auth client required = cephx
    auth allow insecure global id reclaim = false
    run dir = {root}/run
    crash dir = {root}/crash
    log file = {root}/log/$name.log
    log to stderr = false
    err to stderr = true
    mon cluster log file = {root}/log/cluster.log
    osd pool default size = 1
    osd pool default min size = 1
    osd pool default pg num = 8
    osd pool default pgp num = 8
    osd pool default pg autoscale mode = off
    osd crush chooseleaf type = 0
    mon allow pool size one = true
    mon allow pool delete = true
    mon warn on pool no redundancy = false
    mon data avail warn = 2
    mon data avail crit = 1
    mon osd full ratio = .99
    mon osd nearfull ratio = .99
    mon osd backfillfull ratio = .99
    osd failsafe full ratio = .99
    paxos propose interval = 0.1
    mgr stats period = 1
    mon mgr digest period = 1

[mon]
    mon data = {root}/mon.$id
    mgr initial modules = iostat

[mgr]
    mgr data = {root}/mgr.$id
    mgr disabled modules = {_MGR_DISABLED}
    public addr = {s.address}

[osd]
    osd data = {root}/osd.$id
    public addr = {s.address}
    cluster addr = {s.address}
    osd objectstore = {s.objectstore}
    memstore device bytes = {s.osd_bytes}
    bluestore block create = true
    bluestore block size = {s.osd_bytes}
    bluestore block preallocate file = false
    osd memory target = 1073741824
    bluestore cache autotune = false
    bluestore cache size = 134217728
    osd op num shards = 1
    osd op num threads per shard = 2

[client]
    keyring = {root}/keyring
    log file = {root}/log/$name.$pid.log
"""


class LocalCeph:
    """The Ceph daemons of this host, all state under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.conf_path = self.root / "ceph.conf"
        self.admin_keyring = self.root / "keyring"
        self._settings_path = self.root / "ceph.json"

    # -- offline bootstrap -------------------------------------------------------------

    def settings(self) -> CephSettings:
        try:
            return CephSettings(**json.loads(self._settings_path.read_text()))
        except FileNotFoundError as e:
            raise NotFound(f"No Ceph cluster has been bootstrapped in {self.root}") from e

    def bootstrap(
        self,
        *,
        base_port: int,
        address: str = "127.0.0.1",
        objectstore: str = "bluestore",
        osd_bytes: int = 10 * GiB,
        mon_id: str | None = None,
    ) -> CephAccess:
        """Create (or finish creating) the mon of a new cluster; nothing is started.
        Settings of an earlier, interrupted run win over the arguments."""
        if objectstore not in ("memstore", "bluestore"):
            raise InvalidArgument(f"Unknown Ceph object store {objectstore!r}: use memstore or bluestore")
        if not 1024 <= base_port <= 65535 - 100:
            raise InvalidArgument(f"Ceph base port {base_port} out of range (needs a 100-port block)")
        for sub in ("run", "log", "crash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not self._settings_path.exists():
            host = re.sub(r"[^a-zA-Z0-9-]", "-", mon_id or socket.gethostname().split(".")[0]) or "a"
            s = CephSettings(
                fsid=str(uuid.uuid4()), address=address, base_port=base_port, mon_id=host,
                mgr_id=host, objectstore=objectstore, osd_bytes=osd_bytes,
            )
            write_atomic(self._settings_path, json.dumps(asdict(s), indent=1), mode=0o644)
        s = self.settings()
        write_atomic(self.conf_path, render_conf(self.root, s), mode=0o644)
        self._make_keys(s)
        self._mkfs_mon(s)
        return self.access()

    def _make_keys(self, s: CephSettings) -> None:
        if not self.admin_keyring.exists():
            write_atomic(self.admin_keyring, keyring_text(
                "client.admin", generate_key(),
                {"mon": "allow *", "osd": "allow *", "mgr": "allow *", "mds": "allow *"}))
        mgr_keyring = self.root / f"mgr.{s.mgr_id}" / "keyring"
        if not mgr_keyring.exists():
            mgr_keyring.parent.mkdir(exist_ok=True)
            write_atomic(mgr_keyring, keyring_text(
                f"mgr.{s.mgr_id}", generate_key(),
                {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"}))

    def _mkfs_mon(self, s: CephSettings) -> None:
        mon_data = self.root / f"mon.{s.mon_id}"
        if mon_data.exists():
            return
        # The mon's initial auth database is every key in this keyring (with its caps), so
        # the admin and mgr keys work without a running mon to register them.
        mon_keyring = self.root / "mon.keyring"
        text = keyring_text("mon.", generate_key(), {"mon": "allow *"})
        text += self.admin_keyring.read_text()
        text += (self.root / f"mgr.{s.mgr_id}" / "keyring").read_text()
        write_atomic(mon_keyring, text)
        monmap = self.root / "monmap"
        _run(["monmaptool", "--create", "--clobber", "--fsid", s.fsid,
              "--addv", s.mon_id, f"[v2:{s.mon_v2},v1:{s.mon_v1}]", str(monmap)])
        # mkfs into a side directory and rename: a crash never leaves a half-made mon.
        tmp = mon_data.with_name(mon_data.name + ".creating")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _run(["ceph-mon", "-c", str(self.conf_path), "-i", s.mon_id, "--mkfs", "--mon-data", str(tmp),
              "--monmap", str(monmap), "--keyring", str(mon_keyring)])
        tmp.rename(mon_data)
        mon_keyring.unlink()

    def access(self) -> CephAccess:
        s = self.settings()
        return CephAccess(self.conf_path, self.admin_keyring, "admin", s.fsid, s.mon_v2)

    # -- OSDs (need a running mon) -----------------------------------------------------

    def osd_ids(self) -> list[int]:
        return sorted(int(p.name.split(".")[1]) for p in self.root.glob("osd.*")
                      if re.fullmatch(r"osd\.\d+", p.name) and (p / "ready").exists())

    def osd_devices(self) -> dict[str, int]:
        """Block device (as given at creation) -> id of the OSD formatted on it."""
        out: dict[str, int] = {}
        for osd_id in self.osd_ids():
            block = self.root / f"osd.{osd_id}" / "block"
            if block.is_symlink() and Path(os.readlink(block)).is_absolute():
                target = os.readlink(block)
                if target.startswith("/dev/"):
                    out[target] = osd_id
        return out

    def _pending_path(self, device: Path | None) -> Path:
        if device is None:
            return self.root / "osd.pending.json"
        return self.root / f"osd.pending-{re.sub(r'[^a-zA-Z0-9]+', '-', str(device)).strip('-')}.json"

    def osd_pending(self, device: Path) -> bool:
        """An OSD creation on `device` was interrupted (the device may hold our half-made OSD)."""
        return self._pending_path(device).exists()

    def create_osd(self, timeout: float = 60.0, device: Path | None = None, wipe: bool = False) -> int:
        """Register a new OSD with the mon and format its store; returns its id. An OSD whose
        creation was interrupted is finished instead of starting another one.

        Without `device`: per ceph.json, memstore or a sparse file-backed BlueStore in the
        OSD's directory. With `device` (a whole disk or partition): BlueStore on the raw
        device, through `ceph-osd --mkfs` with bluestore_block_path, which leaves a `block`
        symlink in the OSD's directory that every later start follows. Chosen over
        `ceph-volume raw prepare` because that one wants udev/systemd-era tooling
        (ceph-bluestore-tool prime-osd-dir, tmpfs mounts, `ceph-volume activate`) to run the
        OSD again, while a plain data directory + symlink starts the same way as our
        file-backed OSD, needs no udev/LVM and survives a daemon restart as is. The caller
        checks that the device is free (init/disks.problem); `wipe` erases old signatures."""
        if device is not None:
            device = Path(device)
            done = self.osd_devices().get(str(device))
            if done is not None:
                return done
        pending = self._pending_path(device)
        if pending.exists():
            req = json.loads(pending.read_text())
        else:
            req = {"uuid": str(uuid.uuid4()), "key": generate_key()}
            write_atomic(pending, json.dumps(req))
        # `osd new` with the same uuid and secret returns the same id: safe to repeat.
        out = mon_command(self.access(), {"prefix": "osd new", "uuid": req["uuid"]},
                          json.dumps({"cephx_secret": req["key"]}).encode(), timeout=timeout)
        osd_id = int(out.strip())
        data = self.root / f"osd.{osd_id}"
        if not (data / "ready").exists():
            tmp = data.with_name(data.name + ".creating")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            write_atomic(tmp / "keyring", keyring_text(f"osd.{osd_id}", req["key"]))
            argv = ["ceph-osd", "-c", str(self.conf_path), "-i", str(osd_id), "--mkfs",
                    "--osd-data", str(tmp), "--osd-uuid", req["uuid"]]
            if device is not None:
                if wipe:
                    wipe_device(device)
                argv += ["--osd-objectstore", "bluestore", "--bluestore-block-path", str(device)]
            _run(argv, timeout=timeout)
            shutil.rmtree(data, ignore_errors=True)
            tmp.rename(data)
        pending.unlink()
        return osd_id

    # -- process specs -------------------------------------------------------------------

    def _argv(self, daemon: str, ident: str) -> list[str]:
        return [f"ceph-{daemon}", "-f", "-c", str(self.conf_path), "-i", ident]

    def mon_spec(self) -> ProcessSpec:
        s, access = self.settings(), self.access()

        async def ready() -> bool:
            return bool(await _probe(access, None))

        return ProcessSpec(name=f"ceph-mon.{s.mon_id}", argv=self._argv("mon", s.mon_id), ready=ready,
                           ready_timeout=60.0, stop_timeout=20.0)

    def mgr_spec(self) -> ProcessSpec:
        s, access = self.settings(), self.access()

        async def ready() -> bool:
            out = await _probe(access, {"prefix": "mgr stat", "format": "json"})
            return bool(out and json.loads(out).get("available"))

        return ProcessSpec(name=f"ceph-mgr.{s.mgr_id}", argv=self._argv("mgr", s.mgr_id), ready=ready,
                           ready_timeout=90.0, stop_timeout=20.0, after=(f"ceph-mon.{s.mon_id}",))

    def osd_spec(self, osd_id: int) -> ProcessSpec:
        s, access = self.settings(), self.access()

        async def ready() -> bool:
            out = await _probe(access, {"prefix": "osd dump", "format": "json"})
            if not out:
                return False
            return any(o["osd"] == osd_id and o["up"] == 1 for o in json.loads(out)["osds"])

        # An OSD flushes memstore to disk on a clean stop; give it time before SIGKILL.
        return ProcessSpec(name=f"ceph-osd.{osd_id}", argv=self._argv("osd", str(osd_id)), ready=ready,
                           ready_timeout=90.0, stop_timeout=30.0, after=(f"ceph-mon.{s.mon_id}",))

    def specs(self) -> list[ProcessSpec]:
        """Every daemon of this host in start order (OSDs created so far)."""
        return [self.mon_spec(), self.mgr_spec(), *(self.osd_spec(i) for i in self.osd_ids())]


def wipe_device(device: Path) -> None:
    """Erase every signature blkid knows (file systems, both GPT headers, an old BlueStore
    label) and zero the first 16 MiB, then have the kernel drop the old partitions."""
    _run(["wipefs", "--all", "--force", str(device)])
    fd = os.open(device, os.O_WRONLY)
    try:
        zeros = bytes(MiB)
        for _ in range(16):
            os.write(fd, zeros)
        os.fsync(fd)
    finally:
        os.close(fd)
    subprocess.run(["blockdev", "--rereadpt", str(device)], capture_output=True, timeout=30)


def external(conf_path: Path, keyring_path: Path, user: str = "admin") -> CephAccess:
    """A Ceph cluster run by someone else: check the files, read fsid and mon address."""
    conf_path, keyring_path = Path(conf_path), Path(keyring_path)
    if not conf_path.is_file():
        raise NotFound(f"Ceph configuration {conf_path} not found")
    if not keyring_path.is_file():
        raise NotFound(f"Ceph keyring {keyring_path} not found")
    read_key(keyring_path, f"client.{user}")
    text = conf_path.read_text()
    fsid = re.search(r"^\s*fsid\s*=\s*(\S+)", text, re.M)
    mon = re.search(r"^\s*mon[ _]host\s*=\s*(.+)$", text, re.M)
    if not mon:
        raise InvalidArgument(f"Ceph configuration {conf_path} has no 'mon host'")
    v2 = re.search(r"v2:([^,\]\s]+)", mon.group(1))
    first = v2.group(1) if v2 else re.split(r"[,\s]+", mon.group(1).strip().strip("[]"))[0]
    return CephAccess(conf_path, keyring_path, user, fsid.group(1) if fsid else "", first)


def check_external(access: CephAccess, timeout: float = 10.0) -> str:
    """Connect to a cluster someone else runs as `access.user` and ask the mon its status;
    "" when that works, else why not, in words (wrong key, no monitor answering...)."""
    import rados

    seconds = str(int(timeout))
    cluster = rados.Rados(conffile=str(access.conf_path), rados_id=access.user,
                          conf={"keyring": str(access.keyring_path), "client_mount_timeout": seconds,
                                "rados_mon_op_timeout": seconds})
    try:
        cluster.connect(timeout=max(1, int(timeout)))
        ret, _, err = cluster.mon_command(json.dumps({"prefix": "mon stat"}), b"", timeout=int(timeout))
    except (rados.PermissionDeniedError, rados.PermissionError):
        return (f"the monitor at {access.mon_host} refused client.{access.user}'s key from "
                f"{access.keyring_path} (wrong key or user)")
    except (rados.InterruptedOrTimeoutError, rados.Error) as e:
        return f"no Ceph monitor answered at {access.mon_host} within {timeout:.0f}s ({e})"
    finally:
        cluster.shutdown()
    if ret != 0:
        return f"client.{access.user} may not ask the monitor for its status: {err or os.strerror(-ret)}"
    return ""


def mon_command(access: CephAccess, cmd: dict[str, Any], inbuf: bytes = b"", timeout: float = 30.0) -> str:
    """Run one mon command as `access.user` (blocking); its output, or Unavailable/Internal."""
    import rados  # Debian's python3-rados; imported here so the module loads without it

    cluster = rados.Rados(conffile=str(access.conf_path), rados_id=access.user,
                          conf={"keyring": str(access.keyring_path)})
    try:
        cluster.connect(timeout=max(1, int(timeout)))
        ret, out, err = cluster.mon_command(json.dumps(cmd), inbuf, timeout=int(timeout))
    except rados.Error as e:
        raise Unavailable(f"Ceph monitor at {access.mon_host} did not answer: {e}") from e
    finally:
        cluster.shutdown()
    if ret != 0:
        raise Internal(f"ceph {cmd['prefix']} failed: {err or os.strerror(-ret)}")
    return out.decode()


async def _probe(access: CephAccess, cmd: dict[str, Any] | None) -> str:
    """Readiness: "" when the mon does not answer (yet), else the command's output."""
    import asyncio

    def run() -> str:
        try:
            return mon_command(access, cmd or {"prefix": "mon stat"}, timeout=3)
        except (Unavailable, Internal):
            return ""

    return await asyncio.to_thread(run)
