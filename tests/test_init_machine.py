"""The init state machine's resume logic, against a real Microcloud database.

The steps here are small real steps (database writes, a file) standing in for the component
steps, which the integration tier runs for real: what is tested is the recording and
resuming, not the components.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from microcloudd.api.errors import Conflict, InvalidArgument, Unavailable
from microcloudd.api.init import InitPlan, InitRequest, StoragePlan
from microcloudd.components.supervisor import Supervisor
from microcloudd.db.database import Database
from microcloudd.db.records import Config
from microcloudd.events import EventBus
from microcloudd.init import record
from microcloudd.init.machine import Initializer, Step
from microcloudd.init.record import InitRecord
from microcloudd.operations import OperationManager
from microcloudd.services.cloud import Cloud

PLAN = InitPlan(member="node1", storage=StoragePlan(file_osd_size=2 << 30))


class Steps:
    """Three steps writing Config rows; `fail_at` makes one fail once."""

    def __init__(self, cloud: Cloud, fail_at: str = "") -> None:
        self.cloud, self.fail_at, self.runs = cloud, fail_at, list[str]()

    def __call__(self, plan: InitPlan, rec: InitRecord) -> list[Step]:
        return [Step(n, f"step {n}", lambda n=n: self.run(n)) for n in ("one", "two", "three")]

    async def run(self, name: str) -> None:
        self.runs.append(name)
        if name == self.fail_at:
            self.fail_at = ""
            raise Unavailable(f"{name} could not reach its backend")
        await self.cloud.need_db().insert(Config(key=f"test.{name}", value="done"), may_exist=True)


@pytest.fixture
def cloud(microcloud_db: Database, tmp_path: Path) -> Cloud:
    events = EventBus()
    return Cloud(tmp_path / "state", "node1", events, OperationManager(events), db=microcloud_db,
                 supervisor=Supervisor())


async def test_a_failed_step_is_recorded_and_a_rerun_continues(cloud: Cloud) -> None:
    steps = Steps(cloud, fail_at="two")
    init = Initializer(cloud, Supervisor(), steps=steps)
    with pytest.raises(Unavailable) as e:
        await init.run(PLAN)
    assert "Init step 'two' (step two) failed: two could not reach its backend" in str(e.value)
    assert "run `microcloud init` again" in str(e.value)
    rec = record.load(cloud.state_dir)
    assert rec.done == ["one"] and rec.failed_step == "two" and not rec.initialized
    assert rec.plan == PLAN
    state = init.state()
    assert [(s.name, s.state) for s in state.steps] == [
        ("one", "done"), ("two", "failed"), ("three", "pending")]

    # A new Initializer (as after a daemon restart) resumes with the recorded plan.
    init2 = Initializer(cloud, Supervisor(), steps=steps)
    plan = init2.plan_for(InitRequest(auto=True))
    assert plan == PLAN
    await init2.run(plan)
    rec = record.load(cloud.state_dir)
    assert rec.initialized and rec.done == ["one", "two", "three"] and rec.failed_step == ""
    assert steps.runs == ["one", "two", "one", "two", "three"]  # steps are idempotent: re-run from the top
    db = cloud.need_db()
    assert sorted(c.key for c in db.all(Config) if c.key.startswith("test.")) == ["test.one", "test.three",
                                                                                  "test.two"]
    assert db.get(Config, "member.node1.initialized").value == "true"
    with pytest.raises(Conflict):
        init2.plan_for(InitRequest(auto=True))


async def test_a_different_plan_does_not_hijack_an_interrupted_init(cloud: Cloud) -> None:
    init = Initializer(cloud, Supervisor(), steps=Steps(cloud, fail_at="one"))
    with pytest.raises(Unavailable):
        await init.run(PLAN)
    other = "member: node1\nstorage:\n  file_osd_size: 3GiB\n"
    with pytest.raises(InvalidArgument, match="init --resume"):
        init.plan_for(InitRequest(preseed=other))
    same = "member: node1\nstorage:\n  file_osd_size: 2GiB\n"
    assert init.plan_for(InitRequest(preseed=same)) == PLAN


async def test_the_record_survives_a_torn_write(cloud: Cloud) -> None:
    rec = InitRecord(plan=PLAN, done=["one"])
    record.save(cloud.state_dir, rec)
    # A crash between writing the temporary file and the rename leaves the old record intact.
    record.path(cloud.state_dir).with_name("state.json.tmp").write_text("{garbage")
    assert record.load(cloud.state_dir).done == ["one"]
    secret = record.load(cloud.state_dir).secret_uuid
    assert secret == record.load(cloud.state_dir).secret_uuid  # chosen once, kept
