"""ManualClock: time that moves only when a test moves it."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from .._check import number

__all__ = ["ManualClock"]

_SETTLE_ROUNDS = 32  # loop iterations that let woken tasks run until they wait again


class _Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to: for tests of everything timed.

    It is a :class:`~stageflow.ports.Clock` (``Engine(clock=ManualClock())``: every
    timeout, retry backoff, breaker recovery, lease renewal and duration of the
    engine follows it) and a plain callable wall clock for stores
    (``MemoryStore(clock=clock)``). Monotonic and wall time are the same number.

    :meth:`advance` moves it at once, calling the timers that fall due on the way, in
    order; :meth:`pass_time` does the same from a coroutine, letting the event loop
    run what each timer woke before the next one fires: what a test driving a run
    on a real event loop wants. Nothing waits for real time.

    Example:
        >>> clock = ManualClock(1000.0)
        >>> clock.advance(5)
        >>> clock()
        1005.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = number(start, "start", "a number of seconds", finite=False)
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        """The current time (what a store's ``clock`` callable returns)."""
        return self.now

    def monotonic(self) -> float:
        """The current time."""
        return self.now

    def wall(self) -> float:
        """The current time."""
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Timer:
        """Call ``callback()`` once the clock has moved ``delay`` seconds on."""
        timer = _Timer(self.now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        """Return once the clock has moved ``seconds`` on."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await waiter
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, calling every timer due on the way, in order."""
        target = self.now + _forward(seconds)
        while self._fire_next(target):
            pass
        self.now = target

    async def pass_time(self, seconds: float) -> None:
        """Move the clock ``seconds`` on from a coroutine, one timer at a time.

        Before and after each timer that falls due, the event loop runs until what
        it woke waits again (a few dozen iterations: enough for stages, interceptors
        and in-memory stores; code that waits for threads or sockets should be
        driven with :meth:`advance` and real waits of its own).
        """
        target = self.now + _forward(seconds)
        await _settle()
        while self._fire_next(target):
            await _settle()
        self.now = target
        await _settle()

    def _fire_next(self, limit: float) -> bool:
        """Call the earliest live timer due by ``limit``; False when there is none."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers or timers[0][0] > limit:
            return False
        when, _, timer = heapq.heappop(timers)
        self.now = max(self.now, when)
        timer.callback()
        return True

    def __repr__(self) -> str:
        return f"ManualClock({self.now!r})"


def _forward(seconds: object) -> float:
    label = "a clock moves forward only: seconds"
    return number(seconds, "seconds", ">= 0", ge=0, finite=False, label=label)


async def _settle() -> None:
    for _ in range(_SETTLE_ROUNDS):
        await asyncio.sleep(0)
