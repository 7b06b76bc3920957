"""Nested parts of a run: what a subgraph, a loop iteration or a map's items run in."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from stageflow import Engine, Pipeline, StageContext, StageStatus
from stageflow._scheduler import RunState
from stageflow._services import RunServices
from stageflow.testing import RecordingSink


def _sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A test written as a coroutine, run in a fresh event loop."""

    @functools.wraps(test)
    def run(*args: Any) -> None:
        asyncio.run(test(*args))

    return run


async def _noop(ctx: StageContext) -> dict[str, Any]:
    return {"stage": ctx.stage}


class TestAPartSharesTheRun:
    @_sync
    async def test_every_slot_of_a_part_is_set(self) -> None:
        graph = Pipeline("p").with_stage("a", _noop).build()
        run = RunState(
            graph, (), "r1", {}, sink=None, clock=Engine().clock, max_parallel=None,
            fail_fast=True,
        )  # fmt: skip
        part: RunServices = object.__new__(RunServices)
        ctx = StageContext.__new__(StageContext)

        run.nest(part, graph, ("x.a",), ctx)

        unset = [name for name in RunServices.__slots__ if not hasattr(part, name)]
        assert unset == []
        assert part.root is run
        assert part.outcomes.names == ("x.a",)
        assert part.ledger is run.ledger is not None

    @_sync
    async def test_events_of_nested_stages_are_numbered_with_the_run(self) -> None:
        sink = RecordingSink()
        body = Pipeline("b").with_stage("s", _noop).with_stage("t", _noop, dependencies=("s",))
        graph = (
            Pipeline("p")
            .with_stage("a", _noop)
            .with_subgraph("sub", body, dependencies=("a",))
            .with_loop(
                "lp",
                Pipeline("c").with_stage("u", _noop),
                until=lambda o: False,
                max_iterations=2,
                on_exhausted="complete",
            )
            .build()
        )

        await Engine(sink=sink).run(graph)

        seqs = [e.seq for e in sink.events]
        assert seqs == list(range(1, len(seqs) + 1))
        started = [e.stage for e in sink.events if e.type == "stage.started"]
        assert {"sub.s", "sub.t", "lp[1].u", "lp[2].u"} <= set(started)


class TestALoneStageBody:
    """A loop of a one-stage body runs each iteration in the loop's own task; it must
    behave like any other part."""

    @_sync
    async def test_a_failure_fails_the_loop_naming_the_inner_stage(self) -> None:
        async def boom(ctx: StageContext) -> None:
            if ctx.loop is not None and ctx.loop.iteration == 2:
                raise ValueError("second")

        body = Pipeline("b").with_stage("s", boom)
        graph = Pipeline("p").with_loop("lp", body, until=lambda o: False, max_iterations=3).build()

        result = await Engine().run(graph)

        assert result["lp"].status is StageStatus.FAILED
        assert result["lp"].error.inner == "lp[2].s"  # type: ignore[union-attr]
        assert result["lp[2].s"].status is StageStatus.FAILED
        assert "lp[3].s" not in result.stages

    @_sync
    async def test_cancelling_the_run_cancels_the_running_iteration(self) -> None:
        started = asyncio.Event()

        async def hang(ctx: StageContext) -> None:
            started.set()
            await asyncio.Event().wait()

        body = Pipeline("b").with_stage("s", hang)
        graph = Pipeline("p").with_loop("lp", body, until=lambda o: False, max_iterations=3).build()
        task = asyncio.ensure_future(Engine().run(graph))
        await started.wait()

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    @_sync
    async def test_a_timed_out_run_records_the_iteration_as_cancelled(self) -> None:
        async def hang(ctx: StageContext) -> None:
            await asyncio.Event().wait()

        body = Pipeline("b").with_stage("s", hang)
        graph = Pipeline("p").with_loop("lp", body, until=lambda o: False, max_iterations=3).build()

        result = await Engine().run(graph, timeout=0.01)

        assert result["lp[1].s"].status is StageStatus.CANCELLED
        assert result["lp"].status is StageStatus.CANCELLED


class TestCancelledItems:
    @_sync
    async def test_an_item_cancelled_by_a_failing_one_ends_with_an_item_cancelled_event(
        self,
    ) -> None:
        sink = RecordingSink()
        gate = asyncio.Event()

        async def item(ctx: StageContext) -> None:
            if ctx.item == "bad":
                await asyncio.sleep(0)
                raise ValueError("bad item")
            await gate.wait()  # cancelled when "bad" fails

        graph = Pipeline("p").with_map("m", item, over=lambda ctx: ["slow", "bad"]).build()

        result = await Engine(sink=sink).run(graph)

        assert result["m"].items[0].status is StageStatus.CANCELLED
        ends = [(e.type, e.data["item"]) for e in sink.events if e.type.startswith("item.")]
        assert ends == [
            ("item.started", "0"),
            ("item.started", "1"),
            ("item.failed", "1"),
            ("item.cancelled", "0"),
        ]
