"""ManualClock: a Clock that moves only when a test moves it."""

from __future__ import annotations

import asyncio
import math

import pytest

from stageflow import Clock, ConfigurationError
from stageflow.testing import ManualClock


class TestManualClock:
    def test_it_is_a_clock_and_a_stores_wall_clock(self) -> None:
        clock = ManualClock(10.0)

        assert isinstance(clock, Clock)
        assert clock() == clock.monotonic() == clock.wall() == 10.0

    def test_advance_calls_the_timers_due_in_order_at_their_times(self) -> None:
        clock = ManualClock(0.0)
        seen: list[tuple[str, float]] = []
        clock.call_later(3, lambda: seen.append(("three", clock.now)))
        clock.call_later(1, lambda: seen.append(("one", clock.now)))
        clock.call_later(9, lambda: seen.append(("nine", clock.now)))

        clock.advance(5)

        assert seen == [("one", 1.0), ("three", 3.0)]
        assert clock.now == 5.0

    def test_a_cancelled_timer_is_not_called(self) -> None:
        clock = ManualClock(0.0)
        seen: list[str] = []
        timer = clock.call_later(1, lambda: seen.append("fired"))
        timer.cancel()

        clock.advance(2)

        assert seen == []

    def test_sleep_returns_once_the_clock_has_moved_on(self) -> None:
        clock = ManualClock(0.0)

        async def main() -> list[float]:
            woke: list[float] = []

            async def sleeper() -> None:
                await clock.sleep(30)
                woke.append(clock.now)

            task = asyncio.ensure_future(sleeper())
            await clock.pass_time(29)
            assert woke == []
            await clock.pass_time(1)
            await task
            return woke

        assert asyncio.run(main()) == [30.0]

    @pytest.mark.parametrize("bad", [-1, math.nan, True, "5"])
    def test_it_moves_forward_only_by_a_number(self, bad: object) -> None:
        clock = ManualClock()

        with pytest.raises(ConfigurationError, match="forward only") as info:
            clock.advance(bad)  # type: ignore[arg-type]
        assert info.value.field == "seconds"
        with pytest.raises(ConfigurationError, match="forward only"):
            asyncio.run(clock.pass_time(bad))  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", ["now", None, True])
    def test_its_start_must_be_a_number(self, bad: object) -> None:
        with pytest.raises(ConfigurationError) as info:
            ManualClock(bad)  # type: ignore[arg-type]
        assert info.value.field == "start"
