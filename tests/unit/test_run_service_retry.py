"""RunService.retry: a new run of a failed run that reuses its completed stages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stageflow import Engine, Pipeline, RunNotRetryableError, RunService, StageContext
from stageflow._service import RETRY_OF
from stageflow.adapters.memory import MemoryStore
from stageflow.errors import (
    ConfigurationError,
    GraphMismatchError,
    RunExistsError,
    UnknownRunError,
)
from stageflow.testing import run_virtual


class World:
    """A 4-stage chain a → b → c → d whose ``c`` fails while ``self.fail`` is true;
    ``calls`` counts each stage's runs; ``gate`` holds ``d`` when ``self.hold``."""

    def __init__(self, store: MemoryStore | None = None, *, changed: bool = False) -> None:
        self.store = store or MemoryStore()
        self.calls: dict[str, int] = {}
        self.fail = True
        self.hold = False
        self.gate = asyncio.Event()
        self.states: list[Any] = []
        self.service = RunService(
            Engine(store=self.store, event_log=self.store), {"chain": self.pipeline(changed)}
        )

    def pipeline(self, changed: bool) -> Pipeline:
        def counted(name: str) -> Any:
            async def stage(ctx: StageContext) -> dict[str, Any]:
                self.calls[name] = self.calls.get(name, 0) + 1
                if name == "c":
                    self.states.append(await ctx.state.load())
                    await ctx.state.save("seen")
                    if self.fail:
                        raise RuntimeError("c failed")
                if name == "d" and self.hold:
                    await self.gate.wait()
                return {"stage": name, "n": ctx.data.get("n", 0)}

            return stage

        pipeline = Pipeline("chain").with_stage("a", counted("a"))
        pipeline = pipeline.with_stage("b", counted("b"), dependencies=["a"])
        pipeline = pipeline.with_stage("c", counted("c"), dependencies=["b"])
        pipeline = pipeline.with_stage("d", counted("d"), dependencies=["c"])
        if changed:
            pipeline = pipeline.with_stage("e", counted("e"), dependencies=["d"])
        return pipeline

    async def ended(self, run_id: str) -> str:
        async for _ in await self.service.events(run_id):
            pass
        return (await self.service.get(run_id))["status"]


def test_retry_reuses_the_completed_stages_and_runs_the_rest() -> None:
    async def main() -> None:
        world = World()
        old = await world.service.start("chain", {"n": 7}, labels={"team": "owls"})
        assert await world.ended(old) == "failed"
        assert world.calls == {"a": 1, "b": 1, "c": 1}

        world.fail = False
        retried = await world.service.retry(old)
        new = retried["run_id"]
        assert new != old
        assert retried["retry_of"] == old
        assert retried["reused"] == ["a", "b"]
        assert await world.ended(new) == "completed"
        assert world.calls == {"a": 1, "b": 1, "c": 2, "d": 1}  # a, b not run again
        assert world.states == [None, "seen"]  # c's saved state was copied
        events = [e async for e in await world.service.events(new)]
        assert [e.stage for e in events if e.type == "stage.restored"] == ["a", "b"]

        got = await world.service.get(new)
        assert got["labels"] == {"team": "owls", RETRY_OF: old}
        outputs = (await world.service.outputs(new))["outputs"]
        assert outputs["a"] == {"stage": "a", "n": 7}
        assert outputs["d"] == {"stage": "d", "n": 7}
        assert (await world.service.get(old))["status"] == "failed"  # left as it was
        await world.service.aclose()

    run_virtual(main())


def test_retry_of_a_cancelled_run_with_a_given_id() -> None:
    async def main() -> None:
        world = World()
        world.fail = False
        world.hold = True
        old = await world.service.start("chain")
        await world.service.cancel(old)
        assert (await world.service.get(old))["status"] == "cancelled"
        world.hold = False
        retried = await world.service.retry(old, new_run_id="again-1")
        assert retried["run_id"] == "again-1"
        assert await world.ended("again-1") == "completed"
        assert world.calls["a"] == 1
        await world.service.aclose()

    run_virtual(main())


def test_retry_refuses_a_completed_or_running_run() -> None:
    async def main() -> None:
        world = World()
        world.fail = False
        done = await world.service.start("chain")
        assert await world.ended(done) == "completed"
        with pytest.raises(RunNotRetryableError, match=rf"run '{done}' is completed") as error:
            await world.service.retry(done)
        assert error.value.status == "completed"

        world.hold = True
        running = await world.service.start("chain")
        with pytest.raises(RunNotRetryableError, match=r"is running") as error:
            await world.service.retry(running)
        assert error.value.run_id == running
        world.gate.set()
        assert await world.ended(running) == "completed"
        await world.service.aclose()

    run_virtual(main())


def test_retry_of_an_unknown_run_or_with_a_taken_or_bad_id() -> None:
    async def main() -> None:
        world = World()
        with pytest.raises(UnknownRunError, match="no run with id 'nope'"):
            await world.service.retry("nope")
        old = await world.service.start("chain")
        assert await world.ended(old) == "failed"
        with pytest.raises(ConfigurationError) as error:
            await world.service.retry(old, new_run_id="bad id!")
        assert error.value.field == "run_id"
        with pytest.raises(RunExistsError):
            await world.service.retry(old, new_run_id=old)
        await world.service.aclose()

    run_virtual(main())


def test_retry_with_another_graph_is_refused() -> None:
    async def main() -> None:
        store = MemoryStore()
        before = World(store)
        old = await before.service.start("chain")
        assert await before.ended(old) == "failed"
        await before.service.aclose()

        after = World(store, changed=True)
        with pytest.raises(GraphMismatchError, match=old):
            await after.service.retry(old)
        assert after.calls == {}
        await after.service.aclose()

    run_virtual(main())


def test_retry_needs_an_open_service() -> None:
    async def main() -> None:
        world = World()
        old = await world.service.start("chain")
        assert await world.ended(old) == "failed"
        await world.service.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await world.service.retry(old)

    run_virtual(main())
