"""BufferedSink: a slow sink never stalls a run."""

from __future__ import annotations

import asyncio

import pytest

from stageflow import (
    BufferedSink,
    ConfigurationError,
    Engine,
    Event,
    Pipeline,
    RunResult,
    RunTimeoutError,
    StageCancelledError,
)
from stageflow.testing import RecordingSink, run_virtual


class SlowSink:
    """Takes `delay` seconds (virtual) to deliver each event."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.events: list[Event] = []

    def try_emit(self, event: Event) -> None:  # pragma: no cover - BufferedSink awaits emit
        raise AssertionError("a BufferedSink must not call try_emit of its inner sink")

    async def emit(self, event: Event) -> None:
        await asyncio.sleep(self.delay)
        self.events.append(event)


async def one_second(ctx: object) -> dict[str, int]:
    await asyncio.sleep(1)
    return {"v": 1}


GRAPH = (
    Pipeline("slow-sink")
    .with_stage("a", one_second)
    .with_stage("b", one_second, dependencies=("a",))
    .build()
)


class TestBufferedSink:
    def test_a_slow_sink_does_not_stall_the_run_and_receives_every_event_in_order(self) -> None:
        slow = SlowSink(delay=10.0)
        sink = BufferedSink(slow)

        async def main() -> tuple[float, float]:
            loop = asyncio.get_running_loop()
            result = await Engine(sink=sink).run(GRAPH)
            await sink.flush()
            flushed_at = loop.time()
            await sink.aclose()
            return result.duration, flushed_at

        duration, flushed_at = run_virtual(main())
        assert duration == pytest.approx(2.0)  # the stages' time, not the sink's
        assert flushed_at == pytest.approx(10.0 * 6)  # six events, one after the other
        assert [e.seq for e in slow.events] == [1, 2, 3, 4, 5, 6]

    def test_a_full_queue_drops_the_oldest_events_and_counts_them(self) -> None:
        slow = SlowSink(delay=10.0)
        sink = BufferedSink(slow, maxsize=2)

        async def main() -> None:
            await Engine(sink=sink).run(GRAPH)
            await sink.aclose()

        run_virtual(main())
        # The first event is taken at once by the deliverer; then the queue keeps the newest.
        assert sink.dropped > 0
        assert slow.events[-1].type == "run.completed"
        assert len(slow.events) + sink.dropped == 6

    def test_drop_newest_keeps_the_first_events(self) -> None:
        slow = SlowSink(delay=10.0)
        sink = BufferedSink(slow, maxsize=1, overflow="drop_newest")

        async def main() -> None:
            await Engine(sink=sink).run(GRAPH)
            await sink.aclose()

        run_virtual(main())
        assert slow.events[0].type == "run.started"
        assert slow.events[-1].type != "run.completed"
        assert len(slow.events) + sink.dropped == 6

    def test_errors_of_the_inner_sink_are_counted_and_delivery_goes_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Flaky(RecordingSink):
            async def emit(self, event: Event) -> None:
                if event.seq % 2:
                    raise RuntimeError("flaky")
                await super().emit(event)

        inner = Flaky()
        sink = BufferedSink(inner)

        async def main() -> str:
            result = await Engine(sink=sink).run(GRAPH)
            await sink.aclose()
            return result.status

        assert run_virtual(main()) == "completed"
        assert sink.errors == 3
        assert [e.seq for e in inner.events] == [2, 4, 6]
        assert caplog.text.count("raised on") == 1  # logged once, then counted

    def test_events_after_aclose_are_dropped(self) -> None:
        inner = RecordingSink()
        sink = BufferedSink(inner)

        async def main() -> None:
            await Engine(sink=sink).run(GRAPH)
            await sink.aclose()
            await Engine(sink=sink).run(GRAPH)

        run_virtual(main())
        assert len(inner.events) == 6
        assert sink.dropped == 6

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"sink": object()}, "sink"),
            ({"sink": RecordingSink(), "maxsize": 0}, "maxsize"),
            ({"sink": RecordingSink(), "maxsize": True}, "maxsize"),
            ({"sink": RecordingSink(), "overflow": "drop"}, "overflow"),
        ],
    )
    def test_bad_arguments_are_refused_naming_the_field(
        self, kwargs: dict[str, object], field: str
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            BufferedSink(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
        assert repr(kwargs[field]) in str(info.value)

    def test_a_bad_overflow_is_refused_listing_the_three_choices(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            BufferedSink(RecordingSink(), overflow="wait")

        assert info.value.field == "overflow"
        assert info.value.value == "wait"
        for choice in ("'drop_oldest'", "'drop_newest'", "'block'"):
            assert choice in str(info.value)


class PeakSink(BufferedSink):
    """A BufferedSink that remembers the longest its queue ever was."""

    peak = 0

    def try_emit(self, event: Event) -> None:
        super().try_emit(event)
        self.peak = max(self.peak, self.queued)


FAN = 4  # b0..b3 run in parallel, between a and z


def _fan() -> Pipeline:
    pipeline = Pipeline("fan").with_stage("a", one_second)
    for k in range(FAN):
        pipeline = pipeline.with_stage(f"b{k}", one_second, dependencies=("a",))
    return pipeline.with_stage("z", one_second, dependencies=[f"b{k}" for k in range(FAN)])


FAN_GRAPH = _fan().build()
FAN_EVENTS = 2 + 2 * (FAN + 2)  # run.started/completed, and started/completed per stage
CHAIN = (
    Pipeline("chain")
    .with_stage("a", one_second)
    .with_stage("b", one_second, dependencies=("a",))
    .with_stage("c", one_second, dependencies=("b",))
    .build()
)


def _worker_tasks() -> list[asyncio.Task[object]]:
    """The engine's worker tasks (white box: found by their coroutine's name)."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "RunState.worker"
    ]


class TestBlock:
    def test_no_event_is_dropped_the_run_waits_and_the_queue_stays_bounded(self) -> None:
        async def run(overflow: str) -> tuple[float, PeakSink, SlowSink]:
            slow = SlowSink(delay=10.0)
            sink = PeakSink(slow, maxsize=2, overflow=overflow)
            result = await Engine(sink=sink).run(FAN_GRAPH)
            assert result.status == "completed"
            await sink.flush()
            await sink.aclose()
            return result.duration, sink, slow

        free, dropping, _ = run_virtual(run("drop_oldest"))
        blocked, sink, slow = run_virtual(run("block"))

        assert free == pytest.approx(3.0)
        assert dropping.dropped > 0  # the same load overflows a dropping sink
        assert [e.seq for e in slow.events] == list(range(1, FAN_EVENTS + 1))
        assert sink.dropped == 0
        assert sink.errors == 0
        assert sink.blocked > 0
        assert blocked > free + 10.0  # the stages waited for the sink (10 s per event)
        assert sink.maxsize < sink.peak <= sink.maxsize + FAN
        assert sink.queued == 0

    def test_a_stage_waits_before_it_starts_not_in_the_middle(self) -> None:
        slow = SlowSink(delay=10.0)
        sink = BufferedSink(slow, maxsize=1, overflow="block")

        async def main() -> RunResult:
            result = await Engine(sink=sink).run(CHAIN)
            await sink.aclose()
            return result

        result = run_virtual(main())
        spans = [(result[name].started or 0.0, result[name].ended or 0.0) for name in "abc"]
        # Each stage takes its 1 s; what the sink costs falls between the stages.
        assert [end - start for start, end in spans] == pytest.approx([1.0, 1.0, 1.0])
        assert spans[1][0] > spans[0][1] + 1.0
        assert sink.blocked == 2  # b and c each waited once
        assert [e.seq for e in slow.events] == list(range(1, 9))

    def test_only_a_blocking_sink_has_pressure(self) -> None:
        for overflow in ("drop_oldest", "drop_newest"):
            assert not hasattr(BufferedSink(RecordingSink(), overflow=overflow), "pressure")

        async def main() -> tuple[object, object]:
            sink = BufferedSink(RecordingSink(), maxsize=1, overflow="block")
            empty = sink.pressure()
            sink.try_emit(Event("custom.x", "r", "p", None, 1, 0.0))
            sink.try_emit(Event("custom.x", "r", "p", None, 2, 0.0))
            full = sink.pressure()
            await sink.aclose()
            return empty, full

        empty, full = run_virtual(main())
        assert empty is None
        assert isinstance(full, asyncio.Future)
        assert full.done()  # released when the queue drained

    def test_a_run_timing_out_while_waiting_on_the_sink_ends_cleanly(self) -> None:
        slow = SlowSink(delay=100.0)
        sink = BufferedSink(slow, maxsize=1, overflow="block")

        async def main() -> tuple[RunResult, set[asyncio.Task[object]]]:
            result = await Engine(sink=sink).run(CHAIN, timeout=5)
            await sink.aclose()
            return result, asyncio.all_tasks()

        result, remaining = run_virtual(main())
        assert result.status == "cancelled"
        assert isinstance(result.error, RunTimeoutError)
        assert result.duration == pytest.approx(5.0)
        assert result["a"].status == "completed"
        assert result["b"].status == "skipped"
        assert (result["b"].reason or "").startswith("not started")
        assert sink.blocked == 1
        assert len(remaining) == 1  # only main(): no worker left waiting
        assert [e.type for e in slow.events] == [
            "run.started",
            "stage.started",
            "stage.completed",
            "stage.skipped",
            "stage.skipped",
            "run.cancelled",
        ]
        assert sink.dropped == 0

    def test_cancelling_a_run_that_waits_on_the_sink_ends_cleanly(self) -> None:
        slow = SlowSink(delay=100.0)
        sink = BufferedSink(slow, maxsize=1, overflow="block")

        async def main() -> set[asyncio.Task[object]]:
            task = asyncio.create_task(Engine(sink=sink).run(CHAIN))
            await asyncio.sleep(2)
            assert sink.blocked == 1  # b waits for the sink
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await sink.flush()
            await sink.aclose()
            return asyncio.all_tasks()

        remaining = run_virtual(main())
        assert len(remaining) == 1
        assert [e.type for e in slow.events][-1] == "run.cancelled"
        assert slow.events[-1].data["skipped"] == 2
        assert sink.dropped == 0

    @pytest.mark.parametrize("queued", [False, True], ids=["alone", "another-stage-queued"])
    def test_a_stray_cancel_of_a_waiting_stage_fails_that_stage_and_the_run_goes_on(
        self, queued: bool
    ) -> None:
        slow = SlowSink(delay=100.0)
        sink = BufferedSink(slow, maxsize=1, overflow="block")
        # One slot: d waits in the queue, and the worker goes on with it after b.
        pipeline = (
            Pipeline("stray")
            .with_stage("a", one_second)
            .with_stage("b", one_second, dependencies=("a",))
            .with_stage("c", one_second, dependencies=("b",))
        )
        graph = (pipeline.with_stage("d", one_second) if queued else pipeline).build()
        engine = Engine(sink=sink, max_parallel=1, fail_fast=False)

        async def main() -> RunResult:
            task = asyncio.create_task(engine.run(graph))
            await asyncio.sleep(2)
            (worker,) = _worker_tasks()
            worker.cancel()  # not the run's doing
            result = await task
            await sink.aclose()
            return result

        result = run_virtual(main())
        assert result.status == "failed"
        assert isinstance(result["b"].error, StageCancelledError)
        assert result["b"].attempts == 0
        assert result["c"].status == "skipped"
        if queued:
            assert result["d"].status == "completed"
        assert sink.dropped == 0

    def test_aclose_wakes_stages_waiting_for_room(self) -> None:
        slow = SlowSink(delay=100.0)
        sink = BufferedSink(slow, maxsize=1, overflow="block")

        async def main() -> tuple[RunResult, float]:
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(Engine(sink=sink).run(CHAIN))
            await asyncio.sleep(2)
            assert sink.blocked == 1
            closing = asyncio.create_task(sink.aclose())
            result = await task
            await closing
            return result, loop.time()

        result, ended = run_virtual(main())
        assert result.status == "completed"
        assert result["b"].started == pytest.approx(2.0)  # not 100 s later
        # Delivered what was queued when closing; the later events were dropped.
        assert sink.dropped > 0
        assert len(slow.events) + sink.dropped == 8
        assert ended == pytest.approx(100.0 * len(slow.events))
