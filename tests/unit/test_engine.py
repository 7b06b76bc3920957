"""Engine: scheduling as soon as ready, limits, skips, optional edges, reuse (virtual time)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from stageflow import (
    ConfigurationError,
    EmptyPipelineError,
    Engine,
    Pipeline,
    RunResult,
    RunStatus,
    StageGraph,
    StageOutput,
    StageResult,
    StageStatus,
)
from stageflow.interceptors import BaseInterceptor
from stageflow.testing import run_virtual

from ._helpers import noop, run, sleeper


class TestEngineScheduling:
    def test_a_stage_starts_when_its_last_dependency_ends(self):
        graph = (
            Pipeline()
            .with_stage("fast", sleeper(1))
            .with_stage("slow", sleeper(3))
            .with_stage("after_fast", sleeper(1), dependencies=("fast",))
            .with_stage("after_both", sleeper(1), dependencies=("fast", "slow"))
            .build()
        )

        result = run(graph)

        assert result["fast"].started == pytest.approx(0)
        assert result["slow"].started == pytest.approx(0)
        assert result["after_fast"].started == pytest.approx(1)
        assert result["after_both"].started == pytest.approx(3)
        assert result["after_both"].ended == pytest.approx(4)
        assert result.duration == pytest.approx(4)

    def test_independent_stages_run_concurrently(self):
        pipeline = Pipeline()
        for i in range(20):
            pipeline = pipeline.with_stage(f"s{i}", sleeper(5))

        result = run(pipeline.build())

        assert result.duration == pytest.approx(5)
        assert [r.started for r in result] == pytest.approx([0.0] * 20)

    def test_a_chain_runs_one_stage_after_the_other(self):
        graph = (
            Pipeline()
            .with_stage("a", sleeper(1))
            .with_stage("b", sleeper(2), dependencies=("a",))
            .with_stage("c", sleeper(3), dependencies=("b",))
            .build()
        )

        result = run(graph)

        assert [(r.started, r.ended) for r in result] == [
            pytest.approx((0, 1)),
            pytest.approx((1, 3)),
            pytest.approx((3, 6)),
        ]

    @pytest.mark.parametrize("limit", [1, 2, 3, 7])
    def test_max_parallel_bounds_the_stages_running_at_once(self, limit):
        running = peak = 0

        async def stage(ctx):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(1)
            running -= 1

        pipeline = Pipeline().with_stage("root", stage)
        for i in range(10):
            pipeline = pipeline.with_stage(f"s{i}", stage, dependencies=("root",))

        result = run(pipeline.build(), Engine(max_parallel=limit))

        assert result.ok
        assert peak == limit
        assert result.duration == pytest.approx(1 + -(-10 // limit))

    def test_max_parallel_counts_stages_freed_by_a_failure(self):
        running = peak = 0

        async def stage(ctx):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(1)
            running -= 1

        async def fails(ctx):
            raise ValueError("boom")

        pipeline = Pipeline().with_stage("bad", fails)
        for i in range(6):
            pipeline = pipeline.with_stage(f"s{i}", stage, dependencies=("bad",), optional=("bad",))

        result = run(pipeline.build(), Engine(max_parallel=2, fail_fast=False))

        assert result.with_status(StageStatus.COMPLETED) == tuple(f"s{i}" for i in range(6))
        assert peak == 2

    def test_with_max_parallel_one_ready_stages_start_in_a_dependency_respecting_order(self):
        order: list[str] = []

        async def record(ctx):
            order.append(ctx.stage)
            await asyncio.sleep(1)

        graph = (
            Pipeline()
            .with_stage("a", record)
            .with_stage("b", record, dependencies=("a",))
            .with_stage("c", record)
            .with_stage("d", record, dependencies=("b", "c"))
            .build()
        )

        result = run(graph, Engine(max_parallel=1))

        assert sorted(order) == ["a", "b", "c", "d"]
        assert order.index("a") < order.index("b") < order.index("d")
        assert order.index("c") < order.index("d")
        assert result.duration == pytest.approx(4)

    def test_an_empty_pipeline_never_becomes_a_graph_to_run(self):
        with pytest.raises(EmptyPipelineError, match="'empty' has no stages"):
            Pipeline("empty").build()

    def test_graph_run_uses_a_default_engine(self):
        async def greet(ctx):
            return {"greeting": f"hello {ctx.data['name']}"}

        graph = Pipeline().with_stage("greet", greet).build()

        result = run_virtual(graph.run(data={"name": "owls"}, run_id="r-1"))

        assert result["greet"].data == {"greeting": "hello owls"}
        assert result.run_id == "r-1"

    def test_results_are_in_graph_order_whatever_the_finishing_order(self):
        graph = (
            Pipeline()
            .with_stage("slow", sleeper(3))
            .with_stage("mid", sleeper(2))
            .with_stage("fast", sleeper(1))
            .build()
        )

        result = run(graph)

        assert list(result.stages) == ["slow", "mid", "fast"]
        assert [r.stage for r in result] == ["slow", "mid", "fast"]

    def test_a_synchronous_stage_does_not_block_the_loop(self):
        # Real threads: an asyncio stage keeps running while a sync one waits on an event.
        release = threading.Event()

        def blocking(ctx):
            assert release.wait(timeout=5)
            return {"released": True}

        async def releaser(ctx):
            await asyncio.sleep(0.01)
            release.set()

        graph = Pipeline().with_stage("blocking", blocking).with_stage("rel", releaser).build()

        result = asyncio.run(Engine().run(graph))

        assert result.ok
        assert result["blocking"].data == {"released": True}


class TestEngineResult:
    def test_run_result_exposes_each_stage_result(self):
        graph = Pipeline("p").with_stage("a", sleeper(2, x=1)).build()

        result = run(graph, run_id="run-1")

        stage = result["a"]
        assert isinstance(result, RunResult)
        assert isinstance(stage, StageResult)
        assert result.run_id == "run-1"
        assert result.pipeline == "p"
        assert result.ok
        assert result.error is None
        assert result.sink_errors == 0
        assert stage.ok
        assert stage.data == {"x": 1}
        assert stage.attempts == 1
        assert stage.duration == pytest.approx(2)
        assert stage.error is None
        assert stage.reason is None
        assert "a" in result
        assert "b" not in result

    def test_asking_for_an_unknown_stage_names_the_known_ones(self):
        result = run(Pipeline("p").with_stage("a", noop).with_stage("b", noop).build())

        with pytest.raises(KeyError, match="no stage 'zzz'; stages: a, b"):
            result["zzz"]

    def test_with_status_names_the_stages_in_graph_order(self):
        async def skip(ctx):
            return StageOutput.skip("nothing to do")

        graph = (
            Pipeline()
            .with_stage("a", noop)
            .with_stage("b", skip)
            .with_stage("c", noop)
            .with_stage("d", noop, dependencies=("b",))
            .build()
        )

        result = run(graph)

        assert result.with_status(StageStatus.COMPLETED) == ("a", "c")
        assert result.with_status(StageStatus.SKIPPED) == ("b", "d")
        assert result.with_status(StageStatus.FAILED) == ()
        assert result.ok  # a skip is not a failure

    def test_started_at_is_wall_clock_time(self):
        before = time.time()
        result = run(Pipeline().with_stage("a", noop).build())

        assert before <= result.started_at <= time.time()

    def test_status_compares_equal_to_its_string(self):
        result = run(Pipeline().with_stage("a", noop).build())

        assert result.status == "completed"
        assert result["a"].status == "completed"


class TestEngineSkips:
    def test_a_stage_returning_skip_is_skipped_with_its_reason(self):
        async def skip(ctx):
            return StageOutput.skip("cache is fresh")

        result = run(Pipeline().with_stage("refresh", skip).build())

        assert result["refresh"].status is StageStatus.SKIPPED
        assert result["refresh"].reason == "cache is fresh"
        assert result["refresh"].attempts == 1

    def test_dependents_of_a_skipped_stage_are_skipped_naming_it(self):
        calls: list[str] = []

        async def skip(ctx):
            return StageOutput.skip("cache is fresh")

        async def record(ctx):
            calls.append(ctx.stage)

        graph = (
            Pipeline()
            .with_stage("refresh", skip)
            .with_stage("parse", record, dependencies=("refresh",))
            .with_stage("index", record, dependencies=("parse",))
            .with_stage("other", record)
            .build()
        )

        result = run(graph)

        assert calls == ["other"]
        assert result["parse"].status is StageStatus.SKIPPED
        assert result["parse"].reason == "dependency 'refresh' was skipped"
        assert result["index"].status is StageStatus.SKIPPED
        assert result["index"].reason == "dependency 'parse' was skipped"
        assert result["parse"].attempts == 0
        assert result["parse"].started is None
        assert result["parse"].duration is None
        assert result.status is RunStatus.COMPLETED

    def test_a_stage_waits_for_all_dependencies_before_being_skipped(self):
        async def skip(ctx):
            return StageOutput.skip("no")

        graph = (
            Pipeline()
            .with_stage("skips", skip)
            .with_stage("slow", sleeper(5))
            .with_stage("join", noop, dependencies=("skips", "slow"))
            .build()
        )

        result = run(graph)

        assert result["join"].status is StageStatus.SKIPPED
        assert result["slow"].ok

    def test_an_optional_dependency_that_skips_lets_the_dependent_run(self):
        seen: dict[str, Any] = {}

        async def skip(ctx):
            return StageOutput.skip("no cache")

        async def report(ctx):
            seen["inputs"] = dict(ctx.inputs)
            seen["in"] = "cache" in ctx.inputs
            seen["default"] = ctx.inputs.get_from("cache", "hits", default=0)
            seen["fetch"] = ctx.inputs.get_from("fetch", "pages")
            return {"ok": True}

        graph = (
            Pipeline()
            .with_stage("cache", skip)
            .with_stage("fetch", sleeper(1, pages=3))
            .with_stage("report", report, dependencies=("cache", "fetch"), optional=("cache",))
            .build()
        )

        result = run(graph)

        assert result["report"].ok
        assert seen == {"inputs": {"fetch": {"pages": 3}}, "in": False, "default": 0, "fetch": 3}

    def test_an_optional_dependency_that_fails_lets_the_dependent_run(self):
        async def fails(ctx):
            raise RuntimeError("down")

        async def report(ctx):
            return {"n": len(ctx.inputs)}

        graph = (
            Pipeline()
            .with_stage("flaky", fails)
            .with_stage("report", report, dependencies=("flaky",), optional=("flaky",))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result["report"].data == {"n": 0}
        assert result.status is RunStatus.FAILED

    def test_an_optional_edge_does_not_shield_from_a_required_one(self):
        async def skip(ctx):
            return StageOutput.skip("no")

        graph = (
            Pipeline()
            .with_stage("opt", noop)
            .with_stage("req", skip)
            .with_stage("c", noop, dependencies=("opt", "req"), optional=("opt",))
            .build()
        )

        result = run(graph)

        assert result["c"].status is StageStatus.SKIPPED
        assert result["c"].reason == "dependency 'req' was skipped"

    def test_a_skip_cascades_through_a_diamond_once_per_stage(self):
        async def skip(ctx):
            return StageOutput.skip("no")

        graph = (
            Pipeline()
            .with_stage("a", skip)
            .with_stage("b", noop, dependencies=("a",))
            .with_stage("c", noop, dependencies=("a",))
            .with_stage("d", noop, dependencies=("b", "c"))
            .build()
        )

        result = run(graph)

        assert result.with_status(StageStatus.SKIPPED) == ("a", "b", "c", "d")


class _CountingWraps(BaseInterceptor):
    def __init__(self) -> None:
        super().__init__()
        self.wraps = 0

    def wrap(self, spec, call):
        self.wraps += 1
        return call


class TestEngineReuse:
    def _graph(self) -> StageGraph:
        async def echo(ctx):
            await asyncio.sleep(ctx.data["delay"])
            return {"value": ctx.data["value"], "run_id": ctx.run_id}

        async def double(ctx):
            return {"value": ctx.inputs.get_from("echo", "value") * 2}

        return (
            Pipeline()
            .with_stage("echo", echo)
            .with_stage("double", double, dependencies=("echo",))
            .build()
        )

    def test_running_a_graph_twice_gives_independent_results(self):
        graph, engine = self._graph(), Engine()

        first = run(graph, engine, data={"value": 1, "delay": 1})
        second = run(graph, engine, data={"value": 5, "delay": 1})

        assert first["double"].data == {"value": 2}
        assert second["double"].data == {"value": 10}
        assert first.run_id != second.run_id

    def test_concurrent_runs_on_one_engine_do_not_mix(self):
        graph, engine = self._graph(), Engine()

        async def main():
            return await asyncio.gather(
                *(engine.run(graph, data={"value": v, "delay": 10 - v}) for v in range(10))
            )

        results = run_virtual(main())

        assert [r["double"].data["value"] for r in results] == [2 * v for v in range(10)]
        assert all(r["echo"].data["run_id"] == r.run_id for r in results)
        assert len({r.run_id for r in results}) == 10

    def test_the_interceptor_chain_is_composed_once_per_graph_and_engine(self):
        counter = _CountingWraps()
        engine = Engine(interceptors=[counter])
        graph = self._graph()

        for value in range(5):
            run(graph, engine, data={"value": value, "delay": 0})
        assert counter.wraps == 2  # once per stage

        run(self._graph(), engine, data={"value": 1, "delay": 0})
        assert counter.wraps == 4  # a new graph is composed anew

        run(graph, Engine(interceptors=[counter]), data={"value": 1, "delay": 0})
        assert counter.wraps == 6  # and so is a new engine

    def test_calls_returns_the_same_tuple_for_the_same_graph(self):
        engine = Engine(interceptors=[_CountingWraps()])
        graph = self._graph()

        assert engine.calls(graph) is engine.calls(graph)
        assert len(engine.calls(graph)) == len(graph)

    def test_engine_exposes_its_configuration(self):
        interceptor = BaseInterceptor(name="x")
        engine = Engine(interceptors=[interceptor], max_parallel=4, fail_fast=False)

        # the built-in resilience and budget interceptors are always in the chain, outermost first
        assert [ic.name for ic in engine.interceptors] == [
            "retry",
            "circuit_breaker",
            "budget",
            "timeout",
            "x",
        ]
        assert engine.interceptors[-1] is interceptor
        assert engine.max_parallel == 4
        assert engine.fail_fast is False
        assert engine.sink is None
        assert repr(engine) == (
            "<Engine interceptors=[retry, circuit_breaker, budget, timeout, x] max_parallel=4>"
        )


class TestWideFanOuts:
    """Thousands of stages ready at once (more than the engine creates tasks for at once)."""

    WIDTH = 2000

    def fan_out(self, stage: Any) -> Any:
        pipeline = Pipeline("wide").with_stage("root", noop)
        for k in range(self.WIDTH):
            pipeline = pipeline.with_stage(f"s{k}", stage, dependencies=("root",))
        return pipeline.build()

    def test_every_ready_stage_runs_at_once_without_a_limit(self):
        running = peak = 0

        async def wait(ctx):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(1)
            running -= 1

        result = run(self.fan_out(wait))

        assert result.ok
        assert peak == self.WIDTH
        assert result.duration == pytest.approx(1.0)
        assert {r.started for r in result if r.stage != "root"} == {0.0}

    def test_stages_begin_in_the_order_they_became_ready(self):
        order: list[str] = []

        async def note(ctx):
            order.append(ctx.stage)

        run(self.fan_out(note))

        assert order == [f"s{k}" for k in range(self.WIDTH)]

    def test_a_failure_stops_the_stages_still_waiting_for_a_task(self):
        async def first_fails(ctx):
            if ctx.stage == "s0":
                raise ValueError("boom")
            await asyncio.sleep(1)

        result = run(self.fan_out(first_fails))

        assert result.status == "failed"
        statuses = {r.status for r in result if r.stage not in ("root", "s0")}
        assert statuses <= {"cancelled", "skipped"}
        assert "skipped" in statuses  # some never got a task: not started
        assert result.with_status(StageStatus.COMPLETED) == ("root",)


class TestWithStatus:
    def test_a_status_may_be_given_as_its_string(self):
        result = run(Pipeline().with_stage("a", noop).build())

        assert result.with_status("completed") == result.with_status(StageStatus.COMPLETED)
        assert result.with_status("completed") == ("a",)

    def test_an_unknown_status_is_refused_naming_it(self):
        result = run(Pipeline().with_stage("a", noop).build())

        with pytest.raises(ConfigurationError, match="'done'"):
            result.with_status("done")
