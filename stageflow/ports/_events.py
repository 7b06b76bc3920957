from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from .._events import Event


@runtime_checkable
class EventSink(Protocol):
    """Receives the events of runs.

    The contract:

    - ``try_emit(event)`` is what the engine calls, synchronously on the event
      loop, for every event, in ``seq`` order. It must return promptly and never
      block on I/O: a sink that must do slow I/O queues the event and delivers it
      elsewhere. Should it raise, the engine logs the error, counts it in
      ``RunResult.sink_errors`` and goes on: a sink never changes a run's outcome.
    - ``emit(event)`` delivers one event and may await (for callers that want to
      wait for delivery, e.g. a buffering wrapper draining its queue).
    - Events are frozen; a sink may keep them.
    - Optionally, a sink may hold runs back: see :class:`PressureSink`.

    Example:
        >>> class PrintSink:
        ...     def try_emit(self, event):
        ...         print(event.seq, event.type, event.stage)
        ...
        ...     async def emit(self, event):
        ...         self.try_emit(event)
    """

    def try_emit(self, event: Event) -> None:
        """Accept one event without blocking."""

    async def emit(self, event: Event) -> None:
        """Deliver one event, awaiting if need be."""


@runtime_checkable
class PressureSink(EventSink, Protocol):
    """An :class:`EventSink` that can slow a run down to its own pace.

    The contract: ``pressure()`` returns None while the sink can take more events,
    else an awaitable that completes when it can; the engine then waits before it
    starts another stage (``BufferedSink(overflow="block")`` is one). The engine
    checks ``isinstance(sink, PressureSink)`` once per run, so other sinks cost a
    stage nothing. ``FanOutSink`` does not pass it through.
    """

    def pressure(self) -> Awaitable[None] | None:
        """None if the sink can take more events now, else what to await first."""
