"""The built-in sinks: LoggingSink, JsonLinesSink, FanOutSink, RecordingSink."""

from __future__ import annotations

import io
import json
import logging

import pytest

from stageflow import (
    Engine,
    Event,
    EventSink,
    FanOutSink,
    JsonLinesSink,
    LoggingSink,
    Pipeline,
)
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import failing, noop


def _event(type_: str = "stage.completed", stage: str | None = "a", seq: int = 1, **data) -> Event:
    return Event(type_, "run-1", "p", stage, seq, 1_700_000_000.0, 1, data)


class _Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class TestLoggingSink:
    def test_logs_one_record_per_event_with_extra_fields(self, caplog):
        graph = Pipeline("p").with_stage("a", noop).build()

        with caplog.at_level(logging.INFO, logger="stageflow.events"):
            result = run_virtual(Engine(sink=LoggingSink()).run(graph, run_id="r-1"))

        records = [r for r in caplog.records if r.name == "stageflow.events"]
        assert result.ok
        assert [r.event_type for r in records] == [
            "run.started",
            "stage.started",
            "stage.completed",
            "run.completed",
        ]
        assert [r.seq for r in records] == [1, 2, 3, 4]
        assert {r.run_id for r in records} == {"r-1"}
        assert {r.pipeline for r in records} == {"p"}
        assert [r.stage for r in records] == [None, "a", "a", None]
        assert [r.attempt for r in records] == [0, 1, 1, 0]
        assert all(isinstance(r.stageflow_event, Event) for r in records)
        assert {r.levelno for r in records} == {logging.INFO}
        assert records[1].getMessage() == "stage.started a kind=work"
        assert records[0].getMessage() == "run.started p stages=1"

    def test_failed_events_are_logged_at_warning(self, caplog):
        graph = Pipeline("p").with_stage("bad", failing()).build()

        with caplog.at_level(logging.DEBUG, logger="stageflow.events"):
            run_virtual(Engine(sink=LoggingSink(level=logging.DEBUG)).run(graph))

        levels = {r.event_type: r.levelno for r in caplog.records if r.name == "stageflow.events"}
        assert levels["stage.failed"] == logging.WARNING
        assert levels["run.failed"] == logging.WARNING
        assert levels["stage.started"] == logging.DEBUG

    def test_a_level_above_warning_is_kept_for_failures(self, caplog):
        sink = LoggingSink(level=logging.ERROR)

        with caplog.at_level(logging.DEBUG, logger="stageflow.events"):
            sink.try_emit(_event("stage.failed"))

        assert [r.levelno for r in caplog.records] == [logging.ERROR]

    def test_takes_a_logger_or_its_name(self, caplog):
        custom = logging.getLogger("my.app.events")

        with caplog.at_level(logging.INFO):
            LoggingSink(custom).try_emit(_event())
            LoggingSink("other.events").try_emit(_event())

        assert [r.name for r in caplog.records] == ["my.app.events", "other.events"]

    def test_logs_nothing_below_the_loggers_level(self, caplog):
        with caplog.at_level(logging.WARNING, logger="stageflow.events"):
            LoggingSink().try_emit(_event("stage.completed"))
            LoggingSink().try_emit(_event("stage.failed"))

        assert [r.event_type for r in caplog.records] == ["stage.failed"]

    def test_emit_logs_too(self, caplog):
        with caplog.at_level(logging.INFO, logger="stageflow.events"):
            run_virtual(LoggingSink().emit(_event()))

        assert len(caplog.records) == 1

    def test_is_an_event_sink(self):
        assert isinstance(LoggingSink(), EventSink)


class TestJsonLinesSink:
    def test_writes_one_json_object_per_event_to_a_file(self, tmp_path):
        path = tmp_path / "events.jsonl"
        graph = Pipeline("p").with_stage("a", noop).with_stage("b", failing()).build()

        with JsonLinesSink(path) as sink:
            result = run_virtual(Engine(sink=sink, fail_fast=False).run(graph, run_id="r-1"))

        lines = path.read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines]
        assert result.sink_errors == 0
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["type"] == "run.started"
        assert events[-1]["type"] == "run.failed"
        assert {e["run_id"] for e in events} == {"r-1"}
        assert set(events[0]) == {
            "type",
            "run_id",
            "pipeline",
            "stage",
            "seq",
            "ts",
            "attempt",
            "data",
        }
        failed = next(e for e in events if e["type"] == "stage.failed")
        assert failed["data"]["error"] == "ValueError"

    def test_accepts_a_str_path_and_appends(self, tmp_path):
        path = tmp_path / "events.jsonl"
        path.write_text('{"existing": true}\n', encoding="utf-8")

        with JsonLinesSink(str(path)) as sink:
            sink.try_emit(_event())

        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2
        assert json.loads(lines[0]) == {"existing": True}
        assert json.loads(lines[1])["type"] == "stage.completed"

    def test_writes_to_a_text_stream_and_leaves_it_open(self):
        stream = io.StringIO()

        with JsonLinesSink(stream) as sink:
            sink.try_emit(_event(seq=1))
            sink.try_emit(_event(seq=2))

        assert not stream.closed
        lines = stream.getvalue().splitlines()
        assert [json.loads(line)["seq"] for line in lines] == [1, 2]

    def test_unserializable_custom_data_is_written_as_repr(self):
        stream = io.StringIO()

        async def stage(ctx):
            ctx.emit("thing", obj=_Opaque(), nested={"inner": _Opaque()}, number=3)

        sink = JsonLinesSink(stream)
        result = run_virtual(Engine(sink=sink).run(Pipeline().with_stage("a", stage).build()))
        sink.close()

        events = [json.loads(line) for line in stream.getvalue().splitlines()]
        custom = next(e for e in events if e["type"] == "custom.thing")
        assert result.sink_errors == 0
        assert custom["data"] == {
            "obj": "<Opaque thing>",
            "nested": {"inner": "<Opaque thing>"},
            "number": 3,
        }

    def test_close_closes_a_file_it_opened(self, tmp_path):
        sink = JsonLinesSink(tmp_path / "events.jsonl")
        sink.try_emit(_event())

        sink.close()

        with pytest.raises(ValueError, match="closed"):
            sink.try_emit(_event())

    def test_the_context_manager_closes_the_file(self, tmp_path):
        path = tmp_path / "events.jsonl"
        with JsonLinesSink(path) as sink:
            sink.try_emit(_event())
            assert path.read_text(encoding="utf-8") == ""  # buffered until flushed or closed

        assert json.loads(path.read_text(encoding="utf-8"))["seq"] == 1
        with pytest.raises(ValueError, match="closed"):
            sink.try_emit(_event())

    def test_flush_makes_the_lines_visible(self, tmp_path):
        path = tmp_path / "events.jsonl"
        sink = JsonLinesSink(path)
        sink.try_emit(_event())

        sink.flush()

        assert len(path.read_text(encoding="utf-8").splitlines()) == 1
        sink.close()

    def test_emit_writes_too(self):
        stream = io.StringIO()

        run_virtual(JsonLinesSink(stream).emit(_event()))

        assert json.loads(stream.getvalue())["type"] == "stage.completed"


class _Raising:
    def __init__(self) -> None:
        self.calls = 0

    def try_emit(self, event):
        self.calls += 1
        raise RuntimeError("down")

    async def emit(self, event):
        self.try_emit(event)


class TestFanOutSink:
    def test_sends_every_event_to_every_sink_in_order(self):
        first, second = RecordingSink(), RecordingSink()
        graph = Pipeline().with_stage("a", noop).build()

        run_virtual(Engine(sink=FanOutSink(first, second)).run(graph))

        assert (
            first.types()
            == second.types()
            == [
                "run.started",
                "stage.started",
                "stage.completed",
                "run.completed",
            ]
        )
        assert first.events == second.events

    def test_a_raising_sink_does_not_starve_the_others_and_is_counted(self, caplog):
        before, raising, after = RecordingSink(), _Raising(), RecordingSink()
        fan_out = FanOutSink(before, raising, after)

        with caplog.at_level(logging.ERROR, logger="stageflow"):
            result = run_virtual(Engine(sink=fan_out).run(Pipeline().with_stage("a", noop).build()))

        assert result.sink_errors == 0  # the fan-out isolated it
        assert fan_out.errors == raising.calls == 4
        assert len(before) == len(after) == 4
        logged = [r for r in caplog.records if r.name == "stageflow"]
        assert len(logged) == 1
        assert logged[0].exc_info is not None

    def test_each_raising_sink_is_logged_once(self, caplog):
        fan_out = FanOutSink(_Raising(), _Raising())

        with caplog.at_level(logging.ERROR, logger="stageflow"):
            for seq in range(1, 4):
                fan_out.try_emit(_event(seq=seq))

        assert fan_out.errors == 6
        assert len([r for r in caplog.records if r.name == "stageflow"]) == 2

    def test_accepts_sinks_and_iterables_of_sinks(self):
        a, b, c = RecordingSink(), RecordingSink(), RecordingSink()

        fan_out = FanOutSink(a, [b, c])

        assert fan_out.sinks == (a, b, c)

    def test_emit_awaits_each_sinks_emit_and_isolates_errors(self):
        a, raising, b = RecordingSink(), _Raising(), RecordingSink()
        fan_out = FanOutSink(a, raising, b)

        run_virtual(fan_out.emit(_event()))

        assert len(a) == len(b) == 1
        assert fan_out.errors == 1

    def test_with_no_sinks_does_nothing(self):
        fan_out = FanOutSink()

        fan_out.try_emit(_event())

        assert fan_out.sinks == ()
        assert fan_out.errors == 0


class TestRecordingSink:
    def _recorded(self) -> RecordingSink:
        sink = RecordingSink()
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop, dependencies=("a",)).build()
        run_virtual(Engine(sink=sink).run(graph))
        return sink

    def test_keeps_every_event_in_order(self):
        sink = self._recorded()

        assert len(sink) == 6
        assert [e.seq for e in sink.events] == [1, 2, 3, 4, 5, 6]

    def test_types_optionally_for_one_stage(self):
        sink = self._recorded()

        assert sink.types() == [
            "run.started",
            "stage.started",
            "stage.completed",
            "stage.started",
            "stage.completed",
            "run.completed",
        ]
        assert sink.types("b") == ["stage.started", "stage.completed"]

    def test_of_type_and_for_stage(self):
        sink = self._recorded()

        assert [e.stage for e in sink.of_type("stage.started")] == ["a", "b"]
        assert [e.type for e in sink.for_stage("a")] == ["stage.started", "stage.completed"]
        assert sink.of_type("stage.failed") == []

    def test_clear_and_repr(self):
        sink = self._recorded()
        assert repr(sink) == "<RecordingSink 6 events>"

        sink.clear()

        assert len(sink) == 0
        assert repr(sink) == "<RecordingSink 0 events>"

    def test_emit_records_too(self):
        sink = RecordingSink()

        run_virtual(sink.emit(_event()))

        assert sink.types() == ["stage.completed"]

    def test_is_an_event_sink(self):
        assert isinstance(RecordingSink(), EventSink)
