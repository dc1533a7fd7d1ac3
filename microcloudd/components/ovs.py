"""The OVN chassis of a member: ovsdb-server (conf.db), ovs-vswitchd, ovn-controller, br-int.

Everything lives under the given state dir with a private OVS_RUNDIR, which is also what
libvirtd needs in its environment to plug guest NICs into br-int. Without the openvswitch
kernel module, bridges use the userspace (netdev) datapath. The netdev datapath creates
TAP devices ("ovs-netdev", one per bridge) in the network namespace of ovs-vswitchd, so
two chassis on one host must live in different namespaces: `netns` runs ovs-vswitchd in
a given namespace (tests and multi-member setups); None means the current one.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from microcloudd.api.errors import Internal, Unavailable
from microcloudd.components import ovsdb
from microcloudd.components.ovn import private_env
from microcloudd.components.spec import ProcessSpec

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


@dataclass(frozen=True)
class ChassisConfig:
    state_dir: Path
    chassis_name: str  # OVN system-id, unique per member
    encap_ip: str  # Geneve tunnel endpoint: the member's address
    sb_remote: str  # comma-separated when SB is a Raft cluster
    bridge: str = "br-int"
    datapath_type: str | None = None  # None: "system" if the kernel module is there, else "netdev"
    netns: str | None = None  # run ovs-vswitchd in this network namespace
    # physical network name -> OVS bridge holding the uplink (ovn-bridge-mappings)
    bridge_mappings: Mapping[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def conf_db(self) -> Path:
        return self.state_dir / "conf.db"

    @property
    def db_sock(self) -> Path:
        return self.run_dir / "db.sock"

    @property
    def vswitchd_ctl(self) -> Path:
        return self.run_dir / "ovs-vswitchd.ctl"


def kernel_datapath_available() -> bool:
    """True when the openvswitch kernel module is loaded or loadable."""
    if Path("/sys/module/openvswitch").exists():
        return True
    try:
        done = subprocess.run(["modprobe", "-q", "openvswitch"], capture_output=True, timeout=10)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def datapath_type(cfg: ChassisConfig) -> str:
    if cfg.datapath_type:
        return cfg.datapath_type
    return "system" if kernel_datapath_available() else "netdev"


def bootstrap_chassis(cfg: ChassisConfig) -> bool:
    """Create conf.db (kept if it exists). True if created."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    return ovsdb.create_db(cfg.conf_db, VSWITCH_SCHEMA)


def ovs_db_spec(cfg: ChassisConfig) -> ProcessSpec:
    return ovsdb.server_spec("ovsdb-server", [cfg.conf_db], cfg.run_dir, cfg.db_sock)


def _netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


async def _appctl_ok(ctl: Path, *args: str) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            "ovs-appctl", "--timeout=2", "-t", str(ctl), *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    return await proc.wait() == 0


def vswitchd_spec(cfg: ChassisConfig) -> ProcessSpec:
    run = cfg.run_dir
    argv = [
        *_netns_prefix(cfg.netns),
        "ovs-vswitchd",
        f"unix:{cfg.db_sock}",
        "--no-chdir",
        f"--pidfile={run / 'ovs-vswitchd.pid'}",
        f"--unixctl={cfg.vswitchd_ctl}",
        "-vconsole:info",
        "-vsyslog:off",
    ]

    async def ready() -> bool:
        return await _appctl_ok(cfg.vswitchd_ctl, "version")

    return ProcessSpec(name="ovs-vswitchd", argv=argv, env=private_env(run), ready=ready,
                       after=("ovsdb-server",))


def vsctl(cfg: ChassisConfig, *args: str, timeout: float = 10.0) -> str:
    argv = ["ovs-vsctl", f"--db=unix:{cfg.db_sock}", f"--timeout={int(timeout)}", *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 2,
                              env={**private_env(cfg.run_dir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"the local Open vSwitch database did not answer within {timeout:.0f}s") from e
    if done.returncode != 0:
        raise Internal(f"ovs-vsctl {' '.join(args[:4])} failed: {done.stderr.strip()}")
    return done.stdout


def configure_chassis(cfg: ChassisConfig) -> None:
    """Create the integration bridge and point ovn-controller at the SB database.
    Idempotent; needs ovsdb-server running (ovs-vswitchd too, to really create the bridge)."""
    dp = datapath_type(cfg)
    mappings = ",".join(f"{net}:{br}" for net, br in sorted(cfg.bridge_mappings.items()))
    vsctl(
        cfg, "--", "init",
        "--", "--may-exist", "add-br", cfg.bridge,
        "--", "set", "Bridge", cfg.bridge, f"datapath_type={dp}", "fail-mode=secure",
        "other_config:disable-in-band=true",
        "--", "set", "Open_vSwitch", ".",
        f"external_ids:system-id={cfg.chassis_name}",
        f'external_ids:ovn-remote="{cfg.sb_remote}"',
        "external_ids:ovn-encap-type=geneve",
        f"external_ids:ovn-encap-ip={cfg.encap_ip}",
        f"external_ids:ovn-bridge={cfg.bridge}",
        f"external_ids:ovn-bridge-datapath-type={dp}",
        f'external_ids:ovn-bridge-mappings="{mappings}"',
    )


def add_bridge(cfg: ChassisConfig, bridge: str) -> None:
    """A further bridge on the same datapath (the provider bridge of a physical uplink)."""
    vsctl(cfg, "--may-exist", "add-br", bridge, "--", "set", "Bridge", bridge,
           f"datapath_type={datapath_type(cfg)}")


def set_bridge_mappings(cfg: ChassisConfig, mappings: Mapping[str, str]) -> None:
    """Physical network name -> provider bridge; ovn-controller picks the change up live."""
    value = ",".join(f"{net}:{br}" for net, br in sorted(mappings.items()))
    vsctl(cfg, "set", "Open_vSwitch", ".", f'external_ids:ovn-bridge-mappings="{value}"')


def remove_bridges(cfg: ChassisConfig) -> None:
    """Delete every bridge while ovs-vswitchd still runs, so it removes its TAP devices."""
    out = vsctl(cfg, "list-br").split()
    if out:
        args: list[str] = []
        for br in out:
            args += ["--", "--if-exists", "del-br", br]
        vsctl(cfg, *args)


async def _chassis_registered(cfg: ChassisConfig) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            "ovn-sbctl", f"--db={cfg.sb_remote}", "--timeout=2", "--bare", "--columns=name",
            "find", "Chassis", f"name={cfg.chassis_name}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    out, _ = await proc.communicate()
    return proc.returncode == 0 and cfg.chassis_name.encode() in out


def controller_spec(cfg: ChassisConfig) -> ProcessSpec:
    """ovn-controller; ready once its Chassis row is in the SB database.
    (23.03 has no --unixctl; its control socket is OVN_RUNDIR/ovn-controller.PID.ctl.)"""
    run = cfg.run_dir
    argv = [
        "ovn-controller",
        f"unix:{cfg.db_sock}",
        "--no-chdir",
        f"--pidfile={run / 'ovn-controller.pid'}",
        "-vconsole:info",
        "-vsyslog:off",
    ]

    async def ready() -> bool:
        return await _chassis_registered(cfg)

    return ProcessSpec(name="ovn-controller", argv=argv, env=private_env(run), ready=ready,
                       after=("ovs-vswitchd",))
