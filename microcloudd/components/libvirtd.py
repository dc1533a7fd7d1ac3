"""A private, privileged libvirtd as a child of microcloudd (or a host libvirtd instead).

Debian 12 ships only the monolithic libvirtd, whose privileged paths (/etc/libvirt,
/run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt) are compiled in. So it
runs in its own mount namespace (`unshare -m`) where our state dir's etc/run/lib/log/cache are
bind-mounted over those paths; its client socket lives in state_dir/sock, outside them, so host
processes reach it at `uri(state_dir)`. QEMU inherits that namespace: guest files (console
logs) must live outside the five paths to be the same path for us and for QEMU.

Process tree: unshare (exec) -> tini -s (subreaper: QEMU is double-forked by libvirtd and
reaped at once instead of by a lazy PID 1) -> sh wrapper -> libvirtd in the foreground.
libvirtd leaves guests running when it exits, so on SIGTERM the wrapper first stops every QEMU
it started (pid files in /run/libvirt/qemu), then libvirtd: stopping the component never
leaves a QEMU behind. Shut guests down gracefully through the driver before that if they matter.
tini has PDEATHSIG (the Supervisor's), but its children do not: the wrapper runs under
`setpriv --pdeathsig TERM`, so when microcloudd (hence tini) is SIGKILLed the wrapper gets
SIGTERM and runs the same stop, instead of libvirtd and QEMU living on without us.

libvirt plugs VM NICs into OVS by running `ovs-vsctl`, which finds our OVS through
`OVS_RUNDIR` in libvirtd's environment.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass
from pathlib import Path

from microcloudd.api.errors import InvalidArgument
from microcloudd.components.spec import ProcessSpec

HOST_URI = "qemu:///system"  # a libvirtd the host already runs
LIBVIRTD = "/usr/sbin/libvirtd"
# compiled-in privileged paths -> sub-directory of our state dir bind-mounted over it
BIND_MOUNTS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
_MAX_UNIX_PATH = 107


@dataclass(frozen=True)
class LibvirtdPaths:
    state_dir: Path

    @property
    def sock_dir(self) -> Path:
        return self.state_dir / "sock"

    @property
    def socket(self) -> Path:
        return self.sock_dir / "libvirt-sock"

    @property
    def config(self) -> Path:
        return self.state_dir / "etc" / "libvirtd.conf"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "libvirtd.pid"

    @property
    def log(self) -> Path:
        return self.state_dir / "libvirtd.log"

    @property
    def qemu_pid_dir(self) -> Path:  # as seen from the host
        return self.state_dir / "run" / "qemu"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"


def uri(state_dir: Path | None) -> str:
    """The URI of the private libvirtd under `state_dir`, or of the host's (None)."""
    return HOST_URI if state_dir is None else LibvirtdPaths(Path(state_dir)).uri


def _libvirtd_conf(paths: LibvirtdPaths) -> str:
    # Only root (and the microcloud group, via the socket dir's mode) reaches the socket.
    return "\n".join([
        f'unix_sock_dir = "{paths.sock_dir}"',
        'unix_sock_ro_perms = "0770"',
        'unix_sock_rw_perms = "0770"',
        'unix_sock_admin_perms = "0700"',
        'auth_unix_ro = "none"',
        'auth_unix_rw = "none"',
        "listen_tls = 0",
        "listen_tcp = 0",
        'log_filters = "3:remote 4:event 3:util.json 3:rpc 3:qemu.qemu_monitor"',
        f'log_outputs = "2:file:{paths.log}"',
        "keepalive_interval = 5",
        "",
    ])


# Guests run as root without virtlogd, apparmor or per-VM mount namespaces: QEMU writes the
# serial log itself and sees the same /tmp-style paths we do.
_QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
namespaces = [ ]
"""


def render_config(state_dir: Path) -> LibvirtdPaths:
    paths = LibvirtdPaths(Path(state_dir).absolute())
    if len(str(paths.socket)) > _MAX_UNIX_PATH:
        raise InvalidArgument(f"the libvirtd state dir {state_dir} is too long for a Unix socket path")
    for sub in (*BIND_MOUNTS, "sock"):
        (paths.state_dir / sub).mkdir(parents=True, exist_ok=True)
    paths.sock_dir.chmod(0o750)
    for target in BIND_MOUNTS.values():  # empty mount points on the host
        Path(target).mkdir(parents=True, exist_ok=True)
    paths.config.write_text(_libvirtd_conf(paths))
    (paths.state_dir / "etc" / "qemu.conf").write_text(_QEMU_CONF)
    return paths


def _wrapper_script(paths: LibvirtdPaths) -> str:
    q = shlex.quote
    mounts = " && ".join(f"mount --bind {q(str(paths.state_dir / sub))} {q(target)}"
                         for sub, target in BIND_MOUNTS.items())
    return f"""
{mounts} || exit 1
rm -f {q(str(paths.socket))}
{LIBVIRTD} -f {q(str(paths.config))} -p {q(str(paths.pidfile))} &
lv=$!
stop() {{
  # libvirtd leaves guests running when it exits: stop their QEMU first (pid files by name)
  pids=""
  for f in /run/libvirt/qemu/*.pid; do
    [ -f "$f" ] && p=$(cat "$f") && kill -TERM "$p" 2>/dev/null && pids="$pids $p"
  done
  i=0
  while [ $i -lt 50 ]; do
    alive=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.1; i=$((i+1))
  done
  for p in $alive; do kill -KILL "$p" 2>/dev/null; done
  kill -TERM $lv 2>/dev/null
}}
trap stop TERM INT
wait $lv
wait $lv
"""


async def socket_answers(uri: str, wait: float = 3.0) -> bool:
    """True when libvirtd answers an RPC on `uri` (virsh in a subprocess: no libvirt in-process)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "virsh", "-q", "-c", uri, "version", stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), wait) == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


def libvirtd_spec(state_dir: Path, *, ovs_rundir: Path | None = None, netns: str | None = None,
                  name: str = "libvirtd", after: tuple[str, ...] = ()) -> ProcessSpec:
    """Render the config under `state_dir` and describe the foreground libvirtd process.
    `ovs_rundir`: the OVS run dir (with db.sock) libvirt's ovs-vsctl must reach.
    `netns`: the network namespace ovs-vswitchd runs in, where guest TAP devices must be made."""
    paths = render_config(state_dir)
    env = {"LIBVIRT_AUTOSTART": "0"}  # we start guests ourselves, after reconciling
    if ovs_rundir is not None:
        env["OVS_RUNDIR"] = str(Path(ovs_rundir).absolute())

    async def ready() -> bool:
        return paths.socket.exists() and await socket_answers(paths.uri)

    argv = ["unshare", "-m", "--propagation", "private",
            "tini", "-s", "--", "setpriv", "--pdeathsig", "TERM", "sh", "-c", _wrapper_script(paths)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]  # exec's in place: the pid stays ours
    return ProcessSpec(
        name=name,
        argv=argv,
        env=env,
        cwd=paths.state_dir,
        ready=ready,
        ready_timeout=30.0,
        stop_timeout=20.0,
        after=after,
    )
