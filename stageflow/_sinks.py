"""Built-in event sinks: logging, JSON lines, fan-out."""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import io
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ._check import integer, refuse
from ._events import Event
from .errors import ConfigurationError
from .ports import EventSink

__all__ = ["BufferedSink", "FanOutSink", "JsonLinesSink", "LegacyEventSink", "LoggingSink"]

_OVERFLOWS = ("drop_oldest", "drop_newest", "block")


def check_sink(
    sink: object, field: str = "sink", label: str | None = None, *, method: str = "try_emit"
) -> None:
    """Refuse what cannot serve as an EventSink, naming the argument and the value."""
    label = label or field
    if isinstance(sink, type):
        raise ConfigurationError(
            f"{label} = {sink.__qualname__} is a class; pass an instance: {sink.__qualname__}()",
            field=field,
            value=sink,
        )
    if not callable(getattr(sink, method, None)):
        raise ConfigurationError(
            f"{label} = {sink!r} is no EventSink: it has no {method}(event) method",
            field=field,
            value=sink,
        )


class _SyncSink(abc.ABC):
    """A sink whose ``try_emit`` does the work; ``emit`` awaits nothing more."""

    @abc.abstractmethod
    def try_emit(self, event: Event) -> None:
        """Handle one event, now."""

    async def emit(self, event: Event) -> None:
        """Same as :meth:`try_emit`: this sink never waits."""
        self.try_emit(event)


class LoggingSink(_SyncSink):
    """Logs every event through :mod:`logging` (one record per event).

    The record's message is ``"<type> <stage>"``; its ``extra`` carries
    ``stageflow_event`` (the :class:`~stageflow.Event`) and the fields
    ``run_id``, ``pipeline``, ``stage``, ``seq``, ``attempt``, ``event_type``.

    Args:
        logger: a logger or its name (default ``"stageflow.events"``).
        level: the level of ordinary events; ``*.failed`` events are logged at
            WARNING or ``level``, whichever is higher.
    """

    def __init__(
        self, logger: logging.Logger | str = "stageflow.events", level: int = logging.INFO
    ):
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if not isinstance(logger, logging.Logger):
            refuse("logger", "a Logger or a name", logger)
        self.logger = logger
        self.level = integer(level, "level", "a logging level int")

    def try_emit(self, event: Event) -> None:
        """Log the event (nothing is formatted when the level is disabled)."""
        level = max(self.level, logging.WARNING) if event.type.endswith(".failed") else self.level
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            "%s %s%s",
            event.type,
            event.stage or event.pipeline,
            "".join(f" {k}={v}" for k, v in event.data.items()),
            extra={
                "stageflow_event": event,
                "run_id": event.run_id,
                "pipeline": event.pipeline,
                "stage": event.stage,
                "seq": event.seq,
                "attempt": event.attempt,
                "event_type": str(event.type),
            },
        )


def _is_text_file(target: object) -> bool:
    if isinstance(target, io.RawIOBase | io.BufferedIOBase) or not callable(
        getattr(target, "write", None)
    ):
        return False
    try:
        target.write("")  # type: ignore[attr-defined]  # a binary file refuses str
    except (TypeError, OSError, ValueError):
        return False
    return True


class JsonLinesSink(_SyncSink):
    """Writes each event as one JSON object per line.

    Values JSON cannot hold (custom objects in ``custom.*`` event data) are
    written as their ``repr``. Writes go to a buffered file: call :meth:`close`
    (or use the sink as a context manager) to flush.

    Args:
        target: a path (opened for appending) or a text file object.
    """

    def __init__(self, target: str | os.PathLike[str] | IO[str]) -> None:
        if isinstance(target, str | os.PathLike):
            self._file: IO[str] = Path(target).open("a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        elif _is_text_file(target):
            self._file = target
            self._owned = False
        else:
            raise ConfigurationError(
                f"JsonLinesSink needs a path or a text file opened for writing, not {target!r}",
                field="target",
                value=target,
            )

    def try_emit(self, event: Event) -> None:
        """Write the event as one JSON line (buffered)."""
        # Imported here: pydantic_core would be a third of `import stageflow`'s time.
        from pydantic_core import to_json

        line = to_json(event.to_dict(), fallback=repr)
        self._file.write(line.decode() + "\n")

    def flush(self) -> None:
        """Flush the file's buffer."""
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this sink opened it."""
        self._file.flush()
        if self._owned:
            self._file.close()

    def __enter__(self) -> JsonLinesSink:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class FanOutSink(_SyncSink):
    """Sends every event to several sinks; one that raises does not starve the others.

    ``errors`` counts the exceptions raised by the inner sinks (each is logged once).
    """

    def __init__(self, *sinks: EventSink | Iterable[EventSink]) -> None:
        flat: list[EventSink] = []
        for item in sinks:
            many = isinstance(item, Iterable) and not isinstance(item, str | bytes | type)
            flat.extend(item if many else (item,))  # type: ignore[arg-type]
        for position, sink in enumerate(flat):
            check_sink(sink, "sinks", f"sinks[{position}]")
        self.sinks: tuple[EventSink, ...] = tuple(flat)
        self.errors = 0
        self._logged: set[int] = set()

    def try_emit(self, event: Event) -> None:
        """Hand the event to each sink's ``try_emit`` in turn."""
        for sink in self.sinks:
            try:
                sink.try_emit(event)
            except Exception as error:  # noqa: BLE001 - isolate sinks from each other
                self._failed(sink, event, error)

    async def emit(self, event: Event) -> None:
        """Deliver to each sink's ``emit`` in turn (awaiting each)."""
        for sink in self.sinks:
            try:
                await sink.emit(event)
            except Exception as error:  # noqa: BLE001 - isolate sinks from each other
                self._failed(sink, event, error)

    def _failed(self, sink: EventSink, event: Event, error: Exception) -> None:
        self.errors += 1
        if id(sink) not in self._logged:
            self._logged.add(id(sink))
            logging.getLogger("stageflow").error(
                "event sink %r raised on %s; further errors are counted",
                sink,
                event.type,
                exc_info=error,
            )


class BufferedSink(_SyncSink):
    """Delivers events to a slow sink in the background, so it never stalls a run.

    ``try_emit`` only appends to a queue; a background task awaits the inner
    sink's ``emit`` for each event in order. ``overflow`` says what happens when
    ``maxsize`` events wait:

    - ``"drop_oldest"`` (the default): the oldest queued event is dropped (the
      newest state matters most);
    - ``"drop_newest"``: the new event is dropped;
    - ``"block"``: nothing is dropped; the run slows to the sink's pace instead.
      Before it starts each stage, the engine calls :meth:`pressure`; while the
      queue is full, the stage waits until the queue has drained to half of
      ``maxsize``. ``try_emit`` itself never waits and always queues, so the queue
      may exceed ``maxsize`` by the events emitted between two checks: at most
      those of the stages already running (their end, retry and ``custom.*``
      events) and the run's own closing events (``run.*``, skipped stages).

    ``dropped`` counts the dropped events, ``errors`` the inner sink's
    exceptions, and ``blocked`` how many times a stage had to wait before it
    started (a count of waits, not a duration). Call ``await flush()`` to wait
    until every queued event is delivered, and ``await aclose()`` at shutdown. A
    BufferedSink belongs to the event loop that first uses it.

    Only a sink with ``overflow="block"`` has a ``pressure`` method: the engine
    looks it up once per run, so the others cost a run nothing.

    Args:
        sink: the slow sink; its ``emit`` is awaited.
        maxsize: how many events may wait (with ``"block"``: before stages wait).
        overflow: ``"drop_oldest"``, ``"drop_newest"`` or ``"block"``.
    """

    pressure: Callable[[], Awaitable[None] | None]
    """With ``overflow="block"`` only (absent otherwise): None while the queue has room,
    else an awaitable done once it has drained (see :meth:`_pressure`)."""

    def __init__(self, sink: EventSink, *, maxsize: int = 10_000, overflow: str = "drop_oldest"):
        check_sink(sink, method="emit")
        integer(maxsize, "maxsize", "a positive int", ge=1)
        if overflow not in _OVERFLOWS:
            refuse("overflow", "'drop_oldest', 'drop_newest' or 'block'", overflow)
        self.sink = sink
        self.maxsize = maxsize
        self.overflow = overflow
        self.dropped = 0
        self.errors = 0
        self.blocked = 0
        self._queue: collections.deque[Event] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._block = overflow == "block"
        self._low = maxsize // 2  # with "block": stages wait until the queue is this short
        self._waiters: list[asyncio.Future[None]] = []
        if self._block:  # an instance attribute: the other policies have no pressure at all
            self.pressure = self._pressure

    @property
    def queued(self) -> int:
        """How many events wait for delivery (the one being delivered is not counted)."""
        return len(self._queue)

    def _pressure(self) -> Awaitable[None] | None:
        """None while the queue has room; else an awaitable done once it has drained.

        This is ``pressure()`` of a sink with ``overflow="block"``: the engine calls it
        before it starts each stage and, when it returns an awaitable, waits on it (and
        asks again). Each call returns a future of its own, so cancelling one waiter
        (a run's timeout, a cancelled task) leaves the others waiting.
        """
        if len(self._queue) < self.maxsize or self._closed:
            return None
        self.blocked += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def _release(self) -> None:
        """Wake every stage waiting for room."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():  # a cancelled waiter is done already
                waiter.set_result(None)

    def try_emit(self, event: Event) -> None:
        """Queue the event for delivery (dropping one if the queue is full, unless blocking)."""
        if self._closed:
            self.dropped += 1
            return
        if len(self._queue) >= self.maxsize and not self._block:
            self.dropped += 1
            if self.overflow == "drop_newest":
                return
            self._queue.popleft()
        self._queue.append(event)
        self._idle.clear()
        self._wakeup.set()
        if self._task is None:  # started on first use, on the loop that runs the engine
            self._task = asyncio.get_running_loop().create_task(self._deliver())

    async def _deliver(self) -> None:
        try:
            while True:
                while self._queue:
                    event = self._queue.popleft()
                    if self._waiters and len(self._queue) <= self._low:
                        self._release()
                    try:
                        await self.sink.emit(event)
                    except Exception:  # the inner sink's failure stays here
                        self.errors += 1
                        if self.errors == 1:
                            logging.getLogger("stageflow").exception(
                                "buffered sink %r raised on %s; further errors are counted",
                                self.sink,
                                event.type,
                            )
                self._idle.set()
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:  # however delivery ends, no stage may wait for it forever
            self._release()

    async def flush(self) -> None:
        """Wait until every event queued so far has been delivered (or failed)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Deliver what is queued, then stop; later events are dropped and counted.

        Stages waiting for room (``overflow="block"``) go on at once.
        """
        self._closed = True
        self._release()
        if self._task is not None:
            self._wakeup.set()
            await self._task
        self._release()


_LEGACY_RUN_TYPES = {
    "run.started": "pipeline.started",
    "run.completed": "pipeline.completed",
    "run.failed": "pipeline.failed",
    "run.cancelled": "pipeline.cancelled",
}


class LegacyEventSink(_SyncSink):
    """Re-types events the way stageflow-core named them, for dashboards that match on
    those names, and hands them to ``inner``.

    ``run.<x>`` becomes ``pipeline.<x>``; a stage event ``stage.<x>`` becomes
    ``stage.<name>.<x>`` (``stage.greet.completed``). Everything else (``custom.*``,
    ``circuit.*``, ``budget.*``, ``checkpoint.*``) passes as it is. Only ``type``
    changes: ``stage``, ``seq``, ``data`` and the rest are the event's own.

    Example:
        >>> event = Event("stage.completed", "run-1", "p", "greet", seq=3, ts=0.0)
        >>> LegacyEventSink.legacy_type(event)
        'stage.greet.completed'
    """

    def __init__(self, inner: EventSink) -> None:
        check_sink(inner, "inner")
        self.inner = inner

    @staticmethod
    def legacy_type(event: Event) -> str:
        """The type stageflow-core gave ``event``."""
        kind = str(event.type)
        if kind.startswith("stage.") and event.stage is not None:
            return f"stage.{event.stage}.{kind[6:]}"
        return _LEGACY_RUN_TYPES.get(kind, kind)

    def _retyped(self, event: Event) -> Event:
        kind = self.legacy_type(event)
        return event if kind == event.type else dataclasses.replace(event, type=kind)

    def try_emit(self, event: Event) -> None:
        """Hand the re-typed event to ``inner.try_emit``."""
        self.inner.try_emit(self._retyped(event))

    async def emit(self, event: Event) -> None:
        """Hand the re-typed event to ``inner.emit`` and await it."""
        await self.inner.emit(self._retyped(event))
