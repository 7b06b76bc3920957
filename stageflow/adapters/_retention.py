"""Retention: finished runs older than a limit are pruned as new runs arrive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..errors import ConfigurationError


class Retention:
    """Prunes at most once per tenth of the retention period, when a run is created."""

    __slots__ = ("_last", "seconds")

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0
        ):
            raise ConfigurationError(
                f"retention must be a positive number of seconds or None, not {seconds!r}",
                "retention",
                seconds,
            )
        self.seconds = seconds
        self._last = float("-inf")

    async def maybe_prune(self, now: float, prune: Callable[[float], Awaitable[int]]) -> None:
        if self.seconds is not None and now - self._last >= self.seconds / 10:
            self._last = now
            await prune(now - self.seconds)
