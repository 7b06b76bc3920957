"""OTelEventSink: events become OpenTelemetry log records and span events (real SDK)."""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber, get_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext

from stageflow import (
    ConfigurationError,
    Engine,
    Event,
    FanOutSink,
    Pipeline,
    RunResult,
    StageContext,
)
from stageflow.adapters.otel import OTelEventSink
from stageflow.testing import RecordingSink, run_virtual


def _logs() -> tuple[LoggerProvider, InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider, exporter


def _tracer() -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests"), exporter


async def counts(ctx: StageContext) -> dict[str, int]:
    ctx.emit("custom.x", n=1)
    return {"v": 1}


async def breaks(ctx: StageContext) -> dict[str, int]:
    raise ValueError("broken")


async def works(ctx: StageContext) -> dict[str, int]:
    return {"v": 2}


FAILING = (
    Pipeline("otel").with_stage("a", counts).with_stage("b", breaks, dependencies=("a",)).build()
)
PASSING = Pipeline("otel-ok").with_stage("a", counts).with_stage("c", works).build()


def _event(**data: Any) -> Event:
    return Event("custom.y", "run-1", "p", "s", 1, 1_700_000_000.5, 2, data)


class TestRecords:
    def test_every_event_becomes_a_log_record_in_seq_order(self) -> None:
        provider, exporter = _logs()
        recording = RecordingSink()
        sink = OTelEventSink(logger_provider=provider)

        async def main() -> RunResult:
            return await Engine(sink=FanOutSink(sink, recording)).run(FAILING)

        result = run_virtual(main())
        records = [r.log_record for r in exporter.get_finished_logs()]

        assert result.status == "failed"
        assert sink.errors == 0
        types = [
            "run.started",
            "stage.started",
            "custom.x",
            "stage.completed",
            "stage.started",
            "stage.failed",
            "run.failed",
        ]
        assert [r.body for r in records] == types
        assert [r.event_name for r in records] == types
        assert [r.attributes["stageflow.event"] for r in records] == types  # type: ignore[index]
        assert [r.attributes["stageflow.seq"] for r in records] == list(range(1, 8))  # type: ignore[index]
        for record, event in zip(records, recording.events, strict=True):
            attributes = dict(record.attributes or {})
            assert attributes["stageflow.run_id"] == result.run_id
            assert attributes["stageflow.pipeline"] == "otel"
            assert attributes["stageflow.attempt"] == event.attempt
            assert record.timestamp == int(event.ts * 1e9)
            if event.stage is None:
                assert "stageflow.stage" not in attributes
            else:
                assert attributes["stageflow.stage"] == event.stage
        scopes = {s.instrumentation_scope for s in exporter.get_finished_logs()}
        assert {scope.name for scope in scopes if scope is not None} == {"stageflow"}

    def test_failures_are_warnings_and_the_rest_info(self) -> None:
        provider, exporter = _logs()

        async def main() -> RunResult:
            return await Engine(sink=OTelEventSink(logger_provider=provider)).run(FAILING)

        run_virtual(main())
        records = [r.log_record for r in exporter.get_finished_logs()]
        warned = {str(r.body) for r in records if r.severity_number == SeverityNumber.WARN}
        informed = {str(r.body) for r in records if r.severity_number == SeverityNumber.INFO}

        assert warned == {"stage.failed", "run.failed"}
        assert informed == {"run.started", "stage.started", "custom.x", "stage.completed"}
        failed = next(r for r in records if r.body == "stage.failed")
        assert failed.severity_text == "WARN"
        assert failed.attributes["stageflow.data.error"] == "ValueError"  # type: ignore[index]
        assert "broken" in failed.attributes["stageflow.data.reason"]  # type: ignore[index,operator]

    @pytest.mark.parametrize("type_", ["budget.exceeded", "circuit.opened", "custom.failed"])
    def test_other_warning_types(self, type_: str) -> None:
        provider, exporter = _logs()
        OTelEventSink(logger_provider=provider).try_emit(Event(type_, "r", "p", None, 1, 0.0))

        (record,) = exporter.get_finished_logs()
        assert record.log_record.severity_number == SeverityNumber.WARN

    def test_a_custom_event_carries_its_data(self) -> None:
        provider, exporter = _logs()

        async def main() -> RunResult:
            return await Engine(sink=OTelEventSink(logger_provider=provider)).run(PASSING)

        run_virtual(main())
        (custom,) = [
            r.log_record for r in exporter.get_finished_logs() if r.log_record.body == "custom.x"
        ]
        assert custom.attributes["stageflow.data.n"] == 1  # type: ignore[index]
        assert custom.attributes["stageflow.stage"] == "a"  # type: ignore[index]
        assert custom.attributes["stageflow.attempt"] == 1  # type: ignore[index]

    def test_values_otel_cannot_hold_become_their_repr(self) -> None:
        class Colour(enum.StrEnum):
            RED = "red"

        class Thing:
            def __repr__(self) -> str:
                return "<thing>"

        provider, exporter = _logs()
        sink = OTelEventSink(logger_provider=provider)
        sink.try_emit(
            _event(
                s="x",
                b=True,
                i=3,
                f=1.5,
                e=Colour.RED,
                ints=[1, 2],
                strs=("a", "b"),
                empty=[],
                mixed=[1, "a"],
                bools_and_ints=[True, 1],
                nested=[[1]],
                mapping={"k": 1},
                none=None,
                thing=Thing(),
            )
        )

        (record,) = exporter.get_finished_logs()
        data = {
            k.removeprefix("stageflow.data."): v
            for k, v in (record.log_record.attributes or {}).items()
            if k.startswith("stageflow.data.")
        }
        assert data == {
            "s": "x",
            "b": True,
            "i": 3,
            "f": 1.5,
            "e": "red",
            "ints": (1, 2),
            "strs": ("a", "b"),
            "empty": (),
            "mixed": "[1, 'a']",
            "bools_and_ints": "[True, 1]",
            "nested": "[[1]]",
            "mapping": "{'k': 1}",
            "none": "None",
            "thing": "<thing>",
        }
        assert type(data["e"]) is str
        assert record.log_record.timestamp == 1_700_000_000_500_000_000
        assert sink.errors == 0

    def test_emit_does_what_try_emit_does(self) -> None:
        provider, exporter = _logs()
        sink = OTelEventSink(logger_provider=provider)

        asyncio.run(sink.emit(_event(n=1)))

        (record,) = exporter.get_finished_logs()
        assert record.log_record.body == "custom.y"


class TestTraceContext:
    def test_records_carry_the_current_span_and_become_its_events(self) -> None:
        provider, exporter = _logs()
        tracer, spans = _tracer()

        async def main() -> tuple[int, int]:
            with tracer.start_as_current_span("request") as span:
                sink = OTelEventSink(logger_provider=provider, span_events=True)
                await Engine(sink=sink).run(PASSING)
                context = span.get_span_context()
                return context.trace_id, context.span_id

        trace_id, span_id = run_virtual(main())
        records = [r.log_record for r in exporter.get_finished_logs()]
        (request,) = spans.get_finished_spans()

        assert trace_id != 0
        assert {(r.trace_id, r.span_id) for r in records} == {(trace_id, span_id)}
        assert [e.name for e in request.events] == [str(r.body) for r in records]
        assert [e.timestamp for e in request.events] == [r.timestamp for r in records]
        custom = next(e for e in request.events if e.name == "custom.x")
        assert custom.attributes is not None
        assert custom.attributes["stageflow.data.n"] == 1
        assert custom.attributes["stageflow.stage"] == "a"

    def test_without_span_events_the_span_is_left_alone(self) -> None:
        provider, exporter = _logs()
        tracer, spans = _tracer()

        async def main() -> None:
            with tracer.start_as_current_span("request"):
                sink = OTelEventSink(logger_provider=provider, span_events=False)
                await Engine(sink=sink).run(PASSING)

        run_virtual(main())
        (request,) = spans.get_finished_spans()

        assert request.events == ()
        assert request.context is not None
        trace_ids = {r.log_record.trace_id for r in exporter.get_finished_logs()}
        assert trace_ids == {request.context.trace_id}

    def test_outside_any_span_records_have_no_trace(self) -> None:
        provider, exporter = _logs()

        OTelEventSink(logger_provider=provider).try_emit(_event())

        (record,) = exporter.get_finished_logs()
        assert record.log_record.trace_id == 0

    def test_a_span_that_is_not_recording_gets_no_events(self) -> None:
        provider, exporter = _logs()
        added: list[str] = []

        class Quiet(NonRecordingSpan):
            def add_event(self, name: str, *args: Any, **kwargs: Any) -> None:
                added.append(name)

        sink = OTelEventSink(logger_provider=provider, span_events=True)
        with trace.use_span(Quiet(SpanContext(1, 2, is_remote=False))):
            sink.try_emit(_event())

        assert added == []
        assert len(exporter.get_finished_logs()) == 1
        assert exporter.get_finished_logs()[0].log_record.trace_id == 1


class TestTelemetryNeverBreaksARun:
    def test_a_processor_that_raises_is_counted_and_the_run_goes_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken(LogRecordProcessor):
            def on_emit(self, log_record: ReadWriteLogRecord) -> None:
                raise RuntimeError("processor down")

            def shutdown(self) -> None:
                pass

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return True

        provider = LoggerProvider(shutdown_on_exit=False)
        provider.add_log_record_processor(Broken())
        sink = OTelEventSink(logger_provider=provider)
        recording = RecordingSink()

        async def main() -> RunResult:
            return await Engine(sink=FanOutSink(sink, recording)).run(FAILING)

        with caplog.at_level(logging.ERROR, logger="stageflow"):
            result = run_virtual(main())

        assert result.status == "failed"  # b's failure, nothing else
        assert set(result.with_status("failed")) == {"b"}
        assert result.sink_errors == 0
        assert sink.errors == len(recording.events) == 7
        assert caplog.text.count("OTelEventSink failed") == 1  # logged once, then counted
        assert "processor down" in caplog.text

    def test_a_span_that_raises_is_counted_and_the_record_still_goes_out(self) -> None:
        provider, exporter = _logs()

        class Hostile(NonRecordingSpan):
            def is_recording(self) -> bool:
                return True

            def add_event(self, name: str, *args: Any, **kwargs: Any) -> None:
                raise RuntimeError("span down")

        sink = OTelEventSink(logger_provider=provider, span_events=True)
        with trace.use_span(Hostile(SpanContext(1, 2, is_remote=False))):
            sink.try_emit(_event())
            sink.try_emit(_event())

        assert sink.errors == 2
        assert len(exporter.get_finished_logs()) == 2

    def test_a_value_whose_repr_raises_is_counted(self) -> None:
        class Unprintable:
            def __repr__(self) -> str:
                raise RuntimeError("no repr")

        provider, exporter = _logs()
        sink = OTelEventSink(logger_provider=provider)

        sink.try_emit(_event(bad=Unprintable()))
        sink.try_emit(_event(good=1))

        assert sink.errors == 1
        assert len(exporter.get_finished_logs()) == 1


class TestArguments:
    def test_the_global_provider_by_default(self) -> None:
        sink = OTelEventSink()

        assert sink.logger_provider is get_logger_provider()
        assert repr(sink) == f"OTelEventSink(logger_provider={get_logger_provider()!r})"
        assert sink.span_events is False
        sink.try_emit(_event())  # whatever is configured globally, it does not raise
        assert sink.errors == 0

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"logger_provider": 42}, "logger_provider"),
            ({"logger_provider": LoggerProvider}, "logger_provider"),
            ({"logger_provider": TracerProvider(shutdown_on_exit=False)}, "logger_provider"),
            ({"span_events": "yes"}, "span_events"),
            ({"span_events": 1}, "span_events"),
            ({"span_events": None}, "span_events"),
        ],
    )
    def test_bad_arguments_are_refused_naming_the_field(
        self, kwargs: dict[str, object], field: str
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            OTelEventSink(**kwargs)  # type: ignore[arg-type]

        assert info.value.field == field
        assert info.value.value is kwargs[field]
        assert repr(kwargs[field]) in str(info.value)

    def test_arguments_are_keyword_only(self) -> None:
        with pytest.raises(TypeError):
            OTelEventSink(_logs()[0])  # type: ignore[call-arg]
