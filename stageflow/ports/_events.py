from __future__ import annotations

from collections.abc import Awaitable, Sequence
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


@runtime_checkable
class EventLog(Protocol):
    """Keeps the events of runs, for reading later and from other processes.

    ``Engine(event_log=log)`` writes every event of its runs to ``log``, in batches off
    the run's path (see :class:`~stageflow.EventLogSink`); ``stageflow events``, the
    HTTP service's event streams and :func:`~stageflow.follow_events` read it. The
    contract:

    - An event is identified by ``(run_id, seq)``. ``append_events`` stores events of
      any runs in one go (one transaction where the backend has them). An event whose
      ``(run_id, seq)`` is stored already is ignored: the first write wins, so a batch
      written twice (a retried write, a stale driver) changes nothing.
    - ``read_events(run_id, after=n)`` returns the run's stored events with
      ``seq > n``, in ``seq`` order, at most ``limit`` of them (all when None); an
      unknown run has none (``[]``, not an error). Each comes back as the
      :class:`~stageflow.Event` that was appended, except that ``data`` holds what
      JSON can: values it cannot hold come back as their ``repr``, tuples as lists.
    - ``last_event_seq(run_id)`` is the highest stored ``seq`` of the run, 0 when it
      has none. A resumed run numbers its events on from there, so that a run's
      ``seq`` increases across all its drives.
    - Deleting a run (``RunCatalog.delete_run``, ``prune``) deletes its events.

    ``SQLAlchemyStore`` (table ``stageflow_events``) and ``MemoryStore`` are event
    logs; :func:`stageflow.testing.check_event_log` checks yours.
    """

    async def append_events(self, events: Sequence[Event]) -> None:
        """Store the events; those whose ``(run_id, seq)`` is stored already are ignored."""

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The run's events with ``seq > after``, in ``seq`` order, at most ``limit``."""

    async def last_event_seq(self, run_id: str) -> int:
        """The highest stored ``seq`` of the run; 0 when none is stored."""
