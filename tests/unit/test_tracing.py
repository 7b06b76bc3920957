"""TracingInterceptor on the real OpenTelemetry SDK: spans, parents, attributes, events."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import StatusCode

from stageflow import (
    ConfigurationError,
    Engine,
    Pipeline,
    RunStatus,
    StageContext,
    StageGraph,
    StageOutput,
    StageStatus,
    StageTimeoutError,
    TracingInterceptor,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import run_virtual

from ._helpers import ExplodingRun, failing, noop, sleeper
from ._otel import Traces, events, parent_id, span_id, trace_id


class Flap(Exception):
    """An error of this module: its fully-qualified name is not its bare name."""


def traced_engine(traces: Traces, **options: Any) -> tuple[Engine, TracingInterceptor]:
    tracing = TracingInterceptor(tracer_provider=traces.provider)
    return Engine(interceptors=[tracing], **options), tracing


def run_traced(graph: StageGraph, traces: Traces, **options: Any) -> Any:
    engine, _ = traced_engine(traces, **options)
    return run_virtual(engine.run(graph, run_id="r1"))


def diamond(
    a: Callable[..., Any] = noop,
    b: Callable[..., Any] = noop,
    c: Callable[..., Any] = noop,
    d: Callable[..., Any] = noop,
) -> StageGraph:
    return (
        Pipeline("diamond")
        .with_stage("a", a)
        .with_stage("b", b, "enrich", dependencies=["a"])
        .with_stage("c", c, dependencies=["a"])
        .with_stage("d", d, "agent", dependencies=["b", "c"])
        .build()
    )


def stage_attributes(stage: str, kind: str = "work", **ended: Any) -> dict[str, Any]:
    return {
        "stageflow.run_id": "r1",
        "stageflow.pipeline": ended.pop("pipeline", "diamond"),
        "stageflow.stage": stage,
        "stageflow.stage.kind": kind,
        **{f"stageflow.{k}": v for k, v in ended.items()},
    }


class TestSpanTree:
    def test_one_run_span_with_a_child_span_per_stage_all_in_one_trace(self) -> None:
        traces = Traces()

        result = run_traced(diamond(), traces)

        assert result.ok
        assert traces.names() == ["run diamond", "stage a", "stage b", "stage c", "stage d"]
        run = traces.run("diamond")
        assert run.parent is None
        stages = traces.stage_spans()
        assert {n: parent_id(s) for n, s in stages.items()} == dict.fromkeys("abcd", span_id(run))
        assert {trace_id(s) for s in traces.spans} == {trace_id(run)}

    def test_a_run_started_inside_a_span_is_that_spans_child(self) -> None:
        traces = Traces()
        engine, _ = traced_engine(traces)
        user = traces.provider.get_tracer("user")

        async def main() -> Any:
            with user.start_as_current_span("request") as request:
                await engine.run(diamond(), run_id="r1")
            return request

        request = run_virtual(main())

        run = traces.run("diamond")
        assert parent_id(run) == request.get_span_context().span_id
        assert {trace_id(s) for s in traces.spans} == {request.get_span_context().trace_id}
        assert {parent_id(s) for s in traces.stage_spans().values()} == {span_id(run)}

    def test_spans_made_inside_async_and_sync_stages_are_children_of_the_stage_span(
        self,
    ) -> None:
        traces = Traces()
        user = traces.provider.get_tracer("user")

        async def in_async(ctx: StageContext) -> dict[str, int]:
            with user.start_as_current_span("inside-async"):
                await asyncio.sleep(1)
            return {"x": 1}

        in_main_thread: list[bool] = []

        def in_thread(ctx: StageContext) -> dict[str, int]:
            in_main_thread.append(threading.current_thread() is threading.main_thread())
            with user.start_as_current_span("inside-sync"):
                return {"y": 2}

        run_traced(diamond(b=in_async, c=in_thread), traces)

        assert in_main_thread == [False]  # the sync stage did run in a worker thread

        assert parent_id(traces.one("inside-async")) == span_id(traces.stage("b"))
        assert parent_id(traces.one("inside-sync")) == span_id(traces.stage("c"))
        assert trace_id(traces.one("inside-sync")) == trace_id(traces.run("diamond"))

    def test_stage_spans_start_and_end_in_the_order_the_stages_ran(self) -> None:
        traces = Traces()

        run_traced(diamond(a=sleeper(1), b=sleeper(2), c=sleeper(1), d=sleeper(1)), traces)

        spans = {**traces.stage_spans(), "run": traces.run("diamond")}
        start = {n: s.start_time or 0 for n, s in spans.items()}
        end = {n: s.end_time or 0 for n, s in spans.items()}
        assert start["run"] <= start["a"] < end["a"] <= min(start["b"], start["c"])
        assert max(end["b"], end["c"]) <= start["d"] < end["d"] <= end["run"]


class TestAttributes:
    def test_stage_spans_carry_the_run_the_stage_its_kind_attempts_and_outcome(self) -> None:
        traces = Traces()

        run_traced(diamond(), traces)

        spans = traces.stage_spans()
        kinds = {"a": "work", "b": "enrich", "c": "work", "d": "agent"}
        for name, kind in kinds.items():
            assert dict(spans[name].attributes or {}) == stage_attributes(
                name, kind, attempts=1, outcome="completed"
            )
            assert spans[name].status.status_code is StatusCode.UNSET
            assert list(spans[name].events) == []

    def test_the_run_span_carries_the_run_its_size_whether_resumed_and_its_outcome(
        self,
    ) -> None:
        traces = Traces()

        run_traced(diamond(), traces)

        run = traces.run("diamond")
        assert dict(run.attributes or {}) == {
            "stageflow.run_id": "r1",
            "stageflow.pipeline": "diamond",
            "stageflow.run.stages": 4,
            "stageflow.run.resumed": False,
            "stageflow.outcome": "completed",
        }
        assert run.status.status_code is StatusCode.UNSET
        assert list(run.events) == []

    def test_the_spans_come_from_the_stageflow_tracer(self) -> None:
        traces = Traces()

        run_traced(diamond(), traces)

        scopes = {s.instrumentation_scope.name for s in traces.spans}  # type: ignore[union-attr]
        assert scopes == {"stageflow"}


class TestFailures:
    def test_a_raised_error_is_recorded_and_sets_the_status_to_error(self) -> None:
        traces = Traces()

        result = run_traced(diamond(d=failing(message="boom")), traces)

        assert result.status is RunStatus.FAILED
        span = traces.stage("d")
        assert dict(span.attributes or {}) == stage_attributes(
            "d", "agent", attempts=1, outcome="failed"
        )
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: boom"
        (exception,) = events(span, "exception")
        assert exception["exception.type"] == "ValueError"
        assert exception["exception.message"] == "boom"
        assert "raise ValueError(message)" in exception["exception.stacktrace"]
        run = traces.run("diamond")
        assert run.attributes["stageflow.outcome"] == "failed"  # type: ignore[index]
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "ValueError: boom"

    def test_a_stage_output_fail_is_a_failure_with_its_reason_and_no_exception(self) -> None:
        traces = Traces()

        async def refuse(ctx: StageContext) -> StageOutput:
            return StageOutput.fail("why")

        result = run_traced(diamond(c=refuse), traces, fail_fast=False)

        assert result["c"].status is StageStatus.FAILED
        span = traces.stage("c")
        assert dict(span.attributes or {}) == stage_attributes(
            "c", attempts=1, outcome="failed", reason="why"
        )
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "why"
        assert events(span, "exception") == []
        assert traces.run("diamond").attributes["stageflow.outcome"] == "failed"  # type: ignore[index]

    @pytest.mark.parametrize(
        ("returned", "outcome"),
        [
            (None, "completed"),
            ({"x": 1}, "completed"),
            (MappingProxyType({"x": 1}), "completed"),
            (StageOutput.ok(x=1), "completed"),
            (42, "failed"),
            (["x"], "failed"),
        ],
    )
    def test_whatever_a_stage_returns_its_span_tells_the_outcome_the_run_gives_it(
        self, returned: object, outcome: str
    ) -> None:
        traces = Traces()

        async def stage(ctx: StageContext) -> Any:
            return returned

        result = run_traced(Pipeline("raw").with_stage("s", stage).build(), traces)

        assert result["s"].status.value == outcome
        span = traces.stage("s")
        assert span.attributes["stageflow.outcome"] == outcome  # type: ignore[index]
        failed = outcome == "failed"
        assert (span.status.status_code is StatusCode.ERROR) is failed
        if failed:
            reason = f"returned {type(returned).__name__}, which is no stage output"
            assert span.attributes["stageflow.reason"] == reason  # type: ignore[index]
            assert span.status.description == reason
        else:
            assert "stageflow.reason" not in (span.attributes or {})

    def test_a_retried_stage_has_one_span_counting_its_attempts_and_a_retry_event(
        self,
    ) -> None:
        traces = Traces()
        calls: list[int] = []

        async def flaky(ctx: StageContext) -> dict[str, int]:
            calls.append(ctx.attempt)
            if ctx.attempt == 1:
                raise ConnectionError("down")
            return {"ok": 1}

        graph = Pipeline("retry").with_stage("s", flaky, retry=3).build()

        result = run_traced(graph, traces)

        assert result.ok
        assert calls == [1, 2]
        span = traces.stage("s")
        assert dict(span.attributes or {}) == stage_attributes(
            "s", pipeline="retry", attempts=2, outcome="completed"
        )
        assert events(span, "stageflow.stage.retry") == [
            {
                "stageflow.attempt": 2,
                "stageflow.retry.delay": pytest.approx(0.1),
                "exception.type": "ConnectionError",
                "exception.message": "down",
            }
        ]
        assert events(span, "exception") == []
        assert span.status.status_code is StatusCode.UNSET

    def test_the_retry_event_names_the_error_type_as_the_exception_event_does(self) -> None:
        traces = Traces()

        async def flap(ctx: StageContext) -> None:
            raise Flap(f"attempt {ctx.attempt}")

        run_traced(Pipeline("retry").with_stage("s", flap, retry=2).build(), traces)

        span = traces.stage("s")
        (retry,) = events(span, "stageflow.stage.retry")
        (exception,) = events(span, "exception")
        assert exception["exception.type"] == f"{__name__}.Flap"
        assert retry["exception.type"] == exception["exception.type"]

    def test_a_stage_that_skips_itself_has_its_reason_and_no_error(self) -> None:
        traces = Traces()

        async def skip(ctx: StageContext) -> StageOutput:
            return StageOutput.skip("r")

        run_traced(diamond(b=skip), traces)

        span = traces.stage("b")
        assert dict(span.attributes or {}) == stage_attributes(
            "b", "enrich", attempts=1, outcome="skipped", reason="r"
        )
        assert span.status.status_code is StatusCode.UNSET

    def test_a_stage_skipped_by_a_failed_dependency_is_an_event_of_the_run_span(self) -> None:
        traces = Traces()

        result = run_traced(diamond(b=failing()), traces, fail_fast=False)

        assert result["d"].status is StageStatus.SKIPPED
        assert result["d"].attempts == 0
        assert traces.names() == ["run diamond", "stage a", "stage b", "stage c"]
        assert events(traces.run("diamond"), "stageflow.stage.skipped") == [
            {"stageflow.stage": "d", "stageflow.reason": result["d"].reason}
        ]
        assert "b" in (result["d"].reason or "")

    def test_a_timed_out_stage_fails_with_the_timeout_error_recorded(self) -> None:
        traces = Traces()
        graph = Pipeline("slow").with_stage("s", sleeper(10), timeout=2).build()

        result = run_traced(graph, traces)

        assert isinstance(result["s"].error, StageTimeoutError)
        span = traces.stage("s")
        assert span.attributes["stageflow.outcome"] == "failed"  # type: ignore[index]
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == f"StageTimeoutError: {result['s'].error}"
        (exception,) = events(span, "exception")
        assert exception["exception.type"] == "stageflow.errors.StageTimeoutError"
        assert "timed out after 2s" in exception["exception.message"]

    def test_a_stage_cancelled_by_fail_fast_is_cancelled_not_an_error(self) -> None:
        traces = Traces()

        result = run_traced(diamond(b=failing(1), c=sleeper(5)), traces)

        assert result["c"].status is StageStatus.CANCELLED
        span = traces.stage("c")
        assert dict(span.attributes or {}) == stage_attributes("c", attempts=1, outcome="cancelled")
        assert span.status.status_code is StatusCode.UNSET
        assert events(span, "exception") == []
        assert parent_id(span) == span_id(traces.run("diamond"))
        # d never started: no span, an event on the run span instead
        assert "stage d" not in traces.names()
        skipped = events(traces.run("diamond"), "stageflow.stage.skipped")
        assert [e["stageflow.stage"] for e in skipped] == ["d"]

    def test_a_run_whose_task_is_cancelled_ends_its_spans_as_cancelled(self) -> None:
        traces = Traces()
        engine, _ = traced_engine(traces)

        async def main() -> None:
            task = asyncio.create_task(engine.run(diamond(a=sleeper(10)), run_id="r1"))
            await asyncio.sleep(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run_virtual(main())

        assert traces.names() == ["run diamond", "stage a"]
        assert traces.stage("a").attributes["stageflow.outcome"] == "cancelled"  # type: ignore[index]
        run = traces.run("diamond")
        assert run.attributes["stageflow.outcome"] == "cancelled"  # type: ignore[index]
        assert run.status.status_code is StatusCode.UNSET


class TestRunEnds:
    def test_a_run_that_times_out_is_cancelled_and_its_span_says_why(self) -> None:
        traces = Traces()
        engine, _ = traced_engine(traces)

        result = run_virtual(engine.run(diamond(a=sleeper(10)), run_id="r1", timeout=2))

        assert result.status is RunStatus.CANCELLED
        assert traces.stage("a").attributes["stageflow.outcome"] == "cancelled"  # type: ignore[index]
        run = traces.run("diamond")
        assert run.attributes["stageflow.outcome"] == "cancelled"  # type: ignore[index]
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == f"RunTimeoutError: {result.error}"
        skipped = events(run, "stageflow.stage.skipped")
        assert [e["stageflow.stage"] for e in skipped] == ["b", "c", "d"]

    def test_a_run_that_raises_records_the_error_on_the_run_span(self) -> None:
        traces = Traces()
        tracing = TracingInterceptor(tracer_provider=traces.provider)
        engine = Engine(interceptors=[tracing, ExplodingRun()])

        with pytest.raises(RuntimeError, match="store down"):
            run_virtual(engine.run(diamond(), run_id="r1"))

        assert traces.names() == ["run diamond"]
        run = traces.run("diamond")
        assert run.attributes["stageflow.outcome"] == "failed"  # type: ignore[index]
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "RuntimeError: store down"
        (exception,) = events(run, "exception")
        assert exception["exception.message"] == "store down"
        assert tracing.errors == 0


class TestResume:
    def test_restored_stages_say_so_and_the_run_span_says_it_was_resumed(self) -> None:
        traces = Traces()
        store = MemoryStore()
        calls = {"b": 0}

        async def b(ctx: StageContext) -> dict[str, int]:
            calls["b"] += 1
            if calls["b"] == 1:
                raise ConnectionError("down")
            return {"b": 1}

        graph = (
            Pipeline("durable")
            .with_stage("a", sleeper(1, a=1))
            .with_stage("b", b, dependencies=["a"])
        )
        built = graph.build()
        tracing = TracingInterceptor(tracer_provider=traces.provider)

        async def main() -> Any:
            first = await Engine(store=store, interceptors=[tracing]).run(built, run_id="r1")
            assert first.status is RunStatus.FAILED
            traces.clear()
            return await Engine(store=store, interceptors=[tracing]).resume("r1", built)

        result = run_virtual(main())

        assert result.ok
        assert calls == {"b": 2}
        a, b_span, run = traces.stage("a"), traces.stage("b"), traces.run("durable")
        assert dict(a.attributes or {}) == stage_attributes(
            "a",
            pipeline="durable",
            attempts=result["a"].attempts,
            outcome="restored",
        )
        assert b_span.attributes["stageflow.outcome"] == "completed"  # type: ignore[index]
        assert run.attributes["stageflow.run.resumed"] is True  # type: ignore[index]
        assert run.attributes["stageflow.run_id"] == "r1"  # type: ignore[index]
        assert run.attributes["stageflow.outcome"] == "completed"  # type: ignore[index]
        assert {parent_id(a), parent_id(b_span)} == {span_id(run)}


class Raising(SpanProcessor):
    """A span processor that raises when a span starts or ends."""

    def __init__(self, when: str) -> None:
        self.when = when
        self.calls = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.when == "start":
            self.calls += 1
            raise RuntimeError("processor down")

    def on_end(self, span: Any) -> None:
        if self.when == "end":
            self.calls += 1
            raise RuntimeError("processor down")


def outcome_of(result: Any) -> tuple[Any, ...]:
    return (
        result.status,
        {r.stage: (r.status, r.attempts, dict(r.data), r.reason) for r in result},
    )


class TestTelemetryNeverBreaksARun:
    @pytest.mark.parametrize("when", ["start", "end"])
    def test_a_span_processor_that_raises_leaves_the_run_as_it_would_have_been(
        self, when: str
    ) -> None:
        def graph() -> StageGraph:
            return diamond(a=sleeper(1, x=1), b=sleeper(1, y=2), c=failing(1), d=sleeper(1))

        plain = run_virtual(Engine(fail_fast=False).run(graph(), run_id="r1"))
        processor = Raising(when)
        traces = Traces(processor)
        engine, tracing = traced_engine(traces, fail_fast=False)

        result = run_virtual(engine.run(graph(), run_id="r1"))

        assert outcome_of(result) == outcome_of(plain)
        assert result["c"].status is StageStatus.FAILED  # the failing path was taken too
        assert processor.calls == 4  # the run span and the three stages that ran
        assert tracing.errors == 4
        # the SDK does not shield processors from each other: nothing got exported
        assert traces.spans == ()

    def test_the_first_telemetry_error_is_logged_once(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        traces = Traces(Raising("end"))
        engine, tracing = traced_engine(traces)

        with caplog.at_level("ERROR", logger="stageflow"):
            result = run_virtual(engine.run(diamond(), run_id="r1"))

        assert result.ok
        assert tracing.errors == 5
        mine = [r for r in caplog.records if r.name == "stageflow"]
        assert len(mine) == 1
        assert "tracing failed while ending the span of stage 'a'" in mine[0].getMessage()
        assert mine[0].exc_info is not None
        assert str(mine[0].exc_info[1]) == "processor down"

    def test_a_tracer_whose_start_span_raises_still_runs_every_stage(self) -> None:
        class Broken:
            def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
                return self

            def start_span(self, *args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("no spans today")

        tracing = TracingInterceptor(tracer_provider=Broken())  # type: ignore[arg-type]

        result = run_virtual(
            Engine(interceptors=[tracing]).run(diamond(a=sleeper(1, x=1)), run_id="r1")
        )

        assert result.ok
        assert result["a"].data == {"x": 1}
        assert tracing.errors == 5


class TestConfiguration:
    @pytest.mark.parametrize("bad", [42, "provider", object()])
    def test_a_tracer_provider_that_is_no_provider_is_refused_naming_the_argument(
        self, bad: object
    ) -> None:
        with pytest.raises(ConfigurationError, match="tracer_provider") as info:
            TracingInterceptor(tracer_provider=bad)  # type: ignore[arg-type]

        assert info.value.field == "tracer_provider"
        assert info.value.value is bad

    def test_it_sits_outermost_by_default(self) -> None:
        traces = Traces()
        engine, tracing = traced_engine(traces)

        assert tracing.priority == 100
        assert engine.interceptors[0] is tracing

    def test_without_a_provider_or_a_global_sdk_it_wraps_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # No test sets the global tracer provider, so the API's proxy is still in place.
        monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), (
            "some test set the global tracer provider: tests must pass providers explicitly"
        )
        graph = diamond()
        tracing = TracingInterceptor()

        async def call(ctx: StageContext) -> None:
            return None

        async def run_call(run: Any) -> Any:
            return None

        assert tracing.wrap(graph["a"], call) is call
        assert tracing.wrap_run(graph, run_call) is run_call
        engine = Engine(interceptors=[tracing])
        assert engine.calls(graph)[0] is graph["a"].call
        assert run_virtual(engine.run(graph)).ok
        assert tracing.errors == 0
