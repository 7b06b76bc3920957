"""The optional run-level hook: wrap_run(graph, call) -> call, composed like wrap."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from stageflow import (
    ConfigurationError,
    Engine,
    Pipeline,
    RunContext,
    RunResult,
    RunStatus,
    StageCall,
    StageContext,
    StageGraph,
    StageSpec,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import run_virtual

from ._helpers import failing, noop, run, sleeper

CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="-")


class RunHook:
    """Records what its wrap_run sees and sets a context variable around the run."""

    def __init__(self, name: str, priority: int, log: list[str]) -> None:
        self.name = name
        self.priority = priority
        self.log = log
        self.wrapped: list[str] = []
        self.runs: list[RunContext] = []

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        return call

    def wrap_run(self, graph: StageGraph, call: Any) -> Any:
        self.wrapped.append(graph.name)

        async def hooked(run: RunContext) -> RunResult:
            self.runs.append(run)
            self.log.append(f"{self.name}:enter")
            token = CURRENT.set(self.name)
            try:
                result: RunResult = await call(run)
            finally:
                CURRENT.reset(token)
                self.log.append(f"{self.name}:exit")
            return result

        return hooked


def seen_by_stage(ctx: StageContext) -> dict[str, str]:
    return {"current": CURRENT.get()}


async def async_seen(ctx: StageContext) -> dict[str, str]:
    await asyncio.sleep(0)
    return {"current": CURRENT.get()}


GRAPH = (
    Pipeline("hooks")
    .with_stage("a", async_seen)
    .with_stage("b", seen_by_stage, dependencies=("a",))  # sync: runs in a thread
    .with_stage("c", async_seen, dependencies=("a",))
    .build()
)


class TestWrapRun:
    def test_hooks_nest_by_priority_and_stages_run_inside_them(self) -> None:
        log: list[str] = []
        inner, outer = RunHook("inner", 900, log), RunHook("outer", 100, log)
        result = run(GRAPH, Engine(interceptors=[inner, outer]))
        assert log == ["outer:enter", "inner:enter", "inner:exit", "outer:exit"]
        # Every stage, in a task or a thread, sees what the innermost hook set.
        assert [result[s].data["current"] for s in "abc"] == ["inner", "inner", "inner"]

    def test_wrap_run_is_called_once_per_graph_not_per_run(self) -> None:
        hook = RunHook("hook", 100, [])
        engine = Engine(interceptors=[hook])
        for _ in range(3):
            run(GRAPH, engine)
        assert hook.wrapped == ["hooks"]
        assert len(hook.runs) == 3
        assert len({r.run_id for r in hook.runs}) == 3

    def test_the_run_context_describes_the_run(self) -> None:
        hook = RunHook("hook", 100, [])
        result = run(GRAPH, Engine(interceptors=[hook]), data={"k": 1}, run_id="r-1", timeout=5)
        (ctx,) = hook.runs
        assert (ctx.run_id, ctx.pipeline, ctx.graph, ctx.resumed, ctx.timeout) == (
            "r-1",
            "hooks",
            GRAPH,
            False,
            5,
        )
        assert dict(ctx.data) == {"k": 1}
        assert result.run_id == "r-1"
        assert repr(ctx) == "<RunContext 'r-1' pipeline='hooks'>"

    def test_a_resumed_run_says_so(self) -> None:
        hook = RunHook("hook", 100, [])
        store = MemoryStore()
        graph = Pipeline("resumable").with_stage("a", noop).build()

        async def main() -> RunResult:
            engine = Engine(store=store, interceptors=[hook])
            await engine.run(graph, run_id="r-2")
            return await engine.resume("r-2", graph)

        assert run_virtual(main()).status is RunStatus.COMPLETED
        assert [r.resumed for r in hook.runs] == [False, True]
        assert "resumed" in repr(hook.runs[1])

    def test_a_hook_may_replace_the_result(self) -> None:
        class Relabel:
            name, priority = "relabel", 100

            def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
                return call

            def wrap_run(self, graph: StageGraph, call: Any) -> Any:
                async def relabeled(run: RunContext) -> Any:
                    result = await call(run)
                    return (result.status, run.run_id)

                return relabeled

        outcome: Any = run(GRAPH, Engine(interceptors=[Relabel()]), run_id="r-3")
        assert outcome == (RunStatus.COMPLETED, "r-3")

    def test_a_failed_run_still_returns_through_the_hooks(self) -> None:
        log: list[str] = []
        graph = Pipeline("fails").with_stage("a", failing()).build()
        result = run(graph, Engine(interceptors=[RunHook("hook", 100, log)]))
        assert result.status is RunStatus.FAILED
        assert log == ["hook:enter", "hook:exit"]

    def test_cancellation_passes_through_the_hooks(self) -> None:
        log: list[str] = []
        graph = Pipeline("slow").with_stage("a", sleeper(10)).build()
        engine = Engine(interceptors=[RunHook("hook", 100, log)])

        async def main() -> None:
            task = asyncio.ensure_future(engine.run(graph))
            await asyncio.sleep(1)
            task.cancel()
            await task

        with pytest.raises(asyncio.CancelledError):
            run_virtual(main())
        assert log == ["hook:enter", "hook:exit"]

    def test_interceptors_without_wrap_run_add_no_layer(self) -> None:
        engine = Engine()
        assert engine._compiled(GRAPH).run_call == engine._execute

    def test_wrap_run_returning_no_call_is_refused_naming_the_interceptor(self) -> None:
        class Broken:
            name, priority = "broken", 100

            def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
                return call

            def wrap_run(self, graph: StageGraph, call: Any) -> Any:
                return None

        with pytest.raises(ConfigurationError, match=r"'broken' returned None from wrap_run\(\)"):
            run(GRAPH, Engine(interceptors=[Broken()]))
