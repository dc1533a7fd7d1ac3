from __future__ import annotations

import pytest

from microcloudd.services.reverter import Reverter


async def test_undo_newest_first_on_failure_and_keep_going() -> None:
    done: list[str] = []

    async def undo(name: str) -> None:
        if name == "b":
            raise RuntimeError("undo b broke")
        done.append(name)

    with pytest.raises(ValueError):
        async with Reverter() as r:
            for n in "abc":
                r.add(lambda n=n: undo(n), n)
            raise ValueError("step d failed")
    assert done == ["c", "a"]


async def test_success_keeps_everything() -> None:
    done: list[str] = []

    async def undo() -> None:
        done.append("x")

    async with Reverter() as r:
        r.add(undo)
        r.success()
    assert done == []
