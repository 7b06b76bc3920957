"""Events: the exact sequence of a run, custom events, and sinks that misbehave."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import Any

import pytest

from stageflow import Engine, Event, EventType, Pipeline, StageOutput
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import failing, noop, run_recorded, sleeper


def _summary(event: Event) -> tuple[Any, ...]:
    return (event.type, event.stage, event.seq, event.attempt, dict(event.data))


class TestEventSequence:
    def test_a_small_graph_emits_exactly_these_events(self):
        async def skip(ctx):
            await asyncio.sleep(2)
            return StageOutput.skip("nothing new")

        graph = (
            Pipeline("p")
            .with_stage("a", sleeper(1))
            .with_stage("b", skip, "transform", dependencies=("a",))
            .with_stage("c", noop, dependencies=("b",))
            .build()
        )

        result, sink = run_recorded(graph)

        assert [_summary(e) for e in sink.events] == [
            ("run.started", None, 1, 0, {"stages": 3}),
            ("stage.started", "a", 2, 1, {"kind": "work"}),
            ("stage.completed", "a", 3, 1, {"duration": pytest.approx(1)}),
            ("stage.started", "b", 4, 1, {"kind": "transform"}),
            ("stage.skipped", "b", 5, 1, {"duration": pytest.approx(2), "reason": "nothing new"}),
            ("stage.skipped", "c", 6, 0, {"reason": "dependency 'b' was skipped"}),
            (
                "run.completed",
                None,
                7,
                0,
                {
                    "status": "completed",
                    "duration": pytest.approx(3),
                    "completed": 1,
                    "failed": 0,
                    "skipped": 2,
                    "cancelled": 0,
                },
            ),
        ]
        assert all(e.run_id == result.run_id for e in sink.events)
        assert all(e.pipeline == "p" for e in sink.events)

    def test_a_failure_reports_reason_and_error_type(self):
        graph = Pipeline().with_stage("bad", failing(1, "no rows")).build()

        _, sink = run_recorded(graph)

        failed = sink.of_type("stage.failed")
        assert [_summary(e) for e in failed] == [
            (
                "stage.failed",
                "bad",
                3,
                1,
                {
                    "duration": pytest.approx(1),
                    "reason": "ValueError: no rows",
                    "error": "ValueError",
                },
            )
        ]
        assert sink.types()[-1] == "run.failed"
        assert sink.events[-1].data["failed"] == 1
        assert sink.events[-1].data["status"] == "failed"

    def test_stage_output_fail_is_reported_as_a_stage_failed_error(self):
        async def reject(ctx):
            return StageOutput.fail("bad input")

        _, sink = run_recorded(Pipeline().with_stage("r", reject).build())

        failed = sink.of_type("stage.failed")[0]
        assert failed.data["reason"] == "bad input"
        assert failed.data["error"] == "StageFailedError"

    def test_seq_is_strictly_increasing_from_one_across_a_parallel_run(self):
        pipeline = Pipeline()
        for i in range(12):
            deps = (f"s{i - 3}",) if i >= 3 else ()
            pipeline = pipeline.with_stage(f"s{i}", sleeper(i % 4), dependencies=deps)

        _, sink = run_recorded(pipeline.build(), max_parallel=3)

        assert [e.seq for e in sink.events] == list(range(1, len(sink) + 1))
        assert len(sink.of_type("stage.started")) == 12
        assert len(sink.of_type("stage.completed")) == 12

    def test_every_stage_ends_with_exactly_one_terminal_event_before_the_run_ends(self):
        graph = (
            Pipeline()
            .with_stage("a", failing(1))
            .with_stage("b", sleeper(5))
            .with_stage("c", noop, dependencies=("a",))
            .with_stage("d", noop, dependencies=("b",))
            .build()
        )

        _, sink = run_recorded(graph)

        terminal = [e for e in sink.events if EventType(e.type).is_terminal and e.stage]
        assert sorted(e.stage for e in terminal) == ["a", "b", "c", "d"]
        assert [e.type for e in terminal] == [
            "stage.failed",
            "stage.cancelled",
            "stage.skipped",
            "stage.skipped",
        ]
        assert sink.types()[-1] == "run.failed"

    def test_each_run_has_its_own_seq(self):
        sink = RecordingSink()
        engine = Engine(sink=sink)
        graph = Pipeline().with_stage("a", noop).build()

        async def main():
            await engine.run(graph, run_id="one")
            await engine.run(graph, run_id="two")

        run_virtual(main())

        for run_id in ("one", "two"):
            assert [e.seq for e in sink.events if e.run_id == run_id] == [1, 2, 3, 4]

    def test_timestamps_are_wall_clock_and_non_decreasing(self):
        _, sink = run_recorded(Pipeline().with_stage("a", noop).with_stage("b", noop).build())

        stamps = [e.ts for e in sink.events]
        assert stamps == sorted(stamps)
        assert stamps[0] > 1_600_000_000


class TestCustomEvents:
    def test_emit_sends_a_custom_event_between_start_and_end(self):
        async def stage(ctx):
            ctx.emit("progress", pct=5)
            ctx.emit("custom.progress", pct=100)
            ctx.emit("llm.tokens", used=12)

        _, sink = run_recorded(Pipeline().with_stage("work", stage).build())

        assert sink.types("work") == [
            "stage.started",
            "custom.progress",
            "custom.progress",
            "custom.llm.tokens",
            "stage.completed",
        ]
        custom = sink.of_type("custom.progress")
        assert [dict(e.data) for e in custom] == [{"pct": 5}, {"pct": 100}]
        assert all(e.attempt == 1 and e.stage == "work" for e in custom)

    def test_emit_from_a_sync_stage_reaches_the_sink_on_the_loop_thread(self):
        threads: list[threading.Thread] = []

        class ThreadNoting(RecordingSink):
            def try_emit(self, event):
                threads.append(threading.current_thread())
                super().try_emit(event)

        def stage(ctx):
            ctx.emit("progress", pct=50)
            return {"ok": True}

        sink = ThreadNoting()
        result = asyncio.run(Engine(sink=sink).run(Pipeline().with_stage("s", stage).build()))

        assert result.ok
        assert sink.types("s") == ["stage.started", "custom.progress", "stage.completed"]
        assert set(threads) == {threading.main_thread()}

    def test_emit_without_a_sink_is_a_no_op(self):
        async def stage(ctx):
            ctx.emit("progress", pct=5)
            return {"emitted": True}

        result = run_virtual(Engine().run(Pipeline().with_stage("a", stage).build()))

        assert result.ok
        assert result["a"].data == {"emitted": True}
        assert result.sink_errors == 0


class _Exploding:
    def __init__(self, on: str | None = None) -> None:
        self.on = on
        self.calls = 0

    def try_emit(self, event):
        self.calls += 1
        if self.on is None or event.type == self.on:
            raise RuntimeError(f"sink down on {event.type}")

    async def emit(self, event):
        self.try_emit(event)


class TestMisbehavingSinks:
    def test_a_raising_sink_never_changes_the_outcome_and_is_counted(self, caplog):
        sink = _Exploding()
        graph = (
            Pipeline()
            .with_stage("a", sleeper(1, x=1))
            .with_stage("b", noop, dependencies=("a",))
            .build()
        )

        with caplog.at_level(logging.ERROR, logger="stageflow"):
            result = run_virtual(Engine(sink=sink).run(graph))

        assert result.ok
        assert result["a"].data == {"x": 1}
        assert result.sink_errors == sink.calls == 6
        errors = [r for r in caplog.records if r.name == "stageflow"]
        assert len(errors) == 1  # logged once per run, then counted
        assert "run.started" in errors[0].getMessage()
        assert errors[0].exc_info is not None

    def test_a_sink_failing_on_one_event_type_still_receives_the_others(self):
        sink = _Exploding(on="stage.started")

        result = run_virtual(Engine(sink=sink).run(Pipeline().with_stage("a", noop).build()))

        assert result.ok
        assert result.sink_errors == 1
        assert sink.calls == 4

    def test_a_raising_sink_does_not_break_a_failing_run(self):
        result = run_virtual(
            Engine(sink=_Exploding()).run(Pipeline().with_stage("a", failing()).build())
        )

        assert result.status == "failed"
        assert isinstance(result["a"].error, ValueError)

    def test_each_run_counts_its_own_sink_errors(self):
        sink = _Exploding()
        engine = Engine(sink=sink)
        graph = Pipeline().with_stage("a", noop).build()

        async def main():
            return [await engine.run(graph) for _ in range(2)]

        first, second = run_virtual(main())

        assert first.sink_errors == second.sink_errors == 4

    def test_a_stage_emitting_to_a_raising_sink_is_not_disturbed(self):
        async def stage(ctx):
            ctx.emit("progress", pct=1)
            return {"done": True}

        result = run_virtual(
            Engine(sink=_Exploding()).run(Pipeline().with_stage("a", stage).build())
        )

        assert result["a"].data == {"done": True}
        assert result.sink_errors == 5


class TestEvent:
    def test_is_frozen(self):
        event = Event("run.started", "r", "p", None, 1, 0.0)

        with pytest.raises(dataclasses.FrozenInstanceError):
            event.seq = 2  # type: ignore[misc]

    def test_defaults_to_attempt_zero_and_empty_data(self):
        event = Event("run.started", "r", "p", None, 1, 0.0)

        assert event.attempt == 0
        assert dict(event.data) == {}

    def test_to_dict_is_plain_and_copies_the_data(self):
        data = {"pct": 5}
        event = Event(EventType.STAGE_STARTED, "r", "p", "a", 3, 12.5, 1, data)

        as_dict = event.to_dict()

        assert as_dict == {
            "type": "stage.started",
            "run_id": "r",
            "pipeline": "p",
            "stage": "a",
            "seq": 3,
            "ts": 12.5,
            "attempt": 1,
            "data": {"pct": 5},
        }
        assert type(as_dict["type"]) is str
        assert as_dict["data"] is not data

    def test_terminal_types_are_those_that_end_a_stage_or_a_run(self):
        terminal = {t.value for t in EventType if t.is_terminal}

        assert terminal == {
            "run.completed",
            "run.failed",
            "run.cancelled",
            "stage.completed",
            "stage.failed",
            "stage.skipped",
            "stage.cancelled",
        }

    def test_the_taxonomy_holds_the_documented_types(self):
        documented = {
            "run.started",
            "run.completed",
            "run.failed",
            "run.cancelled",
            "stage.started",
            "stage.completed",
            "stage.failed",
            "stage.skipped",
            "stage.retrying",
            "attempt.started",
            "stage.restored",
            "circuit.opened",
            "circuit.half_open",
            "circuit.closed",
            "budget.warning",
            "budget.exceeded",
            "budget.downgraded",
            "checkpoint.saved",
            "map.started",
            "item.started",
            "item.completed",
            "item.failed",
            "item.skipped",
            "item.cancelled",
            "loop.iteration",
            "input.waiting",
            "input.received",
            "input.timed_out",
            "assist.validated",
            "assist.analyzed",
            "assist.diagnosed",
            "assist.failed",
            "run.waiting",
        }

        assert documented <= {t.value for t in EventType}
        assert {t.value for t in EventType} - documented == {"stage.cancelled"}
