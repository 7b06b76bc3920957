"""Input stages at run time: a stage that waits for a value a person gives.

An input stage's call (``input_call``) asks its run's :class:`RunInputs` for the value:
given already (a value sent early, or before an earlier driver stopped), it completes
at once; else it waits, its slot given up, until the value arrives (``engine.send`` in
this process, or a sender elsewhere seen by polling the store when the driver was told
to wait), its deadline passes, or nothing else runs and the run stops to wait
(``RunState.park``), its result saying what it waits for. Waiting is a boundary in the
graph: no stage's code runs inside it, so none runs twice because of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from . import _codec
from ._context import StageCall, StageContext
from ._durable import DurableRun
from ._dynamic import FAIL, InputSpec, WaitingForInput
from ._events import EventType
from ._graph import StageGraph
from ._result import PendingInput
from ._scheduler import RunState
from ._services import RunServices
from ._spec import StageSpec
from .errors import InputAlreadyGivenError, InputTimeoutError, StoreError, UnknownInputError
from .ports import Clock, InputRecord

__all__ = ["RunInputs", "input_call"]

logger = logging.getLogger("stageflow")

_EXPIRED: Final = object()  # what a wait's future holds when its deadline passed


def input_call(spec: StageSpec) -> StageCall:
    """The call of input stage ``spec``: its run's inputs give its value."""
    declared = spec.dynamic
    assert isinstance(declared, InputSpec)

    async def wait_for_input(ctx: StageContext) -> Any:
        run = ctx._run.root  # an item's context is its map's part's: the run is its root
        assert isinstance(run, RunState)
        inputs = run.inputs
        assert isinstance(inputs, RunInputs)
        if ctx._run is run:
            return await inputs.value(ctx, run, declared, None)
        part = ctx._run  # the items' part of an input per item
        group = inputs.group(part)
        group.running += 1
        try:
            return await inputs.value(ctx, run, declared, group)
        finally:
            group.running -= 1
            group.balance(run, not inputs.wait)
            if not group.running:
                inputs.ungroup(part)

    wait_for_input.__qualname__ = f"wait_for_input({spec.name})"
    return wait_for_input


class RunInputs:
    """The inputs of one run as its driver sees them.

    Args:
        run_id: the run.
        graph: its graph (what a sender's value is validated with).
        durable: the run's link to its store (None: a run without a store, whose
            inputs only ``engine.send`` in this process gives).
        clock: the engine's clock (deadlines are on its ``wall()``).
        wait: keep waiting when nothing else runs (``Engine.run(wait=True)``) instead
            of stopping the run to wait.
        poll: seconds between looks into the store for a value given elsewhere, while
            waiting with ``wait``.
        names: the run's input stages, each True when it takes an input per item.
    """

    __slots__ = ("__weakref__", "_groups", "_rows", "arrivals", "clock", "closed", "durable",
                 "given", "graph", "names", "pending", "poll", "run_id", "wait")  # fmt: skip

    def __init__(
        self,
        run_id: str,
        graph: StageGraph,
        durable: DurableRun | None,
        clock: Clock,
        *,
        wait: bool,
        poll: float,
        names: Mapping[str, bool],
    ) -> None:
        self.run_id = run_id
        self.graph = graph
        self.durable = durable
        self.closed = False  # the drive ended: nothing here waits any more
        self.clock = clock
        self.wait = wait
        self.poll = poll
        self.names = names
        self.arrivals: dict[str, asyncio.Future[Any]] = {}  # the waits going on, by input
        # What they wait for, and where it stands: (stage number, item index).
        self.pending: dict[str, tuple[tuple[int, int], PendingInput]] = {}
        self.given: dict[str, InputRecord] = {}  # without a store: the values given
        self._rows: dict[str, InputRecord] | None = None  # the store's, read once a drive
        self._groups: dict[RunServices, _Items] = {}  # the items of inputs per item

    # ------------------------------------------------------------ what senders call

    def deliver(self, row: InputRecord) -> None:
        """A value given in this process (stored first, for a durable run): the stage
        waiting for it goes on."""
        future = self.arrivals.get(row.name)
        if future is not None and not future.done():
            future.set_result(row)

    def give(self, name: str, text: str, at: float) -> InputRecord:
        """Keep a value given to a run without a store (checked as a store checks it)."""
        if self.closed:
            raise UnknownInputError.of(self.run_id, name, (), why="has ended")
        base, bracket, _ = name.partition("[")
        if self.names.get(base) is not bool(bracket):  # no input, or no item of one
            raise UnknownInputError.of(self.run_id, name, self.open())
        if name in self.given:
            raise InputAlreadyGivenError.of(self.run_id, name)
        waiting = self.pending.get(name)
        deadline = None if waiting is None else waiting[1].deadline
        if deadline is not None and deadline <= at:
            raise InputTimeoutError.of(name, deadline)
        row = InputRecord(self.run_id, name, "", value=text, given_at=at)
        self.given[name] = row
        self.deliver(row)
        return row

    def open(self) -> list[str]:
        """The inputs that may still be given (without a store)."""
        every = [f"{name}[key]" if per_item else name for name, per_item in self.names.items()]
        return sorted(set(every).difference(self.given))

    def group(self, part: RunServices) -> _Items:
        """The items of the input per item that ``part`` runs."""
        group = self._groups.get(part)
        if group is None:
            group = self._groups[part] = _Items()
        return group

    def ungroup(self, part: RunServices) -> None:
        """``part``'s items run no more (until its map runs them again)."""
        self._groups.pop(part, None)

    def waiting_for(self) -> tuple[PendingInput, ...]:
        """What the run waits for, in graph order (the items of one input in item order),
        whatever the order in which the stages began to wait."""
        return tuple(pending for _, pending in sorted(self.pending.values()))

    # ------------------------------------------------------------ what input stages call

    async def value(
        self, ctx: StageContext, run: RunState, declared: InputSpec, group: _Items | None
    ) -> Any:
        """The value of ``ctx``'s input stage (or item, of ``group``): its output data,
        once given."""
        name = ctx.stage
        row = await self._row(ctx, declared)
        if row.value is not None:
            return self._received(run, ctx, declared, row)
        if row.deadline is not None and row.deadline <= self.clock.wall():
            return self._expired(run, ctx, declared, row.deadline)
        pending = PendingInput(name, row.prompt, declared.schema.json_schema, row.deadline)
        place = (self.graph.index[ctx.spec.name], 0 if group is None else ctx._index)
        self.pending[name] = (place, pending)
        if run.sink is not None:
            run.event(EventType.INPUT_WAITING, name, ctx.attempt,
                      {"prompt": row.prompt, "deadline": row.deadline})  # fmt: skip
        future: asyncio.Future[Any] = run.loop.create_future()
        self.arrivals[name] = future
        timer = None
        if row.deadline is not None:
            timer = self.clock.call_later(max(0.0, row.deadline - self.clock.wall()),
                                          lambda: _settle(future, _EXPIRED))  # fmt: skip
        poller = None
        if self.wait and self.durable is not None:
            poller = run.loop.create_task(self._poll(name, future))
        parks = not self.wait
        if group is None:
            run.wait_begins(parks)
        else:  # the map gives its slot up once every item it runs waits
            group.waiting += 1
            group.balance(run, parks)
        try:
            got = await future
        except asyncio.CancelledError:
            if run.parked:  # the run stops to wait: say so to the chain around the stage
                raise WaitingForInput(f"input {name!r} waits") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if poller is not None:
                poller.cancel()
            del self.arrivals[name]
        if group is None:
            run.wait_ends(parks)
        else:
            group.waiting -= 1
            group.balance(run, parks)
        del self.pending[name]
        if got is _EXPIRED:
            return self._expired(run, ctx, declared, row.deadline)  # type: ignore[arg-type]
        return self._received(run, ctx, declared, got)

    async def _row(self, ctx: StageContext, declared: InputSpec) -> InputRecord:
        """The input's row, marked waiting (a value given is in it)."""
        name = ctx.stage
        now = self.clock.wall()
        durable = self.durable
        if durable is None:
            given = self.given.get(name)
            if given is not None:
                return given
            prompt = _prompt(ctx, declared.prompt)
            return InputRecord(self.run_id, name, declared.schema.text, prompt,
                               _deadline(declared, now), now)  # fmt: skip
        if self._rows is None:
            self._rows = await durable.load_inputs()
        stored = self._rows.get(name)
        if stored is not None and stored.waiting_since is not None:  # waited: prompt made
            prompt = stored.prompt
        else:
            prompt = _prompt(ctx, declared.prompt)
        record = InputRecord(self.run_id, name, declared.schema.text, prompt,
                             _deadline(declared, now), now)  # fmt: skip
        return await durable.wait_input(record)

    async def _poll(self, name: str, future: asyncio.Future[Any]) -> None:
        """Look into the store every ``poll`` seconds for a value given elsewhere."""
        assert self.durable is not None
        while not future.done():
            await self.clock.sleep(self.poll)
            try:
                rows = await self.durable.load_inputs()
            except StoreError:  # the store will answer later: keep waiting
                logger.warning("looking for input %r of run %s failed", name, self.run_id)
                continue
            row = rows.get(name)
            if row is not None and row.value is not None:
                _settle(future, row)

    def _received(
        self, run: RunState, ctx: StageContext, declared: InputSpec, row: InputRecord
    ) -> Any:
        assert row.value is not None
        if run.sink is not None:
            run.event(EventType.INPUT_RECEIVED, ctx.stage, ctx.attempt,
                      {"given_at": row.given_at})  # fmt: skip
        return declared.schema.output(_codec.loads(row.value))

    def _expired(
        self, run: RunState, ctx: StageContext, declared: InputSpec, deadline: float
    ) -> Any:
        applied = "fail" if _fails(declared) else "default"
        if run.sink is not None:
            run.event(EventType.INPUT_TIMED_OUT, ctx.stage, ctx.attempt,
                      {"deadline": deadline, "applied": applied})  # fmt: skip
        if applied == "fail":
            raise InputTimeoutError.of(ctx.stage, deadline)
        return declared.schema.output(declared.on_timeout)


class _Items:
    """The items of one input per item (a map whose items wait): the map holds its slot
    in the run while one of the items it runs does not wait."""

    __slots__ = ("released", "running", "waiting")

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.released = False

    def balance(self, run: RunState, parks: bool) -> None:
        release = self.running > 0 and self.waiting == self.running
        if release and not self.released:
            self.released = True
            run.wait_begins(parks)
        elif not release and self.released:
            self.released = False
            run.wait_ends(parks)


def _fails(declared: InputSpec) -> bool:
    return isinstance(declared.on_timeout, str) and declared.on_timeout == FAIL


def _deadline(declared: InputSpec, now: float) -> float | None:
    return None if declared.timeout is None else now + declared.timeout


def _prompt(ctx: StageContext, prompt: str | Callable[[StageContext], str] | None) -> str | None:
    if prompt is None or isinstance(prompt, str):
        return prompt
    return str(prompt(ctx))


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
