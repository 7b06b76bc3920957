from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .._check import number
from ..errors import ConfigurationError

T = TypeVar("T")


class _JumpingSelector(selectors.BaseSelector):
    """A selector that, instead of sleeping until the next timer, moves time forward."""

    def __init__(self, loop: VirtualTimeLoop, threshold: float) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop
        self._threshold = threshold

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # no timer pending: only real I/O (a thread finishing) can wake us
            return self._inner.select(None)
        # Give real I/O (threads, sockets) a chance first: up to `threshold` real seconds.
        events = self._inner.select(min(timeout, self._threshold))
        if events or timeout <= 0:
            return events
        self._loop._advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: when every task waits, time jumps to the next timer.

    ``loop.time()`` starts at 0.0. Sleeps, ``asyncio.timeout``, ``call_later`` and
    stageflow's default clock all follow it, so tests of timeouts, retries and
    makespans are exact and take milliseconds. Real I/O and threads still work:
    the loop polls them for ``autojump_threshold`` real seconds before jumping.

    Args:
        autojump_threshold: real seconds to wait for I/O before jumping (0: jump at
            once; raise it when stages run real work in threads and timing matters).
    """

    def __new__(cls, autojump_threshold: float = 0.0) -> VirtualTimeLoop:
        # Checked before the loop exists: a half-built loop complains when collected.
        number(autojump_threshold, "autojump_threshold", "a number >= 0", ge=0, finite=False)
        return super().__new__(cls)

    def __init__(self, autojump_threshold: float = 0.0) -> None:
        self._virtual_now = 0.0
        self._real_resolution = 1e-9
        super().__init__(_JumpingSelector(self, float(autojump_threshold)))

    def time(self) -> float:
        """Virtual seconds since the loop was created."""
        return self._virtual_now

    # asyncio runs a timer once ``when < time() + _clock_resolution``. Far into virtual time
    # (past 1e8 s) adding the real clock's resolution (1e-9) rounds to nothing, and a due
    # timer would never run: the resolution is at least one unit in the last place.
    @property
    def _clock_resolution(self) -> float:
        return max(self._real_resolution, math.ulp(self._virtual_now))

    @_clock_resolution.setter
    def _clock_resolution(self, value: float) -> None:
        self._real_resolution = value

    def _advance(self, seconds: float) -> None:
        # asyncio computes the select timeout as `when - time()`; land on or just past it
        # (the loop's clock resolution absorbs the rounding of the addition).
        self._virtual_now += seconds


def run_virtual(
    main: Coroutine[Any, Any, T] | Callable[[], Awaitable[T]],
    *,
    autojump_threshold: float = 0.0,
) -> T:
    """Run ``main`` (a coroutine, or an async function of no arguments) on virtual time.

    Like :func:`asyncio.run`, with a fresh :class:`VirtualTimeLoop`.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     loop = asyncio.get_running_loop()
        ...     await asyncio.sleep(3600)
        ...     return loop.time()
        >>> run_virtual(main())
        3600.0
    """
    coro = main if asyncio.iscoroutine(main) else None
    if coro is None:
        if not callable(main):
            raise ConfigurationError(
                f"run_virtual takes a coroutine or an async function, not {main!r}",
                field="main",
                value=main,
            )
        made = main()
        if not asyncio.iscoroutine(made):
            raise ConfigurationError(
                f"run_virtual: {main!r}() returned {made!r}, not a coroutine",
                field="main",
                value=main,
            )
        coro = made
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(autojump_threshold)) as runner:
        return runner.run(coro)
