"""LoopClock: the default Clock, the running event loop's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["LoopClock"]


class LoopClock:
    """The running event loop's clock (``loop.time()``), ``asyncio.sleep`` and timers.

    A :class:`~stageflow.ports.Clock`: what an :class:`~stageflow.Engine` uses unless
    given another.
    """

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

    def call_later(self, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        """``loop.call_later(delay, callback)`` on the running loop."""
        return asyncio.get_running_loop().call_later(delay, callback)

    def __repr__(self) -> str:
        return "LoopClock()"


class _BoundLoopClock:
    """The default LoopClock bound to one loop for one run: the same times and timers.

    What a run (``ctx.clock``) uses in place of the default :class:`LoopClock`: each
    member is a plain callable of its loop, so that timeouts (a timer per attempt) and
    durations (two readings per stage) cost no lookup of the running loop.
    """

    __slots__ = ("call_later", "monotonic", "sleep", "wall")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        plain = type(loop).time is asyncio.BaseEventLoop.time
        # loop.time() is time.monotonic() unless the loop says otherwise (virtual time).
        now = time.monotonic if plain else loop.time
        call_at = loop.call_at

        def call_later(delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
            return call_at(now() + delay, callback)

        self.monotonic: Callable[[], float] = now
        self.wall: Callable[[], float] = time.time
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.call_later = call_later

    def __repr__(self) -> str:
        return "LoopClock() (bound to its run's loop)"


def bound(clock: object, loop: asyncio.AbstractEventLoop) -> object:
    """``clock`` for one run on ``loop``: the default LoopClock bound to the loop, else
    itself."""
    return _BoundLoopClock(loop) if type(clock) is LoopClock else clock


def is_loop_clock(clock: object) -> bool:
    """Whether ``clock`` is the default LoopClock (bound to a run or not), whose wall
    time is ``time.time()``."""
    return type(clock) is LoopClock or type(clock) is _BoundLoopClock
