"""Events kept in an EventLog: the sink that writes them in batches, and following a run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from ._check import integer, number, refuse
from ._events import Event, EventType
from .ports import EventLog, EventSink, PressureSink

__all__ = ["EventLogSink", "follow_events", "with_log"]

logger = logging.getLogger("stageflow")

_RUN_ENDS = frozenset({EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED})
_FAILURES_BEFORE_DROP = 3  # consecutive failed writes of one batch before it is dropped
_RETRY_PAUSE = 0.05  # seconds before a failed batch is tried again, times the failures


def check_event_log(log: object, field: str = "event_log") -> None:
    """Refuse what is no EventLog, naming the argument and the value."""
    missing = [
        method
        for method in ("append_events", "read_events", "last_event_seq")
        if not callable(getattr(log, method, None))
    ]
    if isinstance(log, type) or missing:
        refuse(field, "an EventLog instance, e.g. the store: Engine(store=s, event_log=s)", log)


class EventLogSink:
    """An EventSink that writes events to an :class:`~stageflow.ports.EventLog` in batches.

    ``try_emit`` only appends the event to a list; a background task writes what has
    gathered with one ``append_events`` call (one transaction), ``linger`` seconds after
    the first event of a batch, or at once when ``max_batch`` events wait. A run's
    path never awaits the log. ``Engine(event_log=log)`` makes one and flushes it
    before ``run()``/``resume()`` return, so a run's events are in the log when its
    result is.

    A write that fails is tried again with the next batch, up to three times in a row;
    then its events are dropped. ``errors`` counts failed writes, ``dropped`` the
    events given up (also those beyond ``max_pending`` waiting, oldest first), and
    ``written`` the events stored. The first failure is logged, the others counted.

    It is an EventLog too: reads go to the log (what is still waiting is not seen
    until written), and :func:`follow_events` on this sink wakes up as soon as a batch
    is written instead of polling. A sink belongs to the event loop that first uses
    it until it is idle again (after :meth:`flush`), so an engine may serve one
    ``asyncio.run`` after another.

    Args:
        log: where the events go (e.g. a ``SQLAlchemyStore`` or ``MemoryStore``).
        linger: seconds a batch waits for more events after its first (default 0.05).
        max_batch: events written in one call at most (default 1000).
        max_pending: events waiting at most; beyond it the oldest are dropped.
    """

    def __init__(
        self,
        log: EventLog,
        *,
        linger: float = 0.05,
        max_batch: int = 1000,
        max_pending: int = 100_000,
    ) -> None:
        check_event_log(log, "log")
        number(linger, "linger", "a number of seconds >= 0", ge=0)
        integer(max_batch, "max_batch", "a positive int", ge=1)
        integer(max_pending, "max_pending", "a positive int", ge=1)
        self.log = log
        self.linger = linger
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.written = 0
        self.errors = 0
        self.dropped = 0
        self.writes = 0  # batches written: a follower tells a write it has not seen by it
        self._pending: list[Event] = []  # waiting for a batch
        self._writing: list[Event] = []  # the batch being written
        self._accepted = 0  # events taken by try_emit, ever
        self._settled = 0  # of those, written or given up
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []  # (events to settle, waiter)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None  # cuts a batch's linger short
        self._wrote: asyncio.Event | None = None  # set (then replaced) after each write
        self._wrote_on: asyncio.AbstractEventLoop | None = None  # the loop _wrote is of

    # ------------------------------------------------------------------ the sink

    def try_emit(self, event: Event) -> None:
        """Queue the event for the next batch (never waits)."""
        pending = self._pending
        pending.append(event)
        self._accepted += 1
        if self._task is None:
            self._start()
        elif len(pending) >= self.max_batch:
            self._wake.set()  # type: ignore[union-attr]
        if len(pending) > self.max_pending:
            self._give_up(1)

    async def emit(self, event: Event) -> None:
        """Queue the event (as ``try_emit``); use :meth:`flush` to wait for the write."""
        self.try_emit(event)

    def _start(self) -> None:
        # Made on the loop of the first event after an idle spell: one loop at a time.
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._write())

    def _give_up(self, count: int) -> None:
        """Drop the ``count`` oldest waiting events."""
        del self._pending[:count]
        self.dropped += count
        self._settle(count)

    def _settle(self, count: int) -> None:
        self._settled += count
        if self._flushes:
            settled = self._settled
            waiting = []
            for target, waiter in self._flushes:
                if target > settled:
                    waiting.append((target, waiter))
                elif not waiter.done():
                    waiter.set_result(None)
            self._flushes = waiting

    async def _write(self) -> None:
        failures = 0
        wake = self._wake
        assert wake is not None
        try:
            while self._pending:
                if self.linger and len(self._pending) < self.max_batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self.linger)
                wake.clear()
                batch = self._writing = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
                try:
                    await self.log.append_events(batch)
                except Exception as error:  # a log never breaks a run
                    failures += 1
                    self.errors += 1
                    if self.errors == 1:
                        logger.error(
                            "event log %r failed to store %d events; retrying, further "
                            "failures are counted in EventLogSink.errors",
                            self.log, len(batch), exc_info=error,
                        )  # fmt: skip
                    if failures < _FAILURES_BEFORE_DROP:  # back first, tried again later
                        self._pending[:0] = batch
                        self._writing = []
                        excess = len(self._pending) - self.max_pending
                        if excess > 0:
                            self._give_up(excess)
                        await asyncio.sleep(max(self.linger, _RETRY_PAUSE) * failures)
                        continue
                    self.dropped += len(batch)
                else:
                    self.written += len(batch)
                    self.writes += 1
                    self._signal()
                failures = 0
                self._writing = []
                self._settle(len(batch))
        finally:
            if self._writing:  # cancelled mid-write (its loop closing): kept for the next
                self._pending[:0] = self._writing
                self._writing = []
            self._task = None

    def _signal(self) -> None:
        wrote = self._wrote
        if wrote is not None:
            self._wrote = None
            wrote.set()

    async def flush(self) -> None:
        """Write what waits now, and return once every event emitted before the call is
        written or given up (events emitted meanwhile, by other runs, are not waited for)."""
        target = self._accepted
        if self._settled >= target or self._task is None:
            return
        self._wake.set()  # type: ignore[union-attr]
        waiter = asyncio.get_running_loop().create_future()
        self._flushes.append((target, waiter))
        await waiter

    async def aclose(self) -> None:
        """Same as :meth:`flush` (the sink may go on being used afterwards)."""
        await self.flush()

    async def next_write(self, timeout: float) -> None:
        """Wait until the next batch is written, or ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        if self._wrote is None or self._wrote_on is not loop:
            self._wrote, self._wrote_on = asyncio.Event(), loop
        # asyncio.wait, not wait_for: a cancel arriving as the write lands is never lost
        # (wait_for can swallow it under an anyio cancel scope on Python 3.11).
        waiter = asyncio.ensure_future(self._wrote.wait())
        try:
            await asyncio.wait([waiter], timeout=timeout)
        finally:
            waiter.cancel()

    async def seq_of(self, run_id: str) -> int:
        """The highest ``seq`` of the run known here: stored, or still to be written. A
        log that cannot be read gives what is still to be written (the failure is
        counted in ``errors`` and logged once), so a resume is never stopped by it."""
        try:
            return await self.last_event_seq(run_id)
        except Exception as error:  # a log never breaks a run
            self.errors += 1
            if self.errors == 1:
                logger.error(
                    "event log %r could not say the last seq of run %s; its events are "
                    "numbered on from those not written yet",
                    self.log, run_id, exc_info=error,
                )  # fmt: skip
            return max(self._local_seqs(run_id), default=0)

    def _local_seqs(self, run_id: str) -> list[int]:
        return [e.seq for e in (*self._writing, *self._pending) if e.run_id == run_id]

    # ------------------------------------------------------------------ the log

    async def append_events(self, events: Sequence[Event]) -> None:
        """Write ``events`` to the log now (not through the batch)."""
        await self.log.append_events(events)

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The log's events of the run (see :meth:`EventLog.read_events`)."""
        return await self.log.read_events(run_id, after=after, limit=limit)

    async def last_event_seq(self, run_id: str) -> int:
        """The highest ``seq`` of the run, those still waiting in this sink included."""
        waiting = self._local_seqs(run_id)
        stored = await self.log.last_event_seq(run_id)
        return max(stored, *waiting) if waiting else stored

    def __repr__(self) -> str:
        return f"EventLogSink({self.log!r})"


async def follow_events(
    log: EventLog, run_id: str, *, after: int = 0, poll: float = 0.5, batch: int = 500
) -> AsyncIterator[Event]:
    """The run's events with ``seq > after`` as they are stored, until the run ends.

    Yields the stored events in ``seq`` order, then waits for more: on an
    :class:`EventLogSink` (``Engine.event_log``) until its next write, on any other
    log by reading again every ``poll`` seconds (a run driven by another process).
    It ends after the run's ``run.completed``, ``run.failed`` or ``run.cancelled``
    event when nothing is stored after it (a run resumed after it failed or was
    cancelled has its next drive's events after it: those are followed too); a run
    that waits for input (``run.waiting``) is followed on, since it goes on when its
    input arrives. Pass the ``seq`` of the last event seen as ``after`` to
    go on exactly after it (no gap, no duplicate).

    Args:
        log: the event log (a store, or an engine's :class:`EventLogSink`).
        run_id: the run.
        after: the ``seq`` to go on after (0: from the first event).
        poll: seconds between reads while nothing new is stored.
        batch: events read at a time.
    """
    check_event_log(log, "log")
    integer(after, "after", "an int >= 0 (a seq)", ge=0)
    number(poll, "poll", "a positive number of seconds", gt=0)
    integer(batch, "batch", "a positive int", ge=1)
    sink = log if isinstance(log, EventLogSink) else None
    while True:
        writes = 0 if sink is None else sink.writes  # before the read: a write during it
        events = await log.read_events(run_id, after=after, limit=batch)
        for event in events:
            after = event.seq
            yield event
            # The end of the run, unless a later drive (a resume) has events stored.
            if (
                event.stage is None
                and event.type in _RUN_ENDS
                and event is events[-1]
                and not await log.read_events(run_id, after=after, limit=1)
            ):
                return
        if len(events) == batch:
            continue
        if sink is not None:
            if sink.writes == writes:  # else a batch landed while reading: read again
                await sink.next_write(poll)
        else:
            await asyncio.sleep(poll)


class _Logged:
    """A run's sink and the engine's event log together: the log gets each event first
    (its ``try_emit`` never raises), then the sink, whose errors the engine counts in
    ``RunResult.sink_errors`` as without a log; a sink's ``pressure`` is passed through."""

    # No __slots__: a slot named pressure would make every instance look like a
    # PressureSink to isinstance (the class would have the attribute).
    pressure: Callable[[], Awaitable[None] | None]

    def __init__(self, sink: EventSink, log: EventLogSink) -> None:
        self.sink = sink
        self.log = log
        if isinstance(sink, PressureSink):  # else no pressure at all: the engine looks
            self.pressure = sink.pressure

    def try_emit(self, event: Event) -> None:
        self.log.try_emit(event)
        self.sink.try_emit(event)

    async def emit(self, event: Event) -> None:
        self.log.try_emit(event)
        await self.sink.emit(event)

    def __repr__(self) -> str:
        return repr(self.sink)


def with_log(sink: EventSink | None, log: EventLogSink) -> EventSink:
    """What an engine with ``sink`` and ``event_log`` sends its runs' events to."""
    return log if sink is None else _Logged(sink, log)
