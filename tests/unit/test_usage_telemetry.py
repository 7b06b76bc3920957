"""Usage on spans and metrics: the GenAI conventions' tokens and model, stageflow's cost.

Real OpenTelemetry SDK, in-memory exporter and reader (tests/unit/_otel.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import stageflow._services
from stageflow import (
    ConfigurationError,
    Engine,
    MetricsInterceptor,
    Pipeline,
    StageContext,
    StageGraph,
    TracingInterceptor,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import ManualClock, run_virtual

from ._helpers import noop
from ._otel import Metrics, Traces, events, values

PRICES = {"gpt-4o": {"input": 2.5, "output": 10.0}, "mini": {"input": 0.15, "output": 0.6}}
USAGE_KEYS = {
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.request.model",
    "stageflow.usage.models",
    "stageflow.usage.cost",
}


def reporting(*reports: dict[str, Any], fail: bool = False) -> Callable[[StageContext], Any]:
    """A stage that reports each of ``reports``, one virtual second apart; then fails
    when told."""

    async def stage(ctx: StageContext) -> None:
        for report in reports:
            await asyncio.sleep(1)
            ctx.usage.report(**report)
        if fail:
            raise ValueError("after spending")

    return stage


def telemetry(traces: Traces, meter: Metrics, **options: Any) -> Engine:
    return Engine(
        interceptors=[
            TracingInterceptor(tracer_provider=traces.provider),
            MetricsInterceptor(meter_provider=meter.provider),
        ],
        **options,
    )


def usage_of(span: Any) -> dict[str, Any]:
    """The usage attributes of a span (lists as lists)."""
    attributes = dict(span.attributes or {})
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in attributes.items() if k in USAGE_KEYS
    }


def llm_pipeline() -> StageGraph:
    return (
        Pipeline("llm")
        .with_stage(
            "draft",
            reporting(
                {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200},
                {"model": "mini", "input_tokens": 400, "output_tokens": 100},
                {"model": "gpt-4o", "input_tokens": 10, "output_tokens": 5},
            ),
        )
        .with_stage(
            "check",
            reporting({"model": "mini", "input_tokens": 300, "output_tokens": 30}),
            dependencies=["draft"],
        )
        .with_stage("quiet", noop, dependencies=["draft"])
        .build()
    )


class TestSpans:
    def test_a_stage_span_carries_its_totals_models_and_cost(self) -> None:
        traces, meter = Traces(), Metrics()
        result = run_virtual(telemetry(traces, meter, prices=PRICES).run(llm_pipeline()))
        assert result.ok

        spans = traces.stage_spans()
        draft, check = usage_of(spans["draft"]), usage_of(spans["check"])
        assert draft == {
            "gen_ai.usage.input_tokens": 1410,
            "gen_ai.usage.output_tokens": 305,
            "stageflow.usage.models": ["gpt-4o", "mini"],  # two models: no request.model
            "stageflow.usage.cost": pytest.approx(result.usage.by_stage["draft"].cost),
        }
        assert check == {
            "gen_ai.usage.input_tokens": 300,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.request.model": "mini",
            "stageflow.usage.models": ["mini"],
            "stageflow.usage.cost": pytest.approx((300 * 0.15 + 30 * 0.6) / 1e6),
        }
        assert draft["stageflow.usage.cost"] == pytest.approx(
            (1010 * 2.5 + 205 * 10.0 + 400 * 0.15 + 100 * 0.6) / 1e6
        )

    def test_a_stage_that_reports_nothing_has_no_usage_attributes_nor_events(self) -> None:
        traces, meter = Traces(), Metrics()
        run_virtual(telemetry(traces, meter, prices=PRICES).run(llm_pipeline()))

        quiet = traces.stage("quiet")
        assert usage_of(quiet) == {}
        assert events(quiet, "stageflow.usage.reported") == []
        assert usage_of(traces.run("llm")) == {}  # the run span carries none: no double count

    def test_every_report_is_an_event_at_its_time(self) -> None:
        clock = ManualClock(1000.0)

        def stage(ctx: StageContext) -> None:  # sync: the clock moves by hand
            clock.advance(1)
            ctx.usage.report(model="gpt-4o", input_tokens=10, output_tokens=2, cost=0.5)
            clock.advance(2)
            ctx.usage.report(input_tokens=7)

        traces = Traces()
        engine = Engine(
            clock=clock, interceptors=[TracingInterceptor(tracer_provider=traces.provider)]
        )
        run_virtual(engine.run(Pipeline("p").with_stage("s", stage).build()))

        span = traces.stage("s")
        reported = [e for e in span.events if e.name == "stageflow.usage.reported"]
        assert [e.timestamp for e in reported] == [1001 * 10**9, 1003 * 10**9]
        assert span.start_time == 1000 * 10**9
        assert span.end_time == 1003 * 10**9
        assert [dict(e.attributes or {}) for e in reported] == [
            {
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 2,
                "gen_ai.request.model": "gpt-4o",
                "stageflow.usage.cost": 0.5,
                "stageflow.attempt": 1,
            },
            {  # no model, no cost: neither attribute
                "gen_ai.usage.input_tokens": 7,
                "gen_ai.usage.output_tokens": 0,
                "stageflow.attempt": 1,
            },
        ]
        # One model among the reports: it is the span's model; the cost is what is known.
        assert usage_of(span) == {
            "gen_ai.usage.input_tokens": 17,
            "gen_ai.usage.output_tokens": 2,
            "gen_ai.request.model": "gpt-4o",
            "stageflow.usage.models": ["gpt-4o"],
            "stageflow.usage.cost": 0.5,
        }

    def test_reports_without_model_or_cost_give_tokens_only(self) -> None:
        traces, meter = Traces(), Metrics()
        graph = (
            Pipeline("p")
            .with_stage("s", reporting({"input_tokens": 5, "output_tokens": 1}))
            .build()
        )
        run_virtual(telemetry(traces, meter).run(graph))

        assert usage_of(traces.stage("s")) == {
            "gen_ai.usage.input_tokens": 5,
            "gen_ai.usage.output_tokens": 1,
        }

    def test_a_failed_and_retried_stage_carries_what_every_attempt_spent(self) -> None:
        calls = 0

        async def flaky(ctx: StageContext) -> None:
            nonlocal calls
            calls += 1
            ctx.usage.report(model="mini", input_tokens=100, output_tokens=10)
            if calls == 1:
                raise ConnectionError("down")

        traces, meter = Traces(), Metrics()
        graph = (
            Pipeline("p")
            .with_stage("flaky", flaky, retry=2)
            .with_stage("broke", reporting({"model": "mini", "input_tokens": 50}, fail=True))
            .build()
        )
        result = run_virtual(telemetry(traces, meter, fail_fast=False).run(graph))
        assert result["flaky"].ok
        assert result["broke"].status.value == "failed"

        spans = traces.stage_spans()
        assert usage_of(spans["flaky"])["gen_ai.usage.input_tokens"] == 200
        assert [
            e["stageflow.attempt"] for e in events(spans["flaky"], "stageflow.usage.reported")
        ] == [1, 2]
        # A stage that failed after spending: what it spent is on its (error) span.
        assert usage_of(spans["broke"])["gen_ai.usage.input_tokens"] == 50
        assert spans["broke"].attributes is not None
        assert spans["broke"].attributes["stageflow.outcome"] == "failed"

    def test_a_resumed_run_shows_only_what_this_driver_spent(self) -> None:
        calls: dict[str, int] = {}

        def counted(name: str, tokens: int, fail_first: bool = False) -> Callable[..., Any]:
            async def stage(ctx: StageContext) -> None:
                calls[name] = calls.get(name, 0) + 1
                ctx.usage.report(model="mini", input_tokens=tokens)
                if fail_first and calls[name] == 1:
                    raise ConnectionError("down")

            return stage

        graph = (
            Pipeline("durable")
            .with_stage("a", counted("a", 300))
            .with_stage("b", counted("b", 200, fail_first=True), dependencies=["a"])
            .build()
        )
        store = MemoryStore()
        first_traces, second_traces = Traces(), Traces()
        first_meter, second_meter = Metrics(), Metrics()

        async def main() -> Any:
            first = telemetry(first_traces, first_meter, store=store)
            await first.run(graph, run_id="r1")
            second = telemetry(second_traces, second_meter, store=store)
            return await second.resume("r1", graph)

        result = run_virtual(main())
        assert result.ok
        assert result.usage.by_stage["b"].input_tokens == 400  # the run's account: both drivers

        spans = second_traces.stage_spans()
        assert usage_of(spans["a"]) == {}  # restored: nothing ran, nothing spent now
        assert usage_of(spans["b"])["gen_ai.usage.input_tokens"] == 200  # this driver's only
        tokens = values(
            second_meter.collect()["stageflow.usage.tokens"], "stageflow.stage", "gen_ai.token.type"
        )
        assert tokens == {("b", "input"): 200, ("b", "output"): 0}

    def test_no_ledger_is_made_for_a_run_that_reports_nothing(self, monkeypatch: Any) -> None:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a ledger was made")

        monkeypatch.setattr(stageflow._services, "UsageLedger", refused)
        traces, meter = Traces(), Metrics()
        graph = (
            Pipeline("p").with_stage("a", noop).with_stage("b", noop, dependencies=["a"]).build()
        )

        result = run_virtual(telemetry(traces, meter).run(graph))

        assert result.ok
        assert all(usage_of(s) == {} for s in traces.spans)
        assert "stageflow.usage.tokens" not in meter.collect()


class TestMetrics:
    def test_tokens_by_pipeline_stage_model_and_type_and_cost_by_model(self) -> None:
        traces, meter = Traces(), Metrics()
        engine = telemetry(traces, meter, prices=PRICES)
        graph = llm_pipeline()
        run_virtual(engine.run(graph, run_id="one"))
        run_virtual(engine.run(graph, run_id="two"))  # counters add up across runs

        found = meter.collect()
        assert found["stageflow.usage.tokens"].unit == "{token}"
        assert found["stageflow.usage.cost"].unit == "{cost}"
        tokens = values(
            found["stageflow.usage.tokens"],
            "stageflow.pipeline",
            "stageflow.stage",
            "gen_ai.request.model",
            "gen_ai.token.type",
        )
        assert tokens == {
            ("llm", "draft", "gpt-4o", "input"): 2 * 1010,
            ("llm", "draft", "gpt-4o", "output"): 2 * 205,
            ("llm", "draft", "mini", "input"): 2 * 400,
            ("llm", "draft", "mini", "output"): 2 * 100,
            ("llm", "check", "mini", "input"): 2 * 300,
            ("llm", "check", "mini", "output"): 2 * 30,
        }
        cost = values(found["stageflow.usage.cost"], "stageflow.stage", "gen_ai.request.model")
        assert cost == {
            ("draft", "gpt-4o"): pytest.approx(2 * (1010 * 2.5 + 205 * 10.0) / 1e6),
            ("draft", "mini"): pytest.approx(2 * (400 * 0.15 + 100 * 0.6) / 1e6),
            ("check", "mini"): pytest.approx(2 * (300 * 0.15 + 30 * 0.6) / 1e6),
        }

    def test_bounded_attributes_only(self) -> None:
        traces, meter = Traces(), Metrics()
        run_virtual(telemetry(traces, meter, prices=PRICES).run(llm_pipeline(), run_id="r-123"))

        found = meter.collect()
        for name in ("stageflow.usage.tokens", "stageflow.usage.cost"):
            for point in found[name].data.data_points:
                keys = set(point.attributes or {})
                assert keys <= {
                    "stageflow.pipeline",
                    "stageflow.stage",
                    "gen_ai.request.model",
                    "gen_ai.token.type",
                }, name
                assert "r-123" not in (point.attributes or {}).values()

    def test_a_report_without_model_has_no_model_attribute_and_no_cost_point(self) -> None:
        traces, meter = Traces(), Metrics()
        graph = (
            Pipeline("p")
            .with_stage(
                "s", reporting({"input_tokens": 5, "output_tokens": 1}, {"input_tokens": 2})
            )
            .build()
        )
        run_virtual(telemetry(traces, meter).run(graph))

        found = meter.collect()
        tokens = values(found["stageflow.usage.tokens"], "stageflow.stage", "gen_ai.token.type")
        assert tokens == {("s", "input"): 7, ("s", "output"): 1}
        for point in found["stageflow.usage.tokens"].data.data_points:
            assert "gen_ai.request.model" not in (point.attributes or {})
        assert "stageflow.usage.cost" not in found  # no cost known: no point

    def test_what_a_failed_stage_spent_is_counted(self) -> None:
        traces, meter = Traces(), Metrics()
        graph = (
            Pipeline("p")
            .with_stage("s", reporting({"model": "mini", "input_tokens": 9}, fail=True))
            .build()
        )
        run_virtual(telemetry(traces, meter, prices=PRICES).run(graph))

        tokens = values(meter.collect()["stageflow.usage.tokens"], "gen_ai.token.type")
        assert tokens == {("input",): 9, ("output",): 0}


class TestReported:
    def test_the_ledger_gives_a_stages_reports_of_this_driver_in_order(self) -> None:
        seen: dict[str, Any] = {}

        async def stage(ctx: StageContext) -> None:
            seen["before"] = ctx.usage_reports
            ctx.usage.report(model="a", input_tokens=1)
            ctx.usage.report(model="b", output_tokens=2)
            seen["after"] = ctx.usage_reports
            seen["ledger"] = ctx.ledger.reported("s")
            seen["other"] = ctx.ledger.reported("nobody")

        run_virtual(Engine().run(Pipeline("p").with_stage("s", stage).build(), run_id="r"))

        assert seen["before"] == ()
        assert [(r.model, r.input_tokens, r.output_tokens) for r in seen["after"]] == [
            ("a", 1, 0),
            ("b", 0, 2),
        ]
        assert seen["ledger"] == seen["after"]
        assert isinstance(seen["after"], tuple)  # a copy: later reports do not change it
        assert seen["other"] == ()

    @pytest.mark.parametrize("bad", [None, 42, ["s"], b"s"])
    def test_reported_refuses_what_is_no_stage_name(self, bad: Any) -> None:
        errors: list[BaseException] = []

        async def stage(ctx: StageContext) -> None:
            try:
                ctx.ledger.reported(bad)
            except ConfigurationError as error:
                errors.append(error)

        run_virtual(Engine().run(Pipeline("p").with_stage("s", stage).build()))

        assert len(errors) == 1
        assert "stage" in str(errors[0])
        assert repr(bad) in str(errors[0])
