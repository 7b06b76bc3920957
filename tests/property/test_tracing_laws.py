"""Laws of tracing: for any graph and any mix of outcomes, the spans mirror the RunResult.

Each example runs a generated plan under :class:`~stageflow.TracingInterceptor` with a
fresh real SDK provider exporting to memory (the global provider is never set).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from stageflow import (
    BaseInterceptor,
    Engine,
    RunResult,
    StageContext,
    StageOutput,
    StageStatus,
    TracingInterceptor,
)
from stageflow.testing import run_virtual

from ._harness import HANG_GUARD, MAX_PARALLEL, Boom, Plan, output_of, plans

# Half of the profile's examples: 50 by default, more in the thorough profile.
LAWS = settings(max_examples=max(1, settings.default.max_examples // 2))
MIXED = plans(behaviours=st.sampled_from(["ok", "ok", "raise", "skip"]))


@dataclasses.dataclass
class TracedRun:
    result: RunResult
    run: ReadableSpan
    stages: dict[str, ReadableSpan]
    spans: tuple[ReadableSpan, ...]
    parent: Any  # the span the run was started in, or None


def stage_of(plan: Plan, name: str) -> Any:
    duration, behaviour = plan.durations[name], plan.behaviours[name]

    async def stage(ctx: StageContext) -> Any:
        await asyncio.sleep(duration)
        if behaviour == "raise":
            raise Boom(name)
        if behaviour == "skip":
            return StageOutput.skip(f"{name} skipped itself")
        return output_of(name, {dep: ctx.inputs[dep] for dep in ctx.inputs})

    return stage


class Looking(BaseInterceptor):
    """A user interceptor that looks at outputs: tracing then sees StageOutputs, not raw
    results (it is not ``transparent``)."""

    async def after(self, ctx: StageContext, output: StageOutput) -> None:
        return None


def run_traced(
    plan: Plan,
    *,
    fail_fast: bool,
    max_parallel: int | None,
    in_span: bool = False,
    looking: bool = False,
) -> TracedRun:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = TracingInterceptor(tracer_provider=provider)
    interceptors = [tracing, Looking()] if looking else [tracing]
    engine = Engine(interceptors=interceptors, fail_fast=fail_fast, max_parallel=max_parallel)
    graph = plan.shape.pipeline(lambda n: stage_of(plan, n), per_stage=True).build()

    async def main() -> tuple[RunResult, Any]:
        async with asyncio.timeout(HANG_GUARD):
            if not in_span:
                return await engine.run(graph), None
            with provider.get_tracer("caller").start_as_current_span("caller") as parent:
                return await engine.run(graph), parent

    result, parent = run_virtual(main)
    assert tracing.errors == 0
    spans = exporter.get_finished_spans()
    runs = [s for s in spans if s.name.startswith("run ")]
    assert len(runs) == 1, [s.name for s in spans]
    stage_spans = [s for s in spans if s.name.startswith("stage ")]
    by_name = {s.name.removeprefix("stage "): s for s in stage_spans}
    assert len(by_name) == len(stage_spans), "a stage has two spans"
    return TracedRun(result, runs[0], by_name, spans, parent)


def executed(result: RunResult) -> set[str]:
    return {r.stage for r in result if r.attempts > 0}


class TestSpanTree:
    @LAWS
    @given(plan=MIXED, fail_fast=st.booleans(), max_parallel=MAX_PARALLEL, in_span=st.booleans())
    def test_one_span_per_executed_stage_each_a_child_of_the_run_span_in_one_trace(
        self, plan: Plan, fail_fast: bool, max_parallel: int | None, in_span: bool
    ) -> None:
        traced = run_traced(plan, fail_fast=fail_fast, max_parallel=max_parallel, in_span=in_span)

        assert set(traced.stages) == executed(traced.result)
        run = traced.run
        assert run.context is not None
        if traced.parent is None:
            assert run.parent is None
        else:
            assert run.parent is not None
            assert run.parent.span_id == traced.parent.get_span_context().span_id
        for span in traced.stages.values():
            assert span.parent is not None
            assert span.parent.span_id == run.context.span_id
        assert {s.context.trace_id for s in traced.spans if s.context} == {run.context.trace_id}
        expected = 1 + len(traced.stages) + (traced.parent is not None)
        assert len(traced.spans) == expected


class TestOutcomes:
    @LAWS
    @given(plan=MIXED, fail_fast=st.booleans(), max_parallel=MAX_PARALLEL, looking=st.booleans())
    def test_each_stage_span_tells_the_stages_status_and_attempts(
        self, plan: Plan, fail_fast: bool, max_parallel: int | None, looking: bool
    ) -> None:
        traced = run_traced(plan, fail_fast=fail_fast, max_parallel=max_parallel, looking=looking)

        for name, span in traced.stages.items():
            stage = traced.result[name]
            attributes = dict(span.attributes or {})
            assert attributes["stageflow.outcome"] == stage.status.value, name
            assert attributes["stageflow.attempts"] == stage.attempts, name
            assert attributes["stageflow.stage"] == name
            failed = stage.status is StageStatus.FAILED
            assert (span.status.status_code is StatusCode.ERROR) == failed, name
            exceptions = [e for e in span.events if e.name == "exception"]
            assert len(exceptions) == failed, name
            if stage.status is StageStatus.SKIPPED:
                assert attributes["stageflow.reason"] == stage.reason
            else:
                assert "stageflow.reason" not in attributes, name

    @LAWS
    @given(plan=MIXED, fail_fast=st.booleans(), max_parallel=MAX_PARALLEL)
    def test_the_run_span_tells_the_run_status_and_the_stages_that_never_ran(
        self, plan: Plan, fail_fast: bool, max_parallel: int | None
    ) -> None:
        traced = run_traced(plan, fail_fast=fail_fast, max_parallel=max_parallel)

        result, run = traced.result, traced.run
        attributes = dict(run.attributes or {})
        assert attributes["stageflow.outcome"] == result.status.value
        assert attributes["stageflow.run_id"] == result.run_id
        assert attributes["stageflow.run.stages"] == len(plan.names)
        assert (run.status.status_code is StatusCode.ERROR) == (not result.ok)
        skipped = [dict(e.attributes or {}) for e in run.events]
        assert {e["stageflow.stage"] for e in skipped} == {
            r.stage for r in result if r.attempts == 0
        }
        assert len(skipped) == len(result) - len(executed(result))
        for event in skipped:
            stage = result[event["stageflow.stage"]]
            assert stage.status is StageStatus.SKIPPED
            assert event["stageflow.reason"] == stage.reason
