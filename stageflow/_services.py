"""What a run offers the code that runs in it: its identity, events, clock, ledger, store.

:class:`RunServices` is the part of a run that a :class:`~stageflow.StageContext`
(and so every interceptor, built-in or not) reaches: the run's id, graph and data,
the outcomes recorded so far, the engine's clock, a thread-safe way to send events,
the run's usage ledger and its link to the store. The scheduler extends it with
what only driving the run needs (the ready queue, tasks, limits), which no stage
and no interceptor ever sees.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from ._clock import bound
from ._events import Event
from ._ledger import Governance, UsageLedger
from ._outcomes import Outcomes
from ._redact import SECRETS, redacted_data

if TYPE_CHECKING:
    from ._context import LoopInfo, StageContext
    from ._durable import DurableRun
    from ._graph import StageGraph
    from .ports import Clock, EventSink, SecretResolver

__all__ = ["RunServices"]

logger = logging.getLogger("stageflow")
_LEDGER_LOCK: Final = threading.Lock()
_NO_RESOLVERS: Final[Mapping[str, Any]] = MappingProxyType({})


class RunServices:
    """One run's services, shared by its stages' contexts (the scheduler's base class)."""

    __slots__ = (
        "clock",
        "data",
        "durable",
        "enclosing",
        "governance",
        "graph",
        "items",
        "ledger",
        "loop",
        "loop_info",
        "now",
        "outcomes",
        "pipeline",
        "root",
        "run_id",
        "secrets",
        "seq",
        "sink",
        "sink_errors",
        "states",
        "stopping",
        "t0",
        "thread",
        "wall",
    )

    def __init__(
        self,
        graph: StageGraph,
        run_id: str,
        data: Mapping[str, Any],
        *,
        sink: EventSink | None,
        clock: Clock,
        governance: Governance | None = None,
        durable: DurableRun | None = None,
    ) -> None:
        self.graph = graph
        self.run_id = run_id
        self.pipeline = graph.name
        self.data = data
        self.sink = sink
        self.governance = governance
        self.durable = durable
        self.states: dict[str, str] = {}  # ctx.state of a run without a store
        self.outcomes = Outcomes(graph.names)
        self.stopping = False
        self.seq = 0
        self.sink_errors = 0
        self.t0 = 0.0
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.clock: Clock = bound(clock, self.loop)  # type: ignore[assignment]
        self.now: Callable[[], float] = self.clock.monotonic
        self.wall: Callable[[], float] = self.clock.wall
        # Made when first needed (a run that reports nothing has none), except for a
        # durable run: what its stages report must reach the store.
        self.ledger: UsageLedger | None = None
        if durable is not None:
            self.usage_ledger()
        self.secrets: Mapping[str, SecretResolver] = _NO_RESOLVERS  # the engine's secrets=
        self.root: RunServices = self  # the run's own services; a nested part's: the run's
        self.enclosing: StageContext | None = None
        self.loop_info: LoopInfo | None = None
        self.items: tuple[Sequence[Any], Sequence[str]] | None = None  # a map's items, keys

    def nest(self, part: RunServices, graph: StageGraph, names: tuple[str, ...],
             enclosing: StageContext) -> None:  # fmt: skip
        """Make ``part`` (a new, uninitialized object) a nested part of this run: the
        stages of a subgraph or loop iteration (``graph``), or the items of a map.

        It shares this run's identity, data, clock, sink and event numbering, ledger
        and store; it has its own outcomes, named ``names``, and its stages see
        ``enclosing`` (the context of the stage it is inside) for what they do not hold.
        """
        # Slot by slot (a loop makes a part per iteration): what it shares, then its own.
        part.clock = self.clock
        part.data = self.data
        part.durable = self.durable
        part.governance = self.governance
        part.loop = self.loop
        part.now = self.now
        part.pipeline = self.pipeline
        part.root = self.root
        part.run_id = self.run_id
        part.secrets = self.secrets
        part.seq = 0  # the root's counts events (see event())
        part.sink = self.sink
        part.sink_errors = 0
        part.states = self.states
        part.t0 = self.t0
        part.thread = self.thread
        part.wall = self.wall
        part.ledger = self.usage_ledger()  # one ledger per run: made now, shared
        part.graph = graph
        part.outcomes = Outcomes(names)
        part.stopping = False
        part.enclosing = enclosing
        part.loop_info = None
        part.items = None

    # ------------------------------------------------------------------ what contexts read

    def item_of(self, index: int) -> tuple[Any, int, str]:
        """The item, index and key of a map stage's call ``index`` (``ctx.item``)."""
        items = self.items
        if items is None:
            from .errors import ConfigurationError

            name = self.outcomes.names[index]
            raise ConfigurationError(
                f"stage {name!r} is not a map stage: ctx.item is for with_map(...) stages",
                field="item",
                value=name,
            )
        return items[0][index], index, items[1][index]

    def loop_of(self) -> LoopInfo | None:
        """The iteration of the innermost loop this part of the run is in (``ctx.loop``)."""
        part: RunServices = self
        while part.loop_info is None:
            if part.enclosing is None:
                return None
            part = part.enclosing._run
        return part.loop_info

    # ------------------------------------------------------------------ events

    def event(self, type_: str, stage: str | None, attempt: int, data: Mapping[str, Any]) -> None:
        """Send one event to the sink (on the loop's thread; the caller checked ``sink``)."""
        root = self.root
        root.seq += 1
        if SECRETS.active:  # known secrets never leave in an event
            data = redacted_data(data)
        event = Event(
            type_, self.run_id, self.pipeline, stage, root.seq, self.wall(), attempt, data
        )
        try:
            self.sink.try_emit(event)  # type: ignore[union-attr]
        except Exception:  # a sink never breaks a run
            root.sink_errors += 1
            if root.sink_errors == 1:
                logger.exception(
                    "event sink %r raised on %s (run %s); the run goes on, further sink "
                    "errors of this run are counted in RunResult.sink_errors",
                    self.sink, type_, self.run_id,
                )  # fmt: skip

    def emit(
        self, ctx: StageContext, type_: str, data: Mapping[str, Any], *, own: bool = False
    ) -> None:
        """Send an event about ``ctx``'s stage, from the loop or from any other thread.

        Sinks are only ever called on the loop: from a sync stage's worker thread the
        event is handed over to it. A thread may outlive its attempt (a timed-out or
        cancelled attempt cannot be killed), so an event that arrives from a thread, or
        a custom one (``own`` False), is dropped once its attempt no longer counts.
        """
        if self.sink is None:
            return
        if threading.get_ident() != self.thread:
            self.loop.call_soon_threadsafe(self._arrived, ctx, type_, data)
        elif own or not ctx.cancelled:
            self.event(type_, ctx.stage, ctx.attempt, data)

    def _arrived(self, ctx: StageContext, type_: str, data: Mapping[str, Any]) -> None:
        if not ctx.cancelled:
            self.event(type_, ctx.stage, ctx.attempt, data)

    # ------------------------------------------------------------------ usage

    def usage_ledger(self) -> UsageLedger:
        """The run's usage ledger, made on first use."""
        ledger = self.ledger
        if ledger is None:
            with _LEDGER_LOCK:  # sync stages' threads may ask at the same time
                ledger = self.ledger
                if ledger is None:
                    ledger = self.ledger = UsageLedger(
                        self.governance,
                        self.run_id,
                        self.wall,
                        self.emit,
                        durable=self.durable is not None,
                    )
        return ledger
