"""The event log: EventLogSink, Engine(event_log=...), follow_events and MemoryStore's events.

Everything runs on virtual time. The log is a MemoryStore, or a ``Log`` of this file: a
MemoryStore behind the three EventLog methods that records each ``append_events`` call
(when, which seqs) and can be made slow (each write awaits a virtual sleep) or failing
(its first writes raise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stageflow import (
    Engine,
    Event,
    EventLog,
    EventLogSink,
    EventType,
    Pipeline,
    RunStatus,
    StageContext,
    StageGraph,
    follow_events,
)
from stageflow._eventlog import check_event_log
from stageflow.adapters.memory import MemoryStore
from stageflow.errors import ConfigurationError
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import StoreOpener, VirtualWall, durably

RUN_ENDS = ("run.completed", "run.failed", "run.cancelled")


class Opaque:
    """A value JSON cannot hold: the log keeps its repr."""

    def __repr__(self) -> str:
        return "<opaque>"


class Log:
    """An EventLog over a MemoryStore that records its writes.

    Args:
        delay: virtual seconds each ``append_events`` call takes before it stores.
        failures: how many calls, from the first, raise instead of storing
            (``math.inf``: all of them).
    """

    def __init__(self, *, delay: float = 0.0, failures: float = 0) -> None:
        self.store = MemoryStore()
        self.delay = delay
        self.failures = failures
        self.calls: list[tuple[float, list[int]]] = []  # (when it began, seqs) of every call
        self.stored: list[tuple[float, list[int]]] = []  # (when it stored, seqs) of those that did

    async def append_events(self, events: Sequence[Event]) -> None:
        loop = asyncio.get_running_loop()
        seqs = [event.seq for event in events]
        self.calls.append((loop.time(), seqs))
        if self.delay:
            await asyncio.sleep(self.delay)
        if len(self.calls) <= self.failures:
            raise OSError("the event log is down")
        await self.store.append_events(events)
        self.stored.append((loop.time(), seqs))

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        return await self.store.read_events(run_id, after=after, limit=limit)

    async def last_event_seq(self, run_id: str) -> int:
        return await self.store.last_event_seq(run_id)


class CountingReads(MemoryStore):
    """A MemoryStore that counts ``read_events`` calls and records their arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int | None]] = []

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        self.reads.append((after, limit))
        return await super().read_events(run_id, after=after, limit=limit)


class SlowReads(MemoryStore):
    """A read takes its snapshot at once and comes back 0.5 s later (as a database's
    query may: a write can commit after the snapshot, before the read returns)."""

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        events = await super().read_events(run_id, after=after, limit=limit)
        await asyncio.sleep(0.5)
        return events


class Raising:
    """A sink that raises on every event."""

    def try_emit(self, event: Event) -> None:
        raise RuntimeError("the sink is down")

    async def emit(self, event: Event) -> None:
        raise RuntimeError("the sink is down")


class NoLastSeq(MemoryStore):
    """An event log whose ``last_event_seq`` raises (the database is down)."""

    async def last_event_seq(self, run_id: str) -> int:
        raise OSError("the event log is down")


# --------------------------------------------------------------------------- helpers


def normalised(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as JSON holds it: tuples as lists, anything else JSON lacks as its repr."""
    return json.loads(json.dumps(dict(data), default=repr))  # type: ignore[no-any-return]


def key(event: Event) -> tuple[Any, ...]:
    """Everything an event says, its data JSON-normalised: equal keys, equal events."""
    return (
        event.run_id,
        event.seq,
        str(event.type),
        event.pipeline,
        event.stage,
        event.ts,
        event.attempt,
        normalised(event.data),
    )


def event(seq: int, run_id: str = "r1", type_: str = "custom.note") -> Event:
    return Event(type_, run_id, "p", "s", seq, float(seq), 0, {"n": seq})


def seqs(events: Sequence[Event]) -> list[int]:
    return [e.seq for e in events]


def sleeper(seconds: float) -> Any:
    async def stage(ctx: StageContext) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    return stage


async def reporter(ctx: StageContext) -> dict[str, Any]:
    """Emits an event whose data JSON cannot hold as it is, then completes."""
    ctx.emit("progress", pair=(1, 2), nested={"t": (3, (4, 5))}, thing=Opaque(), n=1.5)
    await asyncio.sleep(1)
    return {"done": True}


def chain(n: int, seconds: float = 1.0, name: str = "chain") -> StageGraph:
    """s0 -> s1 -> ... -> s(n-1), each sleeping ``seconds``."""
    pipeline = Pipeline(name).with_stage("s0", sleeper(seconds))
    for i in range(1, n):
        pipeline = pipeline.with_stage(f"s{i}", sleeper(seconds), dependencies=(f"s{i - 1}",))
    return pipeline.build()


def fan(n: int) -> StageGraph:
    """n stages that complete at once, side by side."""
    pipeline = Pipeline("fan")
    for i in range(n):
        pipeline = pipeline.with_stage(f"s{i}", sleeper(0))
    return pipeline.build()


def reporting() -> StageGraph:
    return (
        Pipeline("reporting")
        .with_stage("report", reporter)
        .with_stage("after", sleeper(1), dependencies=("report",))
        .build()
    )


def approval() -> StageGraph:
    """draft -> approval (an input) -> send."""
    return (
        Pipeline("mail")
        .with_stage("draft", sleeper(1))
        .with_input("approval", schema=bool, dependencies=("draft",))
        .with_stage("send", sleeper(1), dependencies=("approval",))
        .build()
    )


class Flaky:
    """A stage that fails its first ``failures`` calls, then completes."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures

    async def __call__(self, ctx: StageContext) -> dict[str, Any]:
        await asyncio.sleep(1)
        if self.failures:
            self.failures -= 1
            raise ValueError("not yet")
        return {"ok": True}


def flaky_graph() -> StageGraph:
    return (
        Pipeline("flaky")
        .with_stage("first", sleeper(1))
        .with_stage("flaky", Flaky(), dependencies=("first",))
        .build()
    )


async def follow(
    log: EventLog, run_id: str, *, within: float = 100_000, **options: Any
) -> list[tuple[Event, float]]:
    """Every event ``follow_events`` yields, with the loop's time it came at; a follower
    that has not ended ``within`` seconds fails the test instead of hanging it."""
    loop = asyncio.get_running_loop()
    seen: list[tuple[Event, float]] = []
    async with asyncio.timeout(within):
        async with aclosing(follow_events(log, run_id, **options)) as events:
            async for e in events:
                seen.append((e, loop.time()))
    return seen


async def first_n(log: EventLog, run_id: str, n: int, **options: Any) -> list[Event]:
    """The first ``n`` events ``follow_events`` yields; then it disconnects."""
    got: list[Event] = []
    if n == 0:
        return got
    async with aclosing(follow_events(log, run_id, **options)) as events:
        async for e in events:
            got.append(e)
            if len(got) == n:
                break
    return got


# --------------------------------------------------------------------------- the engine


class TestTheEngineWritesEveryEventToTheLog:
    def test_a_durable_runs_events_are_all_in_the_log_when_run_returns(self) -> None:
        store, sink = MemoryStore(), RecordingSink()

        async def main() -> list[Event]:
            result = await Engine(store=store, event_log=store, sink=sink).run(
                reporting(), run_id="r1"
            )
            assert result.ok
            return await store.read_events("r1")  # nothing awaited between: already there

        logged = run_virtual(main())
        assert [key(e) for e in logged] == [key(e) for e in sink.events]
        assert seqs(logged) == list(range(1, len(sink.events) + 1))
        assert "checkpoint.saved" in [e.type for e in logged]  # a durable run's events too

    def test_data_comes_back_as_json_holds_it(self) -> None:
        store = MemoryStore()
        run_virtual(Engine(event_log=store).run(reporting(), run_id="r1"))
        logged = run_virtual(store.read_events("r1"))
        [progress] = [e for e in logged if e.type == "custom.progress"]
        assert dict(progress.data) == {
            "pair": [1, 2],
            "nested": {"t": [3, [4, 5]]},
            "thing": "<opaque>",
            "n": 1.5,
        }

    def test_a_run_without_a_store_is_logged_too(self) -> None:
        log, sink = MemoryStore(), RecordingSink()

        async def main() -> list[Event]:
            engine = Engine(event_log=log, sink=sink)
            assert engine.store is None
            result = await engine.run(reporting(), run_id="r1")
            assert result.ok
            return await log.read_events("r1")

        logged = run_virtual(main())
        assert [key(e) for e in logged] == [key(e) for e in sink.events]
        assert logged[-1].type == "run.completed"
        assert run_virtual(log.list_runs()) == []  # not durable: no run recorded

    def test_with_a_sink_too_both_get_every_event(self) -> None:
        log, sink = Log(), RecordingSink()

        async def main() -> None:
            await Engine(event_log=log, sink=sink).run(chain(3), run_id="r1")

        run_virtual(main())
        logged = run_virtual(log.read_events("r1"))
        assert len(sink.events) == 2 + 2 * 3
        assert [key(e) for e in logged] == [key(e) for e in sink.events]

    def test_a_failed_run_is_logged_to_its_run_failed(self) -> None:
        log = MemoryStore()

        async def main() -> list[Event]:
            result = await Engine(event_log=log).run(flaky_graph(), run_id="r1")
            assert result.status is RunStatus.FAILED
            return await log.read_events("r1")

        logged = run_virtual(main())
        assert logged[-1].type == "run.failed"
        assert "stage.failed" in [e.type for e in logged]

    def test_the_events_of_concurrent_runs_are_kept_apart(self) -> None:
        log = MemoryStore()

        async def main() -> None:
            engine = Engine(event_log=log)
            await asyncio.gather(*(engine.run(chain(2), run_id=f"r{i}") for i in range(5)))

        run_virtual(main())
        for i in range(5):
            logged = run_virtual(log.read_events(f"r{i}"))
            assert {e.run_id for e in logged} == {f"r{i}"}
            assert seqs(logged) == list(range(1, 7))

    def test_engine_event_log_is_the_sink_writing_and_engine_sink_the_one_given(self) -> None:
        log, sink = MemoryStore(), RecordingSink()
        engine = Engine(event_log=log, sink=sink)
        assert isinstance(engine.event_log, EventLogSink)
        assert engine.event_log.log is log
        assert engine.sink is sink
        assert Engine().event_log is None
        assert Engine(sink=sink).event_log is None

    def test_an_event_log_sink_given_is_used_as_it_is(self) -> None:
        log = Log()
        given_sink = EventLogSink(log, linger=7.0, max_batch=2)
        engine = Engine(event_log=given_sink)
        assert engine.event_log is given_sink

        run_virtual(engine.run(chain(1), run_id="r1"))
        assert all(len(batch) <= 2 for _, batch in log.calls)  # its max_batch
        assert given_sink.written == 4

    def test_replace_shares_the_event_log_sink(self) -> None:
        log, sink = MemoryStore(), RecordingSink()
        engine = Engine(event_log=log, sink=sink)
        other = engine.replace(max_parallel=1)
        assert other.event_log is engine.event_log
        assert other.sink is sink

        async def main() -> None:
            await engine.run(chain(1), run_id="a")
            await other.run(chain(1), run_id="b")

        run_virtual(main())
        assert engine.event_log is not None
        assert engine.event_log.written == 8
        assert [e.run_id for e in sink.events] == ["a"] * 4 + ["b"] * 4  # the sink: both too
        assert len(run_virtual(log.read_events("b"))) == 4

    def test_a_blocking_sink_still_holds_the_run_back_when_an_event_log_is_given(self) -> None:
        from stageflow import BufferedSink

        class SlowSink:
            def try_emit(self, event: Event) -> None:  # pragma: no cover - emit is used
                raise AssertionError("BufferedSink awaits emit")

            async def emit(self, event: Event) -> None:
                await asyncio.sleep(10)

        async def duration(event_log: EventLog | None) -> float:
            buffered = BufferedSink(SlowSink(), maxsize=1, overflow="block")
            result = await Engine(sink=buffered, event_log=event_log).run(chain(3))
            await buffered.aclose()
            return result.duration

        alone = run_virtual(duration(None))
        assert alone > 3.0  # held back: the sink's pace, not the stages'
        assert run_virtual(duration(MemoryStore())) == alone

    def test_a_raising_sink_given_alone_is_counted_in_sink_errors(self) -> None:
        result = run_virtual(Engine(sink=Raising()).run(chain(1)))
        assert result.ok
        assert result.sink_errors == 4

    def test_a_raising_sink_is_still_counted_in_sink_errors_when_an_event_log_is_given(
        self,
    ) -> None:
        log = MemoryStore()
        result = run_virtual(Engine(sink=Raising(), event_log=log).run(chain(1), run_id="r1"))
        assert result.ok
        assert len(run_virtual(log.read_events("r1"))) == 4  # the log gets everything
        assert result.sink_errors == 4


# --------------------------------------------------------------------------- resuming


class TestAResumedRunNumbersItsEventsOn:
    def test_a_run_that_waited_for_input_goes_on_from_the_last_stored_seq(
        self, open_store: StoreOpener
    ) -> None:
        graph = approval()
        sink = RecordingSink()

        async def scenario(store: Any) -> None:
            first = await Engine(store=store, event_log=store, sink=sink).run(graph, run_id="r1")
            assert first.status is RunStatus.WAITING
            waited = await store.last_event_seq("r1")
            assert (await store.read_events("r1"))[-1].type == "run.waiting"
            # Another process: a new engine, knowing only the store.
            other = Engine(store=store, event_log=store, sink=sink)
            await other.send("r1", "approval", True, graph=graph)
            result = await other.resume("r1", graph)
            assert result.ok
            logged = await store.read_events("r1")
            assert seqs(logged) == list(range(1, len(logged) + 1))  # no gap, no repeat
            resumed = [e for e in logged if e.seq > waited]
            assert resumed[0].type == "run.started"
            assert resumed[0].data.get("resumed") is True
            assert resumed[-1].type == "run.completed"
            assert [key(e) for e in logged] == [key(e) for e in sink.events]

        durably(open_store, scenario)

    def test_a_failed_run_resumed_goes_on_from_the_last_stored_seq(
        self, open_store: StoreOpener
    ) -> None:
        graph = flaky_graph()

        async def scenario(store: Any) -> None:
            engine = Engine(store=store, event_log=store)
            assert (await engine.run(graph, run_id="r1")).status is RunStatus.FAILED
            failed = await store.last_event_seq("r1")
            assert (await store.read_events("r1"))[-1].type == "run.failed"
            assert (await Engine(store=store, event_log=store).resume("r1", graph)).ok
            logged = await store.read_events("r1")
            assert seqs(logged) == list(range(1, len(logged) + 1))
            assert logged[failed].type == "run.started"  # seq failed + 1
            assert logged[-1].type == "run.completed"

        durably(open_store, scenario)

    def test_every_drive_numbers_on_and_no_seq_is_given_twice(self) -> None:
        graph = approval()
        sink = RecordingSink()

        async def scenario() -> list[Event]:
            store = MemoryStore()
            engine = Engine(store=store, event_log=store, sink=sink)
            await engine.run(graph, run_id="r1")
            for _ in range(3):  # resumes without the value: each waits again
                assert (await engine.resume("r1", graph)).status is RunStatus.WAITING
            await engine.send("r1", "approval", False)
            assert (await engine.resume("r1", graph)).ok
            return await store.read_events("r1")

        logged = run_virtual(scenario())
        assert [e.type for e in logged].count("run.started") == 5
        assert seqs(sink.events) == list(range(1, len(sink.events) + 1))  # strictly increasing
        assert [key(e) for e in logged] == [key(e) for e in sink.events]

    def test_events_still_waiting_in_the_engines_sink_are_counted(self) -> None:
        graph = approval()

        async def scenario() -> list[Event]:
            store = MemoryStore()
            engine = Engine(store=store, event_log=EventLogSink(store, linger=1000))
            assert (await engine.run(graph, run_id="r1")).status is RunStatus.WAITING
            stored = await store.last_event_seq("r1")
            # An event of the run that the sink holds, not written yet.
            sink = engine.event_log
            assert sink is not None
            sink.try_emit(Event("custom.note", "r1", "mail", None, stored + 3, 0.0))
            assert await store.last_event_seq("r1") == stored
            assert await sink.last_event_seq("r1") == stored + 3
            await engine.send("r1", "approval", True)
            assert (await engine.resume("r1", graph)).ok
            logged = await store.read_events("r1")
            assert logged[stored].seq == stored + 3  # the note, written with the rest
            assert logged[stored + 1].type == "run.started"
            assert logged[stored + 1].seq == stored + 4
            return logged

        logged = run_virtual(scenario())
        assert len(set(seqs(logged))) == len(logged)

    def test_a_log_that_cannot_say_its_last_seq_does_not_fail_the_resume(self) -> None:
        graph = flaky_graph()

        async def scenario() -> Any:
            store = MemoryStore()
            assert (await Engine(store=store).run(graph, run_id="r1")).status is RunStatus.FAILED
            return await Engine(store=store, event_log=NoLastSeq()).resume("r1", graph)

        assert run_virtual(scenario()).ok

    def test_a_resume_that_fails_on_the_log_leaves_the_run_free_to_resume(self) -> None:
        graph = flaky_graph()

        async def scenario() -> Any:
            store = MemoryStore()
            assert (await Engine(store=store).run(graph, run_id="r1")).status is RunStatus.FAILED
            with contextlib.suppress(OSError):
                await Engine(store=store, event_log=NoLastSeq()).resume("r1", graph)
            return await Engine(store=store).resume("r1", graph)  # no RunLeasedError

        assert run_virtual(scenario()).ok


class TestLastEventSeq:
    def test_the_sinks_includes_what_waits_and_the_logs_does_not(self) -> None:
        async def main() -> None:
            log = Log()
            await log.append_events([event(1), event(2)])
            sink = EventLogSink(log, linger=10)
            assert await sink.last_event_seq("r1") == 2
            sink.try_emit(event(5))
            sink.try_emit(event(1, run_id="other"))
            assert await sink.last_event_seq("r1") == 5
            assert await log.last_event_seq("r1") == 2
            assert await sink.last_event_seq("other") == 1
            assert await sink.last_event_seq("nobody") == 0
            await sink.flush()
            assert await log.last_event_seq("r1") == 5

        run_virtual(main())

    def test_a_memory_store_has_zero_for_an_unknown_run(self) -> None:
        assert run_virtual(MemoryStore().last_event_seq("nobody")) == 0


# --------------------------------------------------------------------------- batching


class TestBatching:
    def test_the_events_of_a_run_at_one_instant_are_written_in_one_call(self) -> None:
        log = Log()
        run_virtual(Engine(event_log=log).run(fan(20), run_id="r1"))
        assert [batch for _, batch in log.calls] == [list(range(1, 43))]

    def test_a_run_takes_one_call_per_instant_it_emits_at(self) -> None:
        log = Log()

        async def main() -> None:
            await Engine(event_log=EventLogSink(log, linger=0.5)).run(chain(3), run_id="r1")

        run_virtual(main())
        # Events at t = 0, 1, 2 and 3 (the last instant's written by the run's flush).
        assert log.calls == [(0.5, [1, 2]), (1.5, [3, 4]), (2.5, [5, 6]), (3.0, [7, 8])]

    def test_nothing_is_written_before_the_linger_has_passed(self) -> None:
        log = Log()

        async def main() -> None:
            sink = EventLogSink(log, linger=5)
            sink.try_emit(event(1))
            await asyncio.sleep(3)
            sink.try_emit(event(2))  # joins the batch: linger counts from its first event
            await asyncio.sleep(1.99)
            assert log.calls == []
            assert await sink.read_events("r1") == []  # what waits is not seen
            await asyncio.sleep(0.02)
            assert log.calls == [(5.0, [1, 2])]
            assert sink.written == 2
            sink.try_emit(event(3))  # a new batch (at 5.01), its own linger
            await asyncio.sleep(4.98)
            assert len(log.calls) == 1
            await sink.flush()  # before its linger is up: written at once

        run_virtual(main())
        assert log.calls[-1] == (pytest.approx(9.99), [3])

    def test_max_batch_events_waiting_are_written_at_once(self) -> None:
        log = Log()

        async def main() -> None:
            sink = EventLogSink(log, linger=100, max_batch=3)
            for seq in range(1, 8):
                sink.try_emit(event(seq))
            await asyncio.sleep(50)
            assert log.calls == [(0.0, [1, 2, 3]), (0.0, [4, 5, 6])]  # full: no linger
            for seq in range(8, 10):  # the batch that waits fills up: written at once
                sink.try_emit(event(seq))
            await asyncio.sleep(1)
            assert log.calls[-1] == (50.0, [7, 8, 9])  # not at 100, when its linger is up
            await sink.flush()

        run_virtual(main())
        assert sum(len(batch) for _, batch in log.calls) == 9

    def test_flush_writes_at_once_and_returns_when_written(self) -> None:
        log = Log(delay=2)

        async def main() -> float:
            loop = asyncio.get_running_loop()
            sink = EventLogSink(log, linger=100)
            await sink.flush()  # nothing waits: returns at once
            sink.try_emit(event(1))
            await sink.flush()
            assert await log.read_events("r1") == [event(1)]
            await sink.flush()
            return loop.time()

        assert run_virtual(main()) == 2.0
        assert log.calls == [(0.0, [1])]

    def test_max_batch_splits_a_runs_events_in_seq_order(self) -> None:
        log = Log()
        run_virtual(Engine(event_log=EventLogSink(log, max_batch=4)).run(fan(10), run_id="r1"))
        batches = [batch for _, batch in log.calls]
        assert all(len(batch) <= 4 for batch in batches)
        assert [seq for batch in batches for seq in batch] == list(range(1, 23))
        assert len(batches) == math.ceil(22 / 4)

    def test_beyond_max_pending_the_oldest_are_dropped_and_counted(self) -> None:
        log = Log()

        async def main() -> None:
            sink = EventLogSink(log, linger=10, max_pending=3)
            for seq in range(1, 6):
                sink.try_emit(event(seq))
            assert sink.dropped == 2
            await sink.flush()
            assert sink.written == 3
            assert sink.dropped == 2

        run_virtual(main())
        assert seqs(run_virtual(log.read_events("r1"))) == [3, 4, 5]

    def test_max_pending_keeps_the_end_of_a_runs_events(self) -> None:
        log = Log()

        async def main() -> EventLogSink:
            sink = EventLogSink(log, linger=10, max_pending=5)
            assert (await Engine(event_log=sink).run(fan(10), run_id="r1")).ok
            return sink

        sink = run_virtual(main())
        logged = run_virtual(log.read_events("r1"))
        assert seqs(logged) == list(range(18, 23))
        assert logged[-1].type == "run.completed"
        assert (sink.written, sink.dropped) == (5, 17)

    def test_max_pending_while_a_batch_is_written_keeps_the_newest(self) -> None:
        log = Log(delay=10)

        async def main() -> EventLogSink:
            sink = EventLogSink(log, linger=0, max_pending=2)
            sink.try_emit(event(1))
            sink.try_emit(event(2))
            await asyncio.sleep(1)  # [1, 2] is being written
            sink.try_emit(event(3))  # three wait or are written: the oldest goes
            await sink.flush()
            return sink

        sink = run_virtual(main())
        stored = seqs(run_virtual(log.read_events("r1")))
        assert stored[-1] == 3  # the newest is kept
        assert sink.written + sink.dropped == 3
        assert sink.written == len(stored)


# --------------------------------------------------------------------------- failures


class TestAFailingLog:
    def test_a_run_completes_with_its_normal_result_when_every_write_fails(self) -> None:
        log = Log(failures=math.inf)
        sink = RecordingSink()

        async def main() -> Any:
            engine = Engine(event_log=log, sink=sink)
            return await engine.run(chain(2), run_id="r1"), engine.event_log

        result, writer = run_virtual(main())
        assert result.ok
        assert result["s1"].data == {"slept": 1.0}
        assert result.sink_errors == 0  # the log never raises into the run
        assert len(sink.events) == 6  # the other sink got everything
        assert writer.written == 0
        assert writer.dropped == 6
        assert writer.errors == len(log.calls) == 3 * 3  # 3 batches, each tried 3 times
        assert run_virtual(log.read_events("r1")) == []

    def test_the_first_failure_is_logged_once_and_the_others_counted(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        log = Log(failures=math.inf)

        async def main() -> EventLogSink:
            engine = Engine(event_log=log)
            for run_id in ("r1", "r2"):
                assert (await engine.run(chain(2), run_id=run_id)).ok
            assert engine.event_log is not None
            return engine.event_log

        writer = run_virtual(main())
        records = [r for r in caplog.records if "failed to store" in r.getMessage()]
        assert len(records) == 1
        assert records[0].levelname == "ERROR"
        assert records[0].exc_info is not None
        assert isinstance(records[0].exc_info[1], OSError)
        assert writer.errors == 18

    def test_a_batch_is_tried_again_and_written_when_the_log_recovers(self) -> None:
        log = Log(failures=2)

        async def main() -> EventLogSink:
            sink = EventLogSink(log, linger=1)
            sink.try_emit(event(1))
            sink.try_emit(event(2))
            await sink.flush()
            return sink

        sink = run_virtual(main())
        assert [batch for _, batch in log.calls] == [[1, 2]] * 3
        assert seqs(run_virtual(log.read_events("r1"))) == [1, 2]
        assert (sink.errors, sink.written, sink.dropped) == (2, 2, 0)

    def test_a_run_whose_log_recovers_has_every_event_in_the_log(self) -> None:
        log = Log(failures=2)
        sink = RecordingSink()

        async def main() -> None:
            assert (await Engine(event_log=log, sink=sink).run(chain(3), run_id="r1")).ok

        run_virtual(main())
        logged = run_virtual(log.read_events("r1"))
        assert [key(e) for e in logged] == [key(e) for e in sink.events]

    def test_a_batch_is_dropped_after_three_failures_in_a_row(self) -> None:
        log = Log(failures=3)

        async def main() -> EventLogSink:
            sink = EventLogSink(log, linger=1)
            sink.try_emit(event(1))
            sink.try_emit(event(2))
            await sink.flush()
            assert (sink.errors, sink.written, sink.dropped) == (3, 0, 2)
            sink.try_emit(event(3))  # the next batch: the log works again
            await sink.flush()
            return sink

        sink = run_virtual(main())
        assert [batch for _, batch in log.calls] == [[1, 2]] * 3 + [[3]]
        assert seqs(run_virtual(log.read_events("r1"))) == [3]
        assert (sink.errors, sink.written, sink.dropped) == (3, 1, 2)

    def test_failures_count_in_a_row_only(self) -> None:
        class Alternating(Log):
            async def append_events(self, events: Sequence[Event]) -> None:
                self.failures = len(self.calls) + 1 if len(self.calls) % 2 == 0 else 0
                await super().append_events(events)

        log = Alternating()

        async def main() -> EventLogSink:
            sink = EventLogSink(log, linger=0)
            for seq in range(1, 5):
                sink.try_emit(event(seq))
                await sink.flush()  # each: one failure, then written
            return sink

        sink = run_virtual(main())
        assert seqs(run_virtual(log.read_events("r1"))) == [1, 2, 3, 4]
        assert (sink.errors, sink.written, sink.dropped) == (4, 4, 0)

    def test_the_sink_goes_on_writing_after_a_drop(self) -> None:
        log = Log(failures=3)
        sink = RecordingSink()

        async def main() -> EventLogSink:
            engine = Engine(event_log=EventLogSink(log, linger=0.1), sink=sink)
            assert (await engine.run(chain(3), run_id="r1")).ok
            assert engine.event_log is not None
            return engine.event_log

        writer = run_virtual(main())
        logged = run_virtual(log.read_events("r1"))
        assert seqs(logged) == [3, 4, 5, 6, 7, 8]  # the first batch (t=0) dropped
        assert (writer.errors, writer.dropped, writer.written) == (3, 2, 6)


class TestTheEndOfARunsWrite:
    def test_a_run_returns_once_its_own_events_are_written_not_when_others_stop(self) -> None:
        async def chatty(ctx: StageContext) -> None:
            for i in range(10_000):
                ctx.emit("tick", i=i)
                await asyncio.sleep(0.01)

        busy = Pipeline("busy").with_stage("chatty", chatty).build()

        async def main() -> float:
            loop = asyncio.get_running_loop()
            engine = Engine(event_log=Log(delay=0.02))
            other = asyncio.ensure_future(engine.run(busy, run_id="busy"))
            assert (await engine.run(chain(1), run_id="short")).ok
            returned = loop.time()
            await other
            return returned

        assert run_virtual(main()) < 2.0  # the run ends at 1.0; its write takes 0.02


class TestASlowLog:
    def test_it_never_delays_the_stages_but_run_returns_after_the_write(self) -> None:
        log = Log(delay=30)
        sink = RecordingSink()

        async def main() -> tuple[Any, float]:
            loop = asyncio.get_running_loop()
            engine = Engine(event_log=log, sink=sink, clock=VirtualWall())
            result = await engine.run(chain(3), run_id="r1")
            return result, loop.time()

        result, returned = run_virtual(main())
        assert result.ok
        assert result.duration == 3.0
        assert [(result[f"s{i}"].started, result[f"s{i}"].ended) for i in range(3)] == [
            (0.0, 1.0),
            (1.0, 2.0),
            (2.0, 3.0),
        ]
        assert [e.ts - sink.events[0].ts for e in sink.events if e.type == "stage.started"] == [
            0.0,
            1.0,
            2.0,
        ]
        # The first write takes till 30.05; what came meanwhile is the second, which
        # the run's end (at 3) waits for.
        assert log.calls == [(0.05, [1, 2]), (30.05, [3, 4, 5, 6, 7, 8])]
        assert returned == log.stored[-1][0] == 60.05
        assert seqs(run_virtual(log.read_events("r1"))) == list(range(1, 9))


# --------------------------------------------------------------------------- cancellation


class TestACancelledRun:
    @pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
    def test_its_run_cancelled_is_written_before_the_cancel_propagates(self, durable: bool) -> None:
        log = Log(delay=5)

        async def main() -> list[Event]:
            store = MemoryStore() if durable else None
            engine = Engine(store=store, event_log=log)
            task = asyncio.ensure_future(engine.run(chain(1, 100), run_id="r1"))
            await asyncio.sleep(10)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return await log.read_events("r1")  # at once, as the cancel arrives
            raise AssertionError("the run was not cancelled")

        logged = run_virtual(main())
        assert logged[-1].type == "run.cancelled"
        assert "stage.cancelled" in [e.type for e in logged]
        assert seqs(logged) == list(range(1, len(logged) + 1))

    def test_a_cancel_during_the_final_write_waits_for_it(self) -> None:
        log = Log(delay=10)

        async def main() -> tuple[float, list[Event]]:
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(Engine(event_log=log).run(chain(1), run_id="r1"))
            await asyncio.sleep(2)  # the run has ended; its events are being written
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return loop.time(), await log.read_events("r1")

        cancelled_at, logged = run_virtual(main())
        assert logged[-1].type == "run.completed"
        assert cancelled_at == log.stored[-1][0]

    def test_a_run_that_times_out_has_its_run_cancelled_written(self) -> None:
        log = Log(delay=5)

        async def main() -> tuple[Any, list[Event]]:
            result = await Engine(event_log=log).run(chain(1, 100), run_id="r1", timeout=3)
            return result, await log.read_events("r1")

        result, logged = run_virtual(main())
        assert result.status is RunStatus.CANCELLED
        assert logged[-1].type == "run.cancelled"


# --------------------------------------------------------------------------- following


class TestFollowEvents:
    def test_it_yields_the_stored_events_in_order_and_ends_after_run_completed(self) -> None:
        log = MemoryStore()

        async def main() -> list[Event]:
            await Engine(event_log=log).run(chain(3), run_id="r1")
            return [e for e, _ in await follow(log, "r1")]

        followed = run_virtual(main())
        assert followed == run_virtual(log.read_events("r1"))
        assert seqs(followed) == list(range(1, 9))
        assert followed[-1].type == "run.completed"

    @pytest.mark.parametrize("end", RUN_ENDS)
    def test_it_ends_after_the_runs_end_when_nothing_follows_it(self, end: str) -> None:
        async def main() -> tuple[list[Event], list[Event]]:
            log = CountingReads()
            await log.append_events(
                [
                    Event("run.started", "r1", "p", None, 1, 0.0),
                    event(2),
                    Event(end, "r1", "p", None, 3, 0.0),
                ]
            )
            # The run's end is an event without a stage; a stage's of that type is none.
            await log.append_events(
                [Event(end, "r2", "p", "s", 1, 0.0), Event(end, "r2", "p", None, 2, 0.0)]
            )
            return [e for e, _ in await follow(log, "r1")], [e for e, _ in await follow(log, "r2")]

        r1, r2 = run_virtual(main())
        assert seqs(r1) == [1, 2, 3]
        assert seqs(r2) == [1, 2]

    @pytest.mark.parametrize("end", RUN_ENDS)
    def test_events_stored_after_the_runs_end_are_followed_to_the_next_end(self, end: str) -> None:
        async def main() -> list[Event]:
            log = MemoryStore()
            await log.append_events(
                [
                    Event("run.started", "r1", "p", None, 1, 0.0),
                    Event(end, "r1", "p", None, 2, 0.0),
                    Event("run.started", "r1", "p", None, 3, 0.0),  # a later drive
                    event(4),
                    Event("run.completed", "r1", "p", None, 5, 0.0),
                ]
            )
            return [e for e, _ in await follow(log, "r1", batch=2)]

        assert seqs(run_virtual(main())) == [1, 2, 3, 4, 5]

    def test_a_failed_run_resumed_is_followed_through_both_drives(self) -> None:
        graph = flaky_graph()

        async def main() -> tuple[list[Event], list[Event], list[Event]]:
            store = MemoryStore()
            engine = Engine(store=store, event_log=store)
            assert engine.event_log is not None
            caught_up = asyncio.ensure_future(follow(engine.event_log, "r1", poll=3600))
            assert (await engine.run(graph, run_id="r1")).status is RunStatus.FAILED
            first = [e for e, _ in await caught_up]  # ended at run.failed: nothing after it
            assert (await engine.resume("r1", graph)).ok
            whole = [e for e, _ in await follow(engine.event_log, "r1")]
            return first, whole, await store.read_events("r1")

        first, whole, logged = run_virtual(main())
        assert first[-1].type == "run.failed"
        assert first == logged[: len(first)]
        assert whole == logged
        assert [e.type for e in whole].count("run.started") == 2
        assert whole[-1].type == "run.completed"

    @pytest.mark.parametrize("end", ["cancelled", "failed"])
    def test_it_ends_after_a_run_failed_or_cancelled(self, end: str) -> None:
        graph = flaky_graph() if end == "failed" else chain(1, 100)

        async def main() -> list[Event]:
            engine = Engine(event_log=MemoryStore())
            assert engine.event_log is not None
            following = asyncio.ensure_future(follow(engine.event_log, "r1", poll=3600))
            task = asyncio.ensure_future(engine.run(graph, run_id="r1"))
            if end == "cancelled":
                await asyncio.sleep(10)
                task.cancel()
            await asyncio.wait([task])
            return [e for e, _ in await following]

        followed = run_virtual(main())
        assert followed[-1].type == f"run.{end}"

    def test_it_follows_a_waiting_run_on_into_its_resumed_drive(self) -> None:
        graph = approval()

        async def main() -> tuple[list[tuple[Event, float]], float]:
            loop = asyncio.get_running_loop()
            store = MemoryStore()
            engine = Engine(store=store, event_log=store)
            assert engine.event_log is not None
            following = asyncio.ensure_future(follow(engine.event_log, "r1", poll=3600))
            assert (await engine.run(graph, run_id="r1")).status is RunStatus.WAITING
            await asyncio.sleep(600)
            assert not following.done()  # run.waiting is no end
            await engine.send("r1", "approval", True)
            resumed_at = loop.time()
            assert (await engine.resume("r1", graph)).ok
            return await following, resumed_at

        followed, resumed_at = run_virtual(main())
        types = [e.type for e, _ in followed]
        assert types.count("run.started") == 2
        assert "run.waiting" in types
        assert types[-1] == "run.completed"
        assert seqs([e for e, _ in followed]) == list(range(1, len(followed) + 1))
        assert followed[-1][1] == resumed_at + 1  # the resumed drive's pace, not poll's

    def test_on_the_engines_event_log_it_wakes_at_each_write(self) -> None:
        log = Log()

        async def main() -> list[tuple[Event, float]]:
            engine = Engine(event_log=log)
            assert engine.event_log is not None
            following = asyncio.ensure_future(follow(engine.event_log, "r1", poll=3600))
            await engine.run(chain(3, 10), run_id="r1")
            return await following

        followed = run_virtual(main())
        stored_at = {seq: at for at, batch in log.stored for seq in batch}
        assert [(e.seq, at) for e, at in followed] == sorted(stored_at.items())
        assert followed[-1][1] == 30.0  # written by the run's flush, followed at once

    def test_a_write_that_lands_during_a_read_is_not_missed(self) -> None:
        async def main() -> list[tuple[Event, float]]:
            engine = Engine(event_log=SlowReads())
            assert engine.event_log is not None
            task = asyncio.ensure_future(engine.run(chain(1), run_id="r1"))
            await asyncio.sleep(0.9)  # reads from 0.9 to 1.4; the last write lands at 1.0
            followed = await follow(engine.event_log, "r1", poll=3600)
            await task
            return followed

        followed = run_virtual(main())
        assert followed[-1][0].type == "run.completed"
        assert followed[-1][1] < 10

    def test_on_a_plain_log_it_reads_again_every_poll(self) -> None:
        log = CountingReads()

        async def main() -> list[tuple[Event, float]]:
            following = asyncio.ensure_future(follow(log, "r1", poll=3))
            await Engine(event_log=log).run(chain(1, 10), run_id="r1")
            return await following

        followed = run_virtual(main())
        # Written at 0.05 (the start) and 10 (the end); read at 0, 3, 6, 9 and 12.
        assert [(e.type, at) for e, at in followed] == [
            ("run.started", 3.0),
            ("stage.started", 3.0),
            ("stage.completed", 12.0),
            ("run.completed", 12.0),
        ]
        # Reads at 0, 3, 6, 9 and 12, then one to see that nothing follows the end.
        assert log.reads == [(0, 500), (0, 500), (2, 500), (2, 500), (2, 500), (4, 1)]

    @pytest.mark.parametrize("batch", [1, 3, 8, 11, 22, 500])
    def test_batch_pages_through_everything(self, batch: int) -> None:
        log = CountingReads()

        async def main() -> list[Event]:
            await Engine(event_log=log).run(fan(10), run_id="r1")
            log.reads.clear()
            return [e for e, _ in await follow(log, "r1", batch=batch, poll=3600)]

        followed = run_virtual(main())
        assert seqs(followed) == list(range(1, 23))
        # A page at a time, then one read to see that nothing follows the run's end.
        assert log.reads == [(after, batch) for after in range(0, 22, batch)] + [(22, 1)]

    def test_after_goes_on_after_that_seq(self) -> None:
        log = MemoryStore()

        async def main() -> list[Event]:
            await Engine(event_log=log).run(chain(3), run_id="r1")
            return [e for e, _ in await follow(log, "r1", after=5)]

        assert seqs(run_virtual(main())) == [6, 7, 8]

    @settings(max_examples=40, deadline=None)
    @given(
        stages=st.integers(1, 6),
        k=st.integers(0, 30),
        batch=st.integers(1, 7),
        live=st.booleans(),
    )
    def test_reconnecting_after_the_last_seq_seen_misses_and_repeats_nothing(
        self, stages: int, k: int, batch: int, live: bool
    ) -> None:
        """Disconnect after k events, follow again with after=the last seq seen: the two
        parts make the whole, whether the run is over or still going (``live``)."""

        async def main() -> tuple[list[Event], list[Event]]:
            log = MemoryStore()
            engine = Engine(event_log=log)
            assert engine.event_log is not None
            graph = chain(stages)
            task = asyncio.ensure_future(engine.run(graph, run_id="r1"))
            if not live:
                await task
            total = 2 + 2 * stages
            head = await first_n(engine.event_log, "r1", k % total, batch=batch)
            after = head[-1].seq if head else 0  # k % total: the head never holds the end
            tail = [e for e, _ in await follow(engine.event_log, "r1", after=after, batch=batch)]
            await task
            return head + tail, await log.read_events("r1")

        joined, full = run_virtual(main())
        assert [key(e) for e in joined] == [key(e) for e in full]
        assert full[-1].type == "run.completed"


# --------------------------------------------------------------------------- loops


class TestOneEventLoopAfterAnother:
    def test_the_same_engine_and_log_serve_one_asyncio_run_after_another(self) -> None:
        log = MemoryStore()
        engine = Engine(event_log=EventLogSink(log, linger=0))
        assert engine.event_log is not None
        writer = engine.event_log

        async def drive(run_id: str, seconds: float = 1.0) -> list[Event]:
            # On the real loop, `within` is real seconds: far less than poll's hour.
            following = asyncio.ensure_future(follow(writer, run_id, poll=3600, within=30))
            assert (await engine.run(chain(2, seconds), run_id=run_id)).ok
            return [e for e, _ in await following]

        followed = [
            run_virtual(drive("a")),
            asyncio.run(drive("b", 0)),  # a real loop: the follower wakes at writes, not polls
            run_virtual(drive("c")),
        ]
        for run_id, events in zip("abc", followed, strict=True):
            assert seqs(events) == list(range(1, 7))
            assert {e.run_id for e in events} == {run_id}
            assert seqs(run_virtual(log.read_events(run_id))) == list(range(1, 7))
        assert writer.written == 18

    def test_a_default_sink_serves_virtual_loops_one_after_another(self) -> None:
        log = Log()
        engine = Engine(event_log=log)
        for run_id in ("a", "b", "c"):
            run_virtual(engine.run(chain(1), run_id=run_id))
            assert seqs(run_virtual(log.read_events(run_id))) == [1, 2, 3, 4]


# --------------------------------------------------------------------------- bad input


def refused(error: pytest.ExceptionInfo[ConfigurationError], field: str, value: object) -> None:
    assert error.value.field == field
    assert error.value.value is value or error.value.value == value
    assert repr(value) in str(error.value)
    assert field in str(error.value)


NOT_LOGS = [
    pytest.param(object(), id="object"),
    pytest.param(MemoryStore, id="the-class"),
    pytest.param(RecordingSink(), id="a-plain-sink"),
    pytest.param("sqlite:///runs.db", id="a-url"),
]


class TestBadInput:
    @pytest.mark.parametrize("bad", NOT_LOGS)
    def test_an_engine_refuses_what_is_no_event_log(self, bad: object) -> None:
        with pytest.raises(ConfigurationError) as raised:
            Engine(event_log=bad)  # type: ignore[arg-type]
        assert raised.value.value is bad
        assert repr(bad) in str(raised.value)
        assert "event_log" in str(raised.value)

    @pytest.mark.parametrize("bad", NOT_LOGS[:2])
    def test_the_engines_error_names_the_event_log_field(self, bad: object) -> None:
        with pytest.raises(ConfigurationError) as raised:
            Engine(event_log=bad)  # type: ignore[arg-type]
        refused(raised, "event_log", bad)

    @pytest.mark.parametrize("bad", NOT_LOGS)
    def test_an_event_log_sink_refuses_what_is_no_event_log(self, bad: object) -> None:
        with pytest.raises(ConfigurationError) as raised:
            EventLogSink(bad)  # type: ignore[arg-type]
        refused(raised, "log", bad)

    def test_check_event_log_names_the_field_given_and_each_method_counts(self) -> None:
        class TwoOfThree:
            async def append_events(self, events: Any) -> None: ...

            async def read_events(self, run_id: str, **kw: Any) -> list[Event]:
                return []

            last_event_seq = 0  # there, but not a method

        bad = TwoOfThree()
        with pytest.raises(ConfigurationError) as raised:
            check_event_log(bad)
        refused(raised, "event_log", bad)
        with pytest.raises(ConfigurationError) as raised:
            check_event_log(bad, "store")
        refused(raised, "store", bad)
        check_event_log(Log())  # has all three: accepted
        check_event_log(MemoryStore())

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("linger", -1),
            ("linger", "x"),
            ("linger", math.nan),
            ("linger", math.inf),
            ("linger", None),
            ("max_batch", 0),
            ("max_batch", -3),
            ("max_batch", "x"),
            ("max_batch", 1.5),
            ("max_batch", True),
            ("max_pending", 0),
            ("max_pending", "x"),
            ("max_pending", 2.0),
        ],
    )
    def test_an_event_log_sink_refuses_bad_options(self, field: str, value: object) -> None:
        with pytest.raises(ConfigurationError) as raised:
            EventLogSink(MemoryStore(), **{field: value})
        assert raised.value.field == field
        assert repr(value) in str(raised.value)
        if not (isinstance(value, float) and math.isnan(value)):
            assert raised.value.value == value

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("after", -1),
            ("after", "x"),
            ("after", 1.0),
            ("poll", 0),
            ("poll", -1),
            ("poll", "x"),
            ("batch", 0),
            ("batch", "x"),
        ],
    )
    def test_follow_events_refuses_bad_options(self, field: str, value: object) -> None:
        async def main() -> None:
            async with aclosing(follow_events(MemoryStore(), "r1", **{field: value})) as events:
                await anext(events)

        with pytest.raises(ConfigurationError) as raised:
            run_virtual(main())
        refused(raised, field, value)

    @pytest.mark.parametrize("bad", NOT_LOGS)
    def test_follow_events_refuses_what_is_no_event_log(self, bad: object) -> None:
        async def main() -> None:
            async with aclosing(follow_events(bad, "r1")) as events:  # type: ignore[arg-type]
                await anext(events)

        with pytest.raises(ConfigurationError) as raised:
            run_virtual(main())
        refused(raised, "log", bad)

    def test_append_events_refuses_a_single_event(self) -> None:
        store = MemoryStore()
        one = event(1)
        with pytest.raises(ConfigurationError) as raised:
            run_virtual(store.append_events(one))  # type: ignore[arg-type]
        assert raised.value.field == "events"
        assert raised.value.value is one
        assert run_virtual(store.read_events("r1")) == []

    @pytest.mark.parametrize("bad", [1, None, {"type": "run.started"}])
    def test_append_events_refuses_what_is_no_event_and_stores_none_of_the_batch(
        self, bad: object
    ) -> None:
        store = MemoryStore()
        with pytest.raises(ConfigurationError) as raised:
            run_virtual(store.append_events([event(1), bad]))  # type: ignore[list-item]
        refused(raised, "events", bad)
        assert run_virtual(store.read_events("r1")) == []

    def test_append_events_refuses_what_is_no_sequence(self) -> None:
        store = MemoryStore()
        with pytest.raises(ConfigurationError) as raised:
            run_virtual(store.append_events(iter([event(1)])))  # type: ignore[arg-type]
        assert raised.value.field == "events"

    @pytest.mark.parametrize(
        ("field", "value"), [("after", -1), ("after", "1"), ("limit", -1), ("limit", "x")]
    )
    def test_read_events_refuses_bad_arguments(self, field: str, value: object) -> None:
        store = MemoryStore()
        with pytest.raises(ConfigurationError) as raised:
            run_virtual(store.read_events("r1", **{field: value}))
        refused(raised, field, value)


# --------------------------------------------------------------------------- MemoryStore


class TestMemoryStoreEvents:
    def test_the_first_write_of_a_seq_wins(self) -> None:
        async def main() -> list[Event]:
            store = MemoryStore()
            await store.append_events([event(1), event(2)])
            await store.append_events([Event("custom.other", "r1", "p", None, 2, 9.0), event(3)])
            await store.append_events([event(1), event(2)])  # written twice: nothing changes
            return await store.read_events("r1")

        logged = run_virtual(main())
        assert [key(e) for e in logged] == [key(event(seq)) for seq in (1, 2, 3)]

    def test_read_events_takes_after_and_limit_and_keeps_runs_apart(self) -> None:
        async def main() -> None:
            store = MemoryStore()
            await store.append_events([event(s) for s in (3, 1, 2, 5)] + [event(4, "r2")])
            assert seqs(await store.read_events("r1")) == [1, 2, 3, 5]
            assert seqs(await store.read_events("r1", after=2)) == [3, 5]
            assert seqs(await store.read_events("r1", after=1, limit=2)) == [2, 3]
            assert await store.read_events("r1", limit=0) == []
            assert await store.read_events("r1", after=5) == []
            assert await store.read_events("nobody") == []
            assert await store.last_event_seq("r1") == 5
            assert await store.last_event_seq("r2") == 4
            await store.append_events([])  # nothing: fine
            await store.append_events((event(6),))  # any sequence
            assert await store.last_event_seq("r1") == 6

        run_virtual(main())

    def test_deleting_a_run_deletes_its_events(self) -> None:
        async def main() -> None:
            store = MemoryStore()
            await Engine(store=store, event_log=store).run(chain(1), run_id="r1")
            assert await store.last_event_seq("r1") == 5
            await store.delete_run("r1")
            assert await store.read_events("r1") == []
            assert await store.last_event_seq("r1") == 0

        run_virtual(main())

    def test_a_memory_store_is_an_event_log(self) -> None:
        assert isinstance(MemoryStore(), EventLog)
        assert isinstance(EventLogSink(MemoryStore()), EventLog)
        assert EventType.RUN_WAITING not in {EventType(t) for t in RUN_ENDS}
