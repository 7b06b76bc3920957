"""LoopClock: the default Clock, the running event loop's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

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
