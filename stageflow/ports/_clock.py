from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Where the engine reads time and sleeps.

    The contract: ``monotonic()`` never goes backwards and is what durations and
    deadlines are measured on; ``wall()`` is seconds since the epoch, for
    timestamps; ``sleep(s)`` returns after ``s`` seconds of ``monotonic()`` time
    and is cancellable. The engine calls them on the event loop only.

    The default, :class:`LoopClock`, reads the running event loop's clock, so a
    virtual-time loop (:func:`stageflow.testing.run_virtual`) makes stageflow,
    ``asyncio.sleep`` and ``asyncio.timeout`` in your stages all virtual at once.
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


class LoopClock:
    """The running event loop's clock (``loop.time()``) and ``asyncio.sleep``."""

    __slots__ = ()

    def monotonic(self) -> float:
        """The running loop's ``time()``."""
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        """``time.time()``."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "LoopClock()"
