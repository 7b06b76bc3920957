"""One clock: every timing decision of an engine goes through ``Engine(clock=...)``.

These tests run on a real event loop with a ManualClock that moves only when the
test moves it. Anything that timed itself on the loop instead (a timer, a sleep,
``asyncio.timeout``) would wait real seconds and trip the real-time guard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from stageflow import (
    CircuitBreakerPolicy,
    CircuitOpenError,
    Engine,
    EventType,
    LoggingInterceptor,
    MetricsInterceptor,
    Pipeline,
    RetryPolicy,
    RunLeasedError,
    StageContext,
    StageTimeoutError,
    TracingInterceptor,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import ManualClock, RecordingSink

from ._otel import Metrics, Traces

T = TypeVar("T")
GUARD = 5.0  # real seconds: far more than any of these tests needs on the manual clock


def real(main: Awaitable[T]) -> T:
    """Run on a real event loop, failing fast if anything waits on real time."""

    async def guarded() -> T:
        return await asyncio.wait_for(main, GUARD)

    return asyncio.run(guarded())


async def forever(ctx: StageContext) -> None:
    await asyncio.Event().wait()


class TestOneClock:
    def test_a_stage_timeout_fires_on_the_engines_clock(self) -> None:
        clock = ManualClock()
        graph = Pipeline().with_stage("slow", forever, timeout=5).build()

        async def main() -> Any:
            run = asyncio.ensure_future(Engine(clock=clock).run(graph))
            await clock.pass_time(4.9)
            assert not run.done()  # 4.9 s of the clock: not yet
            await clock.pass_time(0.1)
            return await run

        result = real(main())

        assert isinstance(result["slow"].error, StageTimeoutError)
        assert result["slow"].duration == 5.0  # measured on the same clock

    def test_retry_backoff_waits_on_the_engines_clock(self) -> None:
        clock = ManualClock()
        calls: list[float] = []

        async def flaky(ctx: StageContext) -> dict[str, int]:
            calls.append(clock.monotonic())
            if len(calls) == 1:
                raise OSError("first call fails")
            return {"attempt": ctx.attempt}

        policy = RetryPolicy(attempts=2, backoff="fixed", base=10, jitter=False)
        graph = Pipeline().with_stage("flaky", flaky, retry=policy).build()

        async def main() -> Any:
            run = asyncio.ensure_future(Engine(clock=clock).run(graph))
            await clock.pass_time(9)
            assert len(calls) == 1
            assert not run.done()
            await clock.pass_time(1)
            return await run

        result = real(main())

        assert result["flaky"].data == {"attempt": 2}
        assert calls[1] - calls[0] == 10.0
        assert result.duration == 10.0

    def test_a_breaker_recovers_on_the_engines_clock(self) -> None:
        clock = ManualClock()
        failing = [True]

        async def guarded(ctx: StageContext) -> None:
            if failing[0]:
                raise OSError("down")

        policy = CircuitBreakerPolicy(failure_threshold=1, recovery_timeout=30)
        graph = Pipeline().with_stage("guarded", guarded, circuit_breaker=policy).build()
        engine = Engine(clock=clock)

        async def main() -> list[Any]:
            first = await engine.run(graph)  # fails: the breaker opens
            failing[0] = False
            await clock.pass_time(29)
            refused = await engine.run(graph)  # 29 s later: still open
            await clock.pass_time(1)
            probe = await engine.run(graph)  # 30 s: a probe gets through
            return [first, refused, probe]

        first, refused, probe = real(main())

        assert isinstance(first["guarded"].error, OSError)
        error = refused["guarded"].error
        assert isinstance(error, CircuitOpenError)
        assert error.retry_after == pytest.approx(1.0)
        assert probe.ok

    def test_a_durable_runs_lease_is_renewed_on_the_engines_clock(self) -> None:
        clock = ManualClock()
        store = MemoryStore(clock=clock)
        sink = RecordingSink()
        gate = asyncio.Event()

        async def waits(ctx: StageContext) -> None:
            await gate.wait()

        graph = Pipeline().with_stage("waits", waits).build()
        engine = Engine(clock=clock, store=store, lease_ttl=30, sink=sink)

        async def expiry(run_id: str) -> float:
            with pytest.raises(RunLeasedError) as leased:
                await store.acquire_lease(run_id, "someone else", 30)
            return leased.value.expires_at

        async def main() -> list[float]:
            run = asyncio.ensure_future(engine.run(graph, run_id="r1"))
            await clock.pass_time(0)
            start = clock.now
            before = await expiry("r1")
            await clock.pass_time(10)  # a third of the lease's life: renewed
            after = await expiry("r1")
            gate.set()
            result = await run
            assert result.ok
            return [start, before, after]

        start, before, after = real(main())

        assert before == start + 30
        assert after == start + 10 + 30
        started = next(e for e in sink.events if e.type == EventType.RUN_STARTED)
        assert started.ts == start  # event timestamps come from the clock's wall time

    def test_the_run_timeout_fires_on_the_engines_clock(self) -> None:
        clock = ManualClock()
        graph = Pipeline().with_stage("slow", forever).build()

        async def main() -> Any:
            run = asyncio.ensure_future(Engine(clock=clock).run(graph, timeout=60))
            await clock.pass_time(59)
            assert not run.done()
            await clock.pass_time(1)
            return await run

        result = real(main())

        assert result.status == "cancelled"
        assert result.duration == 60.0


class TestTelemetryOnTheClock:
    def test_spans_metrics_and_log_records_are_timed_on_the_engines_clock(self, caplog):
        clock = ManualClock(1_000.0)
        traces, metrics = Traces(), Metrics()

        async def takes_7s(ctx: StageContext) -> None:
            await ctx.clock.sleep(7)

        graph = Pipeline("timed").with_stage("a", takes_7s).build()
        engine = Engine(
            clock=clock,
            interceptors=[
                TracingInterceptor(tracer_provider=traces.provider),
                MetricsInterceptor(meter_provider=metrics.provider),
                LoggingInterceptor(),
            ],
        )

        async def main() -> Any:
            run = asyncio.ensure_future(engine.run(graph))
            await clock.pass_time(7)
            return await run

        with caplog.at_level(logging.INFO, logger="stageflow.stages"):
            result = real(main())

        assert result.ok
        span = traces.stage("a")
        assert (span.start_time, span.end_time) == (1_000 * 10**9, 1_007 * 10**9)
        run_span = traces.run("timed")
        assert run_span.end_time - run_span.start_time == 7 * 10**9
        stage_duration = metrics.collect()["stageflow.stage.duration"]
        assert [p.sum for p in stage_duration.data.data_points] == [7.0]
        run_duration = metrics.collect()["stageflow.run.duration"]
        assert [p.sum for p in run_duration.data.data_points] == [7.0]
        ended = [r for r in caplog.records if getattr(r, "stage", None) == "a"]
        assert [r.duration for r in ended] == [7.0]  # type: ignore[attr-defined]
