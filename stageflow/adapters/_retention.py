"""Retention: finished runs older than a limit are pruned as new runs arrive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .._check import number


class Retention:
    """Prunes at most once per tenth of the retention period, when a run is created."""

    __slots__ = ("_last", "seconds")

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None:
            what = "a positive number of seconds or None"
            number(seconds, "retention", what, gt=0, finite=False)
        self.seconds = seconds
        self._last = float("-inf")

    async def maybe_prune(self, now: float, prune: Callable[[float], Awaitable[int]]) -> None:
        if self.seconds is not None and now - self._last >= self.seconds / 10:
            self._last = now
            await prune(now - self.seconds)
