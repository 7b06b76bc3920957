"""Telemetry of dynamic stages on the real OpenTelemetry SDK: the spans, log records and
metrics of map items (``score[doc-a]``) and of the stages of subgraphs and loop iterations
(``etl.fetch``, ``refine[2].draft``)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from stageflow import (
    Engine,
    JsonFormatter,
    LoggingInterceptor,
    MetricsInterceptor,
    Pipeline,
    RunResult,
    RunStatus,
    StageContext,
    StageGraph,
    TracingInterceptor,
)
from stageflow._services import RunServices
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import Capture
from ._otel import Metrics, Traces, events, parent_id, span_id, trace_id, values

DOCS = ("a", "b", "c")


async def split(ctx: StageContext) -> dict[str, Any]:
    return {"docs": ctx.data.get("docs", list(DOCS))}


def scorer(fail: tuple[str, ...] = (), calls: dict[str, int] | None = None) -> Any:
    """Items take 1 s, 2 s, 3 s ... (virtual); those in ``fail`` raise, on their first call
    only when ``calls`` counts them (a resume then completes them)."""

    async def score(ctx: StageContext) -> dict[str, Any]:
        if calls is not None:
            calls[ctx.stage] = calls.get(ctx.stage, 0) + 1
        await asyncio.sleep(ctx.item_index + 1)
        if ctx.item in fail and (calls is None or calls[ctx.stage] == 1):
            raise ValueError(f"bad {ctx.item}")
        return {"s": ctx.item}

    return score


def mapped(on_item_error: str = "fail", fail: tuple[str, ...] = (), **options: Any) -> StageGraph:
    """split -> score, a map over split's docs keyed doc-<item>."""
    calls = options.pop("calls", None)
    return (
        Pipeline("docs")
        .with_stage("split", split)
        .with_map(
            "score",
            scorer(fail, calls),
            over="split.docs",
            dependencies=("split",),
            key=lambda doc: f"doc-{doc}",
            on_item_error=on_item_error,
            **options,
        )
        .build()
    )


async def fetch(ctx: StageContext) -> dict[str, int]:
    await asyncio.sleep(1)
    return {"rows": 3}


def drafter(calls: dict[str, int] | None = None, fail_in: int = 0) -> Any:
    async def draft(ctx: StageContext) -> dict[str, int]:
        if calls is not None:
            calls[ctx.stage] = calls.get(ctx.stage, 0) + 1
        loop = ctx.loop
        assert loop is not None
        await asyncio.sleep(1)
        if loop.iteration == fail_in and (calls is None or calls[ctx.stage] == 1):
            raise ValueError(f"iteration {loop.iteration}")
        return {"n": loop.iteration}

    return draft


async def critique(ctx: StageContext) -> dict[str, int]:
    await asyncio.sleep(1)
    return {"n": ctx.inputs["draft"]["n"]}


def nested(calls: dict[str, int] | None = None, fail_in: int = 0) -> StageGraph:
    """etl (a subgraph: fetch -> load), refine (a loop of three iterations: draft ->
    critique) and outer (a subgraph holding a loop, inner, of two iterations of step)."""
    etl = (
        Pipeline("etl").with_stage("fetch", fetch).with_stage("load", fetch, dependencies=["fetch"])
    )
    body = (
        Pipeline("body")
        .with_stage("draft", drafter(calls, fail_in))
        .with_stage("critique", critique, dependencies=["draft"])
    )
    step = Pipeline("step").with_stage("step", drafter())
    outer = Pipeline("outer").with_loop(
        "inner", step, until=lambda out: out["n"] >= 2, max_iterations=3
    )
    return (
        Pipeline("nested")
        .with_subgraph("etl", etl)
        .with_loop("refine", body, until=lambda out: out["n"] >= 3, max_iterations=5)
        .with_subgraph("outer", outer)
        .build()
    )


NESTED_STAGES = {
    "etl", "refine", "outer", "etl.fetch", "etl.load",
    *(f"refine[{i}].{s}" for i in (1, 2, 3) for s in ("draft", "critique")),
    "outer.inner", "outer.inner[1].step", "outer.inner[2].step",
}  # fmt: skip


def traced(graph: StageGraph, traces: Traces, **options: Any) -> RunResult:
    engine = Engine(interceptors=[TracingInterceptor(tracer_provider=traces.provider)], **options)
    return run_virtual(engine.run(graph, run_id="r1"))


def attributes(stage: str, pipeline: str, **more: Any) -> dict[str, Any]:
    return {
        "stageflow.run_id": "r1",
        "stageflow.pipeline": pipeline,
        "stageflow.stage": stage,
        "stageflow.stage.kind": "work",
        **{f"stageflow.{k}": v for k, v in more.items()},
    }


def resumed(
    graph: StageGraph, interceptor: Any, between: Any = None, **options: Any
) -> tuple[RunResult, RunResult]:
    """Run ``graph`` on a MemoryStore, call ``between()``, then resume the run."""
    store = MemoryStore()

    async def main() -> tuple[RunResult, RunResult]:
        engine = Engine(store=store, interceptors=[interceptor], **options)
        first = await engine.run(graph, run_id="r1")
        if between is not None:
            between()
        return first, await engine.resume("r1", graph)

    return run_virtual(main())


# ----------------------------------------------------------------------------- spans


def by_stage(traces: Traces) -> dict[str, Any]:
    """The stage spans by their stageflow.stage (each must appear once)."""
    spans = [s for s in traces.spans if s.name.startswith("stage ")]
    found = {(s.attributes or {})["stageflow.stage"]: s for s in spans}
    assert len(found) == len(spans), "two spans of one stage"
    return found


class TestSpans:
    def test_each_item_has_a_span_carrying_its_full_name_its_key_and_index(self) -> None:
        traces = Traces()

        result = traced(mapped(), traces)

        assert result.ok
        # named by the map: span names never carry a key
        assert traces.names() == [
            "run docs", "stage score", "stage score", "stage score", "stage split",
        ]  # fmt: skip
        run = traces.run("docs")
        spans = by_stage(traces)
        for index, doc in enumerate(DOCS):
            span = spans[f"score[doc-{doc}]"]
            assert dict(span.attributes or {}) == attributes(
                f"score[doc-{doc}]", "docs", attempts=1, outcome="completed",
                **{"item.key": f"doc-{doc}", "item.index": index},
            )  # fmt: skip
            assert parent_id(span) == span_id(run)  # a map has no span: its items are its
        # a stage that is no map: what it always had, no item attribute
        assert dict(spans["split"].attributes or {}) == attributes(
            "split", "docs", attempts=1, outcome="completed"
        )

    def test_a_failed_item_is_an_error_span_with_its_exception(self) -> None:
        traces = Traces()

        result = traced(mapped("collect", fail=("b",)), traces)

        assert result.ok
        spans = by_stage(traces)
        failed = spans["score[doc-b]"]
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "ValueError: bad b"
        assert failed.attributes["stageflow.outcome"] == "failed"  # type: ignore[index]
        assert failed.attributes["stageflow.item.key"] == "doc-b"  # type: ignore[index]
        assert [e["exception.message"] for e in events(failed, "exception")] == ["bad b"]
        for doc in ("a", "c"):
            span = spans[f"score[doc-{doc}]"]
            assert span.status.status_code is StatusCode.UNSET
            assert span.attributes["stageflow.outcome"] == "completed"  # type: ignore[index]

    def test_the_stages_of_subgraphs_and_loops_nest_under_their_stage_span(self) -> None:
        traces = Traces()

        result = traced(nested(), traces)

        assert result.ok
        spans = by_stage(traces)
        assert set(spans) == NESTED_STAGES
        # named by their place in the graph: span names never carry an iteration
        assert {s.name for s in spans.values()} == {
            "stage etl", "stage refine", "stage outer", "stage etl.fetch", "stage etl.load",
            "stage refine.draft", "stage refine.critique", "stage outer.inner",
            "stage outer.inner.step",
        }  # fmt: skip
        assert spans["refine[2].critique"].name == "stage refine.critique"
        run = traces.run("nested")
        parents = {name: parent_id(span) for name, span in spans.items()}
        ids = {name: span_id(span) for name, span in spans.items()}
        assert {n: p for n, p in parents.items() if p == span_id(run)} == dict.fromkeys(
            ("etl", "refine", "outer"), span_id(run)
        )
        assert parents["etl.fetch"] == parents["etl.load"] == ids["etl"]
        for i in (1, 2, 3):
            assert parents[f"refine[{i}].draft"] == ids["refine"]
            assert parents[f"refine[{i}].critique"] == ids["refine"]
        assert parents["outer.inner"] == ids["outer"]
        assert (
            parents["outer.inner[1].step"] == parents["outer.inner[2].step"] == ids["outer.inner"]
        )
        assert {trace_id(s) for s in traces.spans} == {trace_id(run)}
        for name, span in spans.items():  # the full name; no item attribute
            assert dict(span.attributes or {}) == attributes(
                name, "nested", attempts=1, outcome="completed"
            )
        # an iteration's stages run inside the loop's span, one after the other
        refine = spans["refine"]
        assert (refine.start_time or 0) <= (spans["refine[1].draft"].start_time or 0)
        assert (spans["refine[3].critique"].end_time or 0) <= (refine.end_time or 0)
        assert (spans["refine[1].critique"].end_time or 0) <= (
            spans["refine[2].draft"].start_time or 0
        )

    def test_the_items_of_a_map_in_a_subgraph_nest_under_the_subgraphs_span(self) -> None:
        traces = Traces()
        graph = Pipeline("outer").with_subgraph("etl", mapped()).build()

        result = traced(graph, traces)

        assert result.ok
        spans = by_stage(traces)
        etl = spans["etl"]
        for index, doc in enumerate(DOCS):
            span = spans[f"etl.score[doc-{doc}]"]
            assert span.name == "stage etl.score"
            assert parent_id(span) == span_id(etl)
            assert span.attributes["stageflow.stage"] == f"etl.score[doc-{doc}]"  # type: ignore[index]
            assert span.attributes["stageflow.item.key"] == f"doc-{doc}"  # type: ignore[index]
            assert span.attributes["stageflow.item.index"] == index  # type: ignore[index]

    def test_on_resume_the_stored_items_and_iterations_stages_are_restored(self) -> None:
        traces = Traces()
        calls: dict[str, int] = {}
        graph = (
            Pipeline("durable")
            .with_stage("split", split)
            .with_map(
                "score",
                scorer(("c",), calls),
                over="split.docs",
                dependencies=("split",),
                key=lambda doc: f"doc-{doc}",
            )
            .with_loop(
                "refine",
                Pipeline("b").with_stage("draft", drafter(calls, fail_in=3)),
                until=lambda out: out["n"] >= 4,
                max_iterations=5,
            )
            .build()
        )
        tracing = TracingInterceptor(tracer_provider=traces.provider)

        first, result = resumed(graph, tracing, traces.clear, fail_fast=False)

        assert first.status is RunStatus.FAILED
        assert result.ok
        outcomes = {
            stage: (s.attributes or {})["stageflow.outcome"]
            for stage, s in by_stage(traces).items()
        }
        assert outcomes == {
            "split": "restored",
            "score[doc-a]": "restored",
            "score[doc-b]": "restored",
            "score[doc-c]": "completed",
            "refine": "completed",
            "refine[1].draft": "restored",
            "refine[2].draft": "restored",
            "refine[3].draft": "completed",
            "refine[4].draft": "completed",
        }
        assert calls == {
            "score[doc-a]": 1, "score[doc-b]": 1, "score[doc-c]": 2,
            "refine[1].draft": 1, "refine[2].draft": 1, "refine[3].draft": 2,
            "refine[4].draft": 1,
        }  # fmt: skip


# ----------------------------------------------------------------------------- logs

LOGGER = "stageflow.dynamic-telemetry"


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.setLevel(logging.NOTSET)
    log.propagate = True


@pytest.fixture
def captured(logger: logging.Logger) -> Iterator[Capture]:
    handler = Capture()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def logged(graph: StageGraph, **options: Any) -> RunResult:
    engine = Engine(interceptors=[LoggingInterceptor(LOGGER)], **options)
    return run_virtual(engine.run(graph, run_id="r1"))


def item_fields(record: logging.LogRecord) -> tuple[Any, Any]:
    return getattr(record, "item_key", None), getattr(record, "item_index", None)


def failures(records: list[logging.LogRecord]) -> list[tuple[Any, ...]]:
    """What the stage records of failures say, in order."""
    return [
        (r.stage, r.levelname, *item_fields(r), r.getMessage(), r.attempt, r.duration)  # type: ignore[attr-defined]
        for r in records
        if getattr(r, "outcome", None) == "failed" and hasattr(r, "stage")
    ]


class TestLogs:
    def test_an_items_records_name_it_and_carry_its_key_and_index(self, captured: Capture) -> None:
        logged(mapped())

        for index, doc in enumerate(DOCS):
            name = f"score[doc-{doc}]"
            start, end = captured.of(name)
            assert (start.levelno, start.getMessage()) == (logging.DEBUG, f"stage {name} started")
            assert (end.levelno, end.getMessage()) == (
                logging.INFO,
                f"stage {name} completed in {index + 1:.3f}s",
            )
            for record in (start, end):
                assert item_fields(record) == (f"doc-{doc}", index)
        assert [item_fields(r) for r in captured.of("split")] == [(None, None)] * 2
        assert {r.stage for r in captured.stages()} == {  # type: ignore[attr-defined]
            "split", "score[doc-a]", "score[doc-b]", "score[doc-c]",
        }  # fmt: skip

    def test_the_records_of_nested_stages_name_them_in_full(self, captured: Capture) -> None:
        logged(nested())

        ends = [r for r in captured.stages() if r.levelno == logging.INFO]
        assert {r.stage for r in ends} == NESTED_STAGES  # type: ignore[attr-defined]
        assert captured.of("refine[2].critique")[1].getMessage() == (
            "stage refine[2].critique completed in 1.000s"
        )
        assert all(item_fields(r) == (None, None) for r in captured.stages())

    def test_json_lines_of_an_item_carry_its_key_and_index(self, logger: logging.Logger) -> None:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        try:
            logged(mapped())
        finally:
            logger.removeHandler(handler)

        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        (end,) = [x for x in lines if x.get("stage") == "score[doc-b]" and "outcome" in x]
        assert end["item_key"] == "doc-b"
        assert end["item_index"] == 1
        assert end["message"] == "stage score[doc-b] completed in 2.000s"

    @pytest.mark.parametrize(
        ("on_item_error", "status"),
        [
            ("skip", RunStatus.COMPLETED),
            ("collect", RunStatus.COMPLETED),
            ("fail", RunStatus.FAILED),
        ],
    )
    def test_failed_items_and_maps_are_logged_alike_with_records_on_and_off(
        self, logger: logging.Logger, captured: Capture, on_item_error: str, status: RunStatus
    ) -> None:
        graph = mapped(on_item_error, fail=("b",))
        seen = {}
        for level in (logging.INFO, logging.WARNING):  # stage records on, then off
            logger.setLevel(level)
            captured.records.clear()
            result = logged(graph)
            assert result.status is status
            seen[level] = failures(captured.records)
            b = captured.of("score[doc-b]")[-1]
            assert b.exc_info is not None
            assert str(b.exc_info[1]) == "bad b"

        on, off = seen[logging.INFO], seen[logging.WARNING]
        expected = [
            (
                "score[doc-b]",
                "ERROR",
                "doc-b",
                1,
                "stage score[doc-b] failed after 2.000s: bad b",
                1,
                pytest.approx(2.0),
            )
        ]
        if on_item_error == "fail":  # the map fails with its item, and is logged too
            assert [row[:4] for row in off[1:]] == [("score", "ERROR", None, None)]
            assert off[1][4].startswith(
                "stage score failed after 2.000s: stage 'score': item 'doc-b'"
            )
            expected.append(off[1])
        assert off == expected
        assert on == off

    def test_the_failed_items_of_a_map_in_a_loop_are_logged_alike_with_records_on_and_off(
        self, logger: logging.Logger, captured: Capture
    ) -> None:
        graph = Pipeline("p").with_loop(
            "again", mapped("skip", fail=("b",)), until=lambda out: False, max_iterations=2,
            on_exhausted="complete",
        )  # fmt: skip
        seen = {}
        for level in (logging.INFO, logging.WARNING):
            logger.setLevel(level)
            captured.records.clear()
            assert logged(graph.build()).ok
            seen[level] = failures(captured.records)

        assert [row[:5] for row in seen[logging.WARNING]] == [
            (f"again[{i}].score[doc-b]", "ERROR", "doc-b", 1,
             f"stage again[{i}].score[doc-b] failed after 2.000s: bad b")
            for i in (1, 2)
        ]  # fmt: skip
        assert seen[logging.INFO] == seen[logging.WARNING]

    @pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
    def test_an_item_that_failed_in_an_earlier_driver_is_not_logged_again(
        self, logger: logging.Logger, captured: Capture, level: int
    ) -> None:
        calls = {"last": 0}

        async def last(ctx: StageContext) -> dict[str, Any]:
            calls["last"] += 1
            if calls["last"] == 1:
                raise RuntimeError("once")
            return {}

        graph = (
            Pipeline("p")
            .with_stage("split", split)
            .with_map(
                "score",
                scorer(("b",)),
                over="split.docs",
                dependencies=["split"],
                on_item_error="skip",
            )
            .with_stage("last", last, dependencies=["score"])
            .build()
        )
        logger.setLevel(level)
        interceptor = LoggingInterceptor(LOGGER)

        first, result = resumed(graph, interceptor)
        assert first.status is RunStatus.FAILED
        assert result.ok
        assert result["score"].items[1].status.value == "failed"  # restored with its map

        once = [row[0] for row in failures(captured.records)]
        assert once == ["score[1]", "last"]  # both in the first driver

    def test_a_map_that_fails_before_its_items_is_logged_with_records_on_and_off(
        self, logger: logging.Logger, captured: Capture
    ) -> None:
        graph = mapped()
        seen = {}
        for level in (logging.INFO, logging.WARNING):
            logger.setLevel(level)
            captured.records.clear()
            engine = Engine(interceptors=[LoggingInterceptor(LOGGER)])
            result = run_virtual(engine.run(graph, {"docs": "abc"}, run_id="r1"))  # a str
            assert result.status is RunStatus.FAILED
            seen[level] = failures(captured.records)

        assert [row[:4] for row in seen[logging.WARNING]] == [("score", "ERROR", None, None)]
        assert "must be a sequence" in seen[logging.WARNING][0][4]
        assert seen[logging.INFO] == seen[logging.WARNING]

    def test_restored_items_and_iteration_stages_are_logged_as_restored(
        self, captured: Capture
    ) -> None:
        calls: dict[str, int] = {}
        graph = (
            Pipeline("durable")
            .with_stage("split", split)
            .with_map(
                "score",
                scorer(("c",), calls),
                over="split.docs",
                dependencies=("split",),
                key=lambda doc: f"doc-{doc}",
            )
            .with_loop(
                "refine",
                Pipeline("b").with_stage("draft", drafter(calls, fail_in=2)),
                until=lambda out: out["n"] >= 2,
                max_iterations=5,
            )
            .build()
        )
        interceptor = LoggingInterceptor(LOGGER)

        _, result = resumed(graph, interceptor, captured.records.clear, fail_fast=False)

        assert result.ok
        ends = {r.stage: r.outcome for r in captured.stages() if r.levelno == logging.INFO}  # type: ignore[attr-defined]
        assert ends == {
            "split": "restored",
            "score[doc-a]": "restored",
            "score[doc-b]": "restored",
            "score[doc-c]": "completed",
            "refine[1].draft": "restored",
            "refine[2].draft": "completed",
            "refine": "completed",
        }


# ----------------------------------------------------------------------------- metrics


def measured(graph: StageGraph, metrics: Metrics, **options: Any) -> RunResult:
    engine = Engine(interceptors=[MetricsInterceptor(meter_provider=metrics.provider)], **options)
    return run_virtual(engine.run(graph, run_id="r1"))


def labels(metrics: Metrics) -> set[str]:
    """Every value of stageflow.stage on every data point of every metric."""
    found = set()
    for metric in metrics.collect().values():
        for point in metric.data.data_points:
            stage = (point.attributes or {}).get("stageflow.stage")
            if stage is not None:
                found.add(stage)
    return found


class TestMetrics:
    def test_items_count_under_the_maps_name_never_under_a_key(self) -> None:
        metrics = Metrics()
        docs = [f"d{i}" for i in range(40)]
        engine = Engine(interceptors=[MetricsInterceptor(meter_provider=metrics.provider)])
        result = run_virtual(
            engine.run(mapped("collect", fail=("d3", "d7")), {"docs": docs}, run_id="r1")
        )

        assert result.ok
        assert len(result["score"].items) == 40
        assert labels(metrics) == {"split", "score"}
        collected = metrics.collect()
        outcomes = values(
            collected["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome"
        )
        assert outcomes == {
            ("split", "completed"): 1, ("score", "completed"): 38, ("score", "failed"): 2,
        }  # fmt: skip
        durations = values(
            collected["stageflow.stage.duration"], "stageflow.stage", "stageflow.outcome"
        )
        assert durations == outcomes  # one value per item
        attempts = values(collected["stageflow.stage.attempts"], "stageflow.stage")
        assert attempts == {("split",): 1, ("score",): 40}
        assert values(collected["stageflow.stage.active"], "stageflow.stage") == {
            ("split",): 0, ("score",): 0,
        }  # fmt: skip

    def test_nested_stages_count_under_their_path_without_iterations(self) -> None:
        metrics = Metrics()

        assert measured(nested(), metrics).ok

        outcomes = values(
            metrics.collect()["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome"
        )
        assert outcomes == {
            ("etl", "completed"): 1, ("refine", "completed"): 1, ("outer", "completed"): 1,
            ("etl.fetch", "completed"): 1, ("etl.load", "completed"): 1,
            ("refine.draft", "completed"): 3, ("refine.critique", "completed"): 3,
            ("outer.inner", "completed"): 1, ("outer.inner.step", "completed"): 2,
        }  # fmt: skip

    def test_the_items_of_a_map_in_a_loop_count_under_its_path(self) -> None:
        metrics = Metrics()
        body = mapped()
        graph = Pipeline("p").with_loop(
            "again", body, until=lambda out: False, max_iterations=2, on_exhausted="complete"
        )

        assert measured(graph.build(), metrics).ok

        assert labels(metrics) == {"again", "again.split", "again.score"}
        outcomes = values(
            metrics.collect()["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome"
        )
        assert outcomes[("again.score", "completed")] == 6  # 3 items, 2 iterations

    def test_restored_items_count_as_restored_and_unstarted_ones_as_skipped(self) -> None:
        metrics = Metrics()
        calls: dict[str, int] = {}
        graph = mapped(fail=("b",), calls=calls, max_parallel=1)
        interceptor = MetricsInterceptor(meter_provider=metrics.provider)

        first, result = resumed(graph, interceptor)

        assert first.status is RunStatus.FAILED
        assert result.ok
        outcomes = values(
            metrics.collect()["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome"
        )
        assert outcomes == {
            ("split", "completed"): 1, ("split", "restored"): 1,
            # first run: a completed, b failed, c never started (one at a time);
            # the resume: a restored, b and c completed
            ("score", "completed"): 3, ("score", "failed"): 1, ("score", "skipped"): 1,
            ("score", "restored"): 1,
        }  # fmt: skip
        assert calls == {"score[doc-a]": 1, "score[doc-b]": 2, "score[doc-c]": 1}


# ----------------------------------------------------------------------------- the cost


class TestTheHappyPath:
    def test_only_a_maps_calls_read_an_items_key_and_index(
        self, monkeypatch: pytest.MonkeyPatch, captured: Capture
    ) -> None:
        asked: list[str] = []
        item_of = RunServices.item_of

        def counted(self: RunServices, index: int) -> tuple[Any, int, str]:
            asked.append(self.outcomes.names[index])
            return item_of(self, index)

        monkeypatch.setattr(RunServices, "item_of", counted)
        interceptors = [
            TracingInterceptor(tracer_provider=Traces().provider),
            MetricsInterceptor(meter_provider=Metrics().provider),
            LoggingInterceptor(LOGGER),
        ]
        engine = Engine(interceptors=interceptors)

        assert run_virtual(engine.run(nested(), run_id="r1")).ok
        assert asked == []  # no map: nothing reads an item
        assert run_virtual(engine.run(mapped(), run_id="r2")).ok
        assert set(asked) == {"score[doc-a]", "score[doc-b]", "score[doc-c]"}
        assert len(captured.of("score[doc-a]")) == 2


# ----------------------------------------------------------------------------- events


class TestEvents:
    def test_the_item_events_of_a_map_in_a_subgraph_name_the_map_in_full(self) -> None:
        """What the CLI's live view counts a nested map's items by."""
        sink = RecordingSink()
        graph = Pipeline("outer").with_subgraph("etl", mapped()).build()

        assert run_virtual(Engine(sink=sink).run(graph)).ok

        kinds = ("map.started", "item.started", "item.completed")
        assert {e.stage for e in sink.events if e.type in kinds} == {"etl.score"}
