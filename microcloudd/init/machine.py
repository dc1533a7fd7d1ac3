"""The init state machine: a validated plan → a running, initialised member.

Steps run in order; each is idempotent (bootstraps skip what exists, components already
running are left alone, database rows are inserted with may_exist) and is recorded in
<state_dir>/init/state.json when done. A run that fails records the step and the error; the
next run (after a fix, a Ctrl-C or a daemon restart) runs every step again from the start,
which costs little for steps already done and makes sure components of earlier steps run.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from microcloudd.api.errors import Conflict, InvalidArgument, Unavailable
from microcloudd.api.init import InitPlan, InitRequest, InitState, InitStep
from microcloudd.components.supervisor import Supervisor
from microcloudd.db.records import Config, Member, Profile
from microcloudd.init import auto, preseed, record
from microcloudd.init.record import InitRecord
from microcloudd.operations import OperationContext
from microcloudd.services.cloud import Cloud
from microcloudd.stack import components, drivers
from microcloudd.stack import uplink as uplink_mod

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[], Awaitable[None]]


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    """A service function that may not have landed yet (other areas are built in parallel)."""
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


async def _save(state_dir: Path, rec: InitRecord) -> None:
    await asyncio.to_thread(record.save, state_dir, rec)


class Initializer:
    """Owns init for one member; `on_ready(stack)` is called once the member is initialised
    (the daemon starts its reconcilers there)."""

    def __init__(self, cloud: Cloud, supervisor: Supervisor,
                 on_ready: Callable[[components.LocalStack], Awaitable[None]] | None = None, *,
                 steps: Callable[[InitPlan, InitRecord], list[Step]] | None = None) -> None:
        """`steps` replaces the real step list (tests of the state machine itself)."""
        self.cloud, self.sup, self.on_ready = cloud, supervisor, on_ready
        self._make_steps = steps or self.steps
        self.state_dir = Path(cloud.state_dir)
        self._lock = asyncio.Lock()
        self._steps: list[InitStep] = []
        self.stack_state: Callable[[], str] = lambda: ""  # the daemon's runtime tells

    # -- reading -----------------------------------------------------------------------
    def record(self) -> InitRecord:
        return record.load(self.state_dir)

    def state(self) -> InitState:
        rec = self.record()
        steps = self._steps or ([InitStep(name=s.name, description=s.description,
                                          state="done" if s.name in rec.done else "pending")
                                 for s in self._make_steps(rec.plan, rec)] if rec.plan else [])
        return InitState(initialized=rec.initialized, plan=rec.plan, steps=steps,
                         failed_step=rec.failed_step, error=rec.error, stack=self.stack_state())

    # -- planning ----------------------------------------------------------------------
    def plan_for(self, req: InitRequest) -> InitPlan:
        """Validate the request into a plan (nothing changes). An interrupted init's recorded
        plan wins for --auto/resume; a different preseed is refused."""
        rec = self.record()
        if rec.initialized:
            raise Conflict("This member is already initialised (see `microcloud status`)")
        if self._lock.locked():
            raise Conflict("An init is already running on this member (see `microcloud init --status`)")
        if req.auto or not req.preseed:
            if rec.plan is not None:
                return rec.plan
            return auto.plan(self.state_dir, self.cloud.server_name)
        if rec.plan is not None and rec.plan == preseed.parse(
                req.preseed, req.source, default_member=self.cloud.server_name, check_machine=False):
            return rec.plan  # the same plan again: its disks and uplink are ours by now
        plan = preseed.parse(req.preseed, req.source, default_member=self.cloud.server_name)
        if rec.plan is not None and plan != rec.plan:
            raise InvalidArgument(
                f"An interrupted init used another plan (step {rec.failed_step or '?'} failed): run "
                "`microcloud init --resume` to continue it, or `microcloud init --show` to see it")
        return plan

    def steps(self, plan: InitPlan, rec: InitRecord) -> list[Step]:
        stack = components.LocalStack(self.state_dir, plan, self.sup)
        out = [Step(s.name, s.description, s.run) for s in stack.steps()]
        out += [
            Step("drivers", "Connect the storage, network and compute drivers",
                 lambda: drivers.connect(self.cloud, stack, rec.secret_uuid)),
            Step("storage-pool", f"Create the storage pool {plan.storage.pool}",
                 lambda: self._pool(plan)),
            Step("network", f"Create the uplink and the network {plan.network.name}",
                 lambda: self._network(plan, stack)),
            Step("profile", "Create the default profile", lambda: self._profile(plan)),
            Step("member", f"Record member {plan.member}", lambda: self._member(plan, stack)),
        ]
        return out

    # -- running -----------------------------------------------------------------------
    async def run(self, plan: InitPlan, op: OperationContext | None = None) -> dict[str, Any]:
        async with self._lock:
            rec = self.record()
            rec.plan, rec.failed_step, rec.error = plan, "", ""
            await _save(self.state_dir, rec)
            steps = self._make_steps(plan, rec)
            self._steps = [InitStep(name=s.name, description=s.description) for s in steps]
            for i, (step, view) in enumerate(zip(steps, self._steps, strict=True)):
                view.state = "running"
                self._report(op, i, len(steps))
                try:
                    await step.run()
                except asyncio.CancelledError:
                    view.state, view.message = "failed", "interrupted"
                    await self._failed(rec, step, "interrupted (the daemon stopped)")
                    raise
                except Exception as e:
                    view.state, view.message = "failed", str(e)
                    self._report(op, i, len(steps))
                    await self._failed(rec, step, str(e))
                    raise Unavailable(
                        f"Init step {step.name!r} ({step.description}) failed: {e}. Fix the cause and "
                        "run `microcloud init` again: it continues where it stopped "
                        "(the daemon log has details)", step=step.name) from e
                view.state = "done"
                if step.name not in rec.done:
                    rec.done.append(step.name)
                    await _save(self.state_dir, rec)
            await self.cloud.need_db().insert(Config(key=f"member.{plan.member}.initialized", value="true"),
                                              may_exist=True)
            rec.initialized = True
            await _save(self.state_dir, rec)
            self._report(op, len(steps), len(steps))
        if self.on_ready is not None:
            await self.on_ready(components.LocalStack(self.state_dir, plan, self.sup))
        return {"initialized": True, "member": plan.member}

    async def _failed(self, rec: InitRecord, step: Step, error: str) -> None:
        rec.failed_step, rec.error = step.name, error
        await _save(self.state_dir, rec)
        log.error("init step %s failed: %s", step.name, error)

    def _report(self, op: OperationContext | None, index: int, total: int) -> None:
        if op is None:
            return
        current = self._steps[index].name if index < total else ""
        op.progress(step=current, progress=f"{min(index + 1, total)}/{total}",
                    steps=[msgspec.to_builtins(s) for s in self._steps])

    # -- the cloud-level steps -----------------------------------------------------------
    async def _pool(self, plan: InitPlan) -> None:
        ensure = _optional("microcloudd.services.storage_pools", "ensure_default_pool")
        if ensure is None:
            raise Unavailable("services.storage_pools is not available in this build")
        await ensure(self.cloud, plan.storage.pool)

    async def _network(self, plan: InitPlan, stack: components.LocalStack) -> None:
        uplink = uplink_mod.spec(stack.lay, plan.member, plan.network)
        ensure = _optional("microcloudd.services.networks", "ensure_default_network")
        if ensure is None:
            raise Unavailable("services.networks is not available in this build")
        await ensure(self.cloud, plan.network.name, ipv4=plan.network.subnet or "auto", uplink=uplink)

    async def _profile(self, plan: InitPlan) -> None:
        devices = {
            "root": {"type": "disk", "path": "/", "pool": plan.storage.pool},
            "eth0": {"type": "nic", "name": "eth0", "network": plan.network.name},
        }
        db = self.cloud.need_db()
        existing = db.get_or_none(Profile, "default")
        if existing is None:
            await db.insert(Profile(name="default", devices=devices, description="Default profile"),
                            may_exist=True)
        elif not existing.devices:
            await db.update(Profile, "default", devices=devices)

    async def _member(self, plan: InitPlan, stack: components.LocalStack) -> None:
        address = plan.address or stack.lay.host_ip
        await self.cloud.need_db().insert(
            Member(name=plan.member, address=address,
                   roles=["database-voter", "ovn-central", "ceph-mon", "compute"]), may_exist=True)
