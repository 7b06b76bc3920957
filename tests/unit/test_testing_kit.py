"""Virtual time (run_virtual, VirtualTimeLoop) and clocks (LoopClock, a custom Clock)."""

from __future__ import annotations

import asyncio
import time

import pytest

from stageflow import Clock, Engine, LoopClock, Pipeline
from stageflow.testing import RecordingSink, VirtualTimeLoop, run_virtual

from ._helpers import sleeper


class TestRunVirtual:
    def test_time_starts_at_zero_and_jumps_exactly(self):
        async def main():
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.sleep(3600)
            middle = loop.time()
            await asyncio.sleep(0.25)
            return start, middle, loop.time()

        real = time.monotonic()
        assert run_virtual(main()) == (0.0, 3600.0, 3600.25)
        assert time.monotonic() - real < 5

    def test_runs_on_a_virtual_time_loop(self):
        async def main():
            return type(asyncio.get_running_loop())

        assert run_virtual(main()) is VirtualTimeLoop

    def test_accepts_an_async_function_of_no_arguments(self):
        async def main():
            await asyncio.sleep(10)
            return "done"

        assert run_virtual(main) == "done"

    def test_timeouts_follow_virtual_time(self):
        async def main():
            loop = asyncio.get_running_loop()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(30):
                    await asyncio.sleep(3600)
            return loop.time()

        assert run_virtual(main()) == pytest.approx(30)

    def test_exceptions_propagate(self):
        async def main():
            await asyncio.sleep(1)
            raise LookupError("inner")

        with pytest.raises(LookupError, match="inner"):
            run_virtual(main())

    def test_threads_still_complete(self):
        def work():
            return sum(range(1000))

        async def main():
            return await asyncio.to_thread(work)

        assert run_virtual(main()) == 499500

    def test_a_threshold_lets_real_io_finish_before_time_jumps(self):
        def work():
            time.sleep(0.01)
            return "done"

        async def main():
            loop = asyncio.get_running_loop()
            result = await asyncio.wait_for(asyncio.to_thread(work), timeout=100)
            return result, loop.time()

        result, now = run_virtual(main(), autojump_threshold=1.0)

        assert result == "done"
        assert now < 100


class TestLoopClock:
    def test_reads_the_running_loops_time(self):
        clock = LoopClock()

        async def main():
            before = clock.monotonic()
            await clock.sleep(42)
            return before, clock.monotonic()

        assert run_virtual(main()) == (0.0, 42.0)

    def test_wall_is_seconds_since_the_epoch(self):
        before = time.time()

        assert before <= LoopClock().wall() <= time.time()

    def test_is_a_clock(self):
        assert isinstance(LoopClock(), Clock)
        assert repr(LoopClock()) == "LoopClock()"


class _SteppingClock(LoopClock):
    """Monotonic time advances 10 s per reading; wall time is fixed."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 10
        return self.now

    def wall(self) -> float:
        return 1_000.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TestEngineClock:
    def test_a_given_clock_is_where_the_engine_reads_time(self):
        sink = RecordingSink()
        graph = Pipeline().with_stage("a", sleeper(1)).build()

        result = run_virtual(Engine(clock=_SteppingClock(), sink=sink).run(graph))

        assert result.started_at == 1_000.0
        assert {e.ts for e in sink.events} == {1_000.0}
        assert result["a"].duration == pytest.approx(10)  # two readings, 10 s apart
        assert result.duration > result["a"].duration

    def test_the_default_clock_follows_virtual_time(self):
        graph = Pipeline().with_stage("a", sleeper(90)).build()

        result = run_virtual(Engine().run(graph))

        assert result["a"].duration == pytest.approx(90)
