from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Where the engine reads time and sleeps.

    The contract: ``monotonic()`` never goes backwards and is what durations and
    deadlines are measured on; ``wall()`` is seconds since the epoch, for
    timestamps; ``sleep(s)`` returns after ``s`` seconds of ``monotonic()`` time
    and is cancellable; ``call_later(s, f)`` calls ``f()`` on the event loop after
    ``s`` seconds of ``monotonic()`` time unless cancelled. The engine calls them on
    the event loop only, and every timing decision it makes goes through them:
    timeouts, retry backoff, circuit breakers, lease renewal, and the durations on
    events, spans, log records and metrics.

    The default, :class:`~stageflow.LoopClock`, reads the running event loop's clock,
    so a virtual-time loop (:func:`stageflow.testing.run_virtual`) makes stageflow,
    ``asyncio.sleep`` and ``asyncio.timeout`` in your stages all virtual at once;
    :class:`stageflow.testing.ManualClock` is a clock that moves only when a test
    moves it.
    """

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of monotonic time."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback()`` on the event loop once ``delay`` seconds of monotonic time
        have passed, unless the returned timer is cancelled first (timeouts use it)."""
        ...


@runtime_checkable
class Timer(Protocol):
    """What :meth:`Clock.call_later` returns (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Do not call the callback (nothing happens if it was called already)."""
