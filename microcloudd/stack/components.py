"""This member's components, started in dependency order through the Supervisor.

    stack = LocalStack(state_dir, plan, supervisor)
    for step in stack.steps():          # (name, description, coroutine function)
        await step.run()                # idempotent: bootstrap what is missing, start what is not running

Order: network namespace → OVN NB/SB → ovn-northd → OVS ovsdb-server → ovs-vswitchd →
ovn-controller → ceph-mon → ceph-mgr → ceph-osd → libvirtd. The Supervisor stops them in
reverse. The Microcloud database is started before all of this by the daemon itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from microcloudd.api.errors import InvalidArgument, Unavailable
from microcloudd.api.init import InitPlan
from microcloudd.components import ceph, libvirtd, ovn, ovs
from microcloudd.components.spec import ProcessSpec
from microcloudd.components.supervisor import Supervisor
from microcloudd.init import disks as disk_discovery
from microcloudd.stack import netns, uplink
from microcloudd.stack.layout import CEPH_BASE_PORT, NB_RAFT_PORT, SB_RAFT_PORT, Layout

log = logging.getLogger(__name__)

_ACTIVE = ("starting", "running", "restarting")


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[], Awaitable[None]]


async def ensure_running(sup: Supervisor, spec: ProcessSpec) -> None:
    """Start `spec` unless the Supervisor already runs (or is restarting) it."""
    if any(c.name == spec.name and c.state in _ACTIVE for c in sup.status()):
        return
    await sup.start(spec)


class LocalStack:
    def __init__(self, state_dir: Path, plan: InitPlan, supervisor: Supervisor) -> None:
        self.plan, self.sup = plan, supervisor
        self.lay = Layout(Path(state_dir))
        self.central = ovn.CentralPaths(self.lay.ovn_dir)
        self.chassis = ovs.ChassisConfig(
            state_dir=self.lay.ovs_dir, chassis_name=plan.member, encap_ip=self.lay.ns_ip,
            sb_remote=self.central.sb_remote, netns=self.lay.netns,
            bridge_mappings={"uplink": self.lay.uplink_bridge},
        )
        self.ceph = ceph.LocalCeph(self.lay.ceph_dir)

    @property
    def external_ceph(self) -> bool:
        return self.plan.storage.ceph is not None

    @property
    def host_libvirt(self) -> bool:
        return self.plan.compute.libvirt == "host"

    def ceph_access(self) -> ceph.CephAccess:
        ext = self.plan.storage.ceph
        if ext is not None:
            return ceph.external(Path(ext.conf), Path(ext.keyring), ext.user)
        return self.ceph.access()

    @property
    def libvirt_uri(self) -> str:
        if self.host_libvirt:
            return self.plan.compute.libvirt_uri or libvirtd.HOST_URI
        return libvirtd.uri(self.lay.libvirt_dir)

    def steps(self) -> list[Step]:
        out = [
            Step("network-namespace", "Create the network namespace and its link to the host", self._netns),
            Step("ovn-central", "Start OVN central (NB and SB databases, ovn-northd)", self._ovn_central),
            Step("ovs-chassis", "Start Open vSwitch and ovn-controller", self._ovs_chassis),
        ]
        if self.external_ceph:
            out.append(Step("ceph", "Check the external Ceph cluster", self._ceph_external))
        else:
            out += [Step("ceph", "Bootstrap and start the Ceph monitor and manager", self._ceph_mon_mgr),
                    Step("ceph-osd", "Create and start the Ceph OSD", self._ceph_osd)]
        out.append(Step("libvirtd", "Check the host's libvirtd" if self.host_libvirt else "Start libvirtd",
                        self._libvirtd))
        return out

    async def start(self) -> None:
        for step in self.steps():
            log.info("stack: %s", step.description)
            await step.run()

    # -- the steps -----------------------------------------------------------------------

    async def _netns(self) -> None:
        await asyncio.to_thread(netns.ensure, self.lay)
        if self.external_ceph:
            # QEMU (in the namespace) opens the guests' disks on the site's monitors and OSDs.
            await asyncio.to_thread(netns.ensure_egress, self.lay)

    async def _ovn_central(self) -> None:
        ip = self.lay.host_ip
        await asyncio.to_thread(ovn.bootstrap_central, self.central, f"tcp:{ip}:{NB_RAFT_PORT}",
                                f"tcp:{ip}:{SB_RAFT_PORT}")
        for spec in ovn.central_specs(self.central):
            await ensure_running(self.sup, spec)

    async def _ovs_chassis(self) -> None:
        cfg = self.chassis
        await asyncio.to_thread(ovs.bootstrap_chassis, cfg)
        await ensure_running(self.sup, ovs.ovs_db_spec(cfg))
        await ensure_running(self.sup, ovs.vswitchd_spec(cfg))
        await asyncio.to_thread(ovs.configure_chassis, cfg)
        await uplink.ensure(self.lay, cfg, self.plan.network)
        await ensure_running(self.sup, ovs.controller_spec(cfg))

    async def _ceph_mon_mgr(self) -> None:
        size = self.plan.storage.file_osd_size or 10 * ceph.GiB
        await asyncio.to_thread(self.ceph.bootstrap, base_port=CEPH_BASE_PORT, address=self.lay.host_ip,
                                objectstore="bluestore", osd_bytes=size, mon_id=self.plan.member)
        await ensure_running(self.sup, self.ceph.mon_spec())
        await ensure_running(self.sup, self.ceph.mgr_spec())

    async def _ceph_osd(self) -> None:
        disks = self.plan.storage.disks
        if disks:
            await asyncio.to_thread(self._disk_osds, disks, self.plan.storage.wipe)
        elif not self.ceph.osd_ids():
            await asyncio.to_thread(self.ceph.create_osd, 300.0)
        for osd_id in self.ceph.osd_ids():
            await ensure_running(self.sup, self.ceph.osd_spec(osd_id))

    def _disk_osds(self, disks: list[str], wipe: bool) -> None:
        """An OSD on each planned disk that has none yet. Each disk is checked again right
        before it is formatted (it may have been mounted since the plan was made); a disk our
        own interrupted creation left half-formatted counts as blank."""
        done = self.ceph.osd_devices()
        for path in disks:
            if path in done:
                continue
            ours = self.ceph.osd_pending(Path(path))
            why = disk_discovery.problem(path, wipe=wipe or ours)
            if why:
                raise InvalidArgument(f"not formatting {why}")
            self.ceph.create_osd(300.0, Path(path), wipe=wipe or ours)

    async def _ceph_external(self) -> None:
        access = self.ceph_access()
        await asyncio.to_thread(ceph.mon_command, access, {"prefix": "mon stat"})

    async def _libvirtd(self) -> None:
        # Guest console logs (services/instance_spec.console_log): libvirtd (root) opens each
        # file and hands QEMU the descriptor, so a host libvirtd's unprivileged QEMU needs no
        # access to the state dir.
        (self.lay.state_dir / "logs").mkdir(exist_ok=True)
        if self.host_libvirt:  # not ours to start: it must answer (guest NICs: host_nic.py)
            if not await libvirtd.socket_answers(self.libvirt_uri):
                raise Unavailable(f"the host's libvirtd does not answer on {self.libvirt_uri}")
            return
        spec = libvirtd.libvirtd_spec(self.lay.libvirt_dir, ovs_rundir=self.chassis.run_dir,
                                      netns=self.lay.netns, after=("ovs-vswitchd",))
        await ensure_running(self.sup, spec)
