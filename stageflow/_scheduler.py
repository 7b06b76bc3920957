"""The scheduler: drives one run of a StageGraph.

A stage starts the moment its last dependency ends and a slot is free. There are
no layers and no polling: each finished stage decrements its successors' pending
counts. The worker that finished a stage goes straight on with one newly ready
successor (keeping its slot), so a chain runs in one task; other ready stages get
a task each. Everything that only a failure, a skip or a sink needs stays off
the success path.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ._context import new_context
from ._dynamic import LoopSpec
from ._events import EventType
from ._outcomes import Outcomes, StageResults
from ._redact import redacted
from ._result import RunResult, RunStatus
from ._services import RunServices
from ._spec import check_route
from ._stage import StageOutput
from ._status import (
    CANCELLED,
    CODE,
    COMPLETED,
    FAILED,
    NONE,
    SKIPPED,
    WAITING,
    StageStatus,
    routed_reason,
)
from ._usage import EMPTY as EMPTY_USAGE
from .errors import (
    InvalidOutputError,
    RouteError,
    RunTimeoutError,
    StageCancelledError,
    StageFailedError,
)
from .ports import PressureSink

if TYPE_CHECKING:
    from ._context import StageCall, StageContext
    from ._durable import DurableRun
    from ._graph import StageGraph
    from ._ledger import Governance
    from .ports import Clock, EventSink, UsageRecord

LAUNCH_AHEAD: Final = 256  # tasks created but not yet begun, at most (see RunState.launch)

CONDITION_FALSE: Final = "condition false"
"""The reason of a stage skipped because its ``when`` returned false."""

# What finish() is told besides the status codes (never stored as a status): a ROUTE stage
# completed (some of its out-edges are not taken), a branch was not taken (a condition
# false, or every path into a join not taken), a condition false to be stored first.
_ROUTED: Final = 8
_UNTAKEN: Final = 9
_SAVE_UNTAKEN: Final = 10
# In ``blocked``: a stage that so far only had edges not taken into it (see resolve()).
_NOT_TAKEN: Final = "\0not taken"

_STAGE_EVENT: Final = (
    None,
    EventType.STAGE_COMPLETED,
    EventType.STAGE_FAILED,
    EventType.STAGE_SKIPPED,
    EventType.STAGE_CANCELLED,
)
_RUN_EVENT: Final = {
    RunStatus.COMPLETED: EventType.RUN_COMPLETED,
    RunStatus.FAILED: EventType.RUN_FAILED,
    RunStatus.CANCELLED: EventType.RUN_CANCELLED,
    RunStatus.WAITING: EventType.RUN_WAITING,
}
WAITING_REASON: Final = "waiting for input"


def lone(graph: StageGraph) -> bool:
    """Whether ``graph`` is one plain stage: no condition, no routes, nothing nested."""
    return len(graph.stages) == 1 and not graph.guards and graph.stages[0].dynamic is None


def normalize_output(name: str, out: object) -> StageOutput:
    """What an interceptor's inner call returns: always a StageOutput (or raises)."""
    if isinstance(out, StageOutput):
        return out
    if out is None:
        return StageOutput()
    if isinstance(out, Mapping):
        return StageOutput(StageStatus.COMPLETED, out if type(out) is dict else dict(out))
    raise InvalidOutputError.of(name, out)


class RunState(RunServices):
    """One run as the scheduler drives it; stages see its services through their context."""

    __slots__ = (
        "active",
        "backlog",
        "blocked",
        "calls",
        "chosen",
        "done",
        "ended",
        "fail_fast",
        "failed",
        "first_error",
        "flags",
        "guards",
        "inputs",
        "limit",
        "parked",
        "parts",
        "pending",
        "pressure",
        "queue",
        "remaining",
        "routing",
        "stop_reason",
        "tasks",
        "timed_out",
        "unrouted",
        "unstarted",
        "untaken",
        "waits",
    )

    def __init__(
        self,
        graph: StageGraph,
        calls: tuple[StageCall, ...],
        run_id: str,
        data: Mapping[str, Any],
        *,
        sink: EventSink | None,
        clock: Clock,
        max_parallel: int | None,
        fail_fast: bool,
        governance: Governance | None = None,
        durable: DurableRun | None = None,
    ) -> None:
        super().__init__(
            graph, run_id, data, sink=sink, clock=clock, governance=governance, durable=durable
        )
        self.parts: list[tuple[str | None, Outcomes]] = []  # nested outcomes: see StageResults
        self.flags: tuple[bool, ...] = ()
        self.inputs: Any = None  # the run's inputs (a RunInputs) when it has input stages
        # Checked once here, so that sinks that cannot hold a run back cost a stage nothing.
        pressure = sink.pressure if isinstance(sink, PressureSink) else None
        self.drive(graph, calls, max_parallel, fail_fast, pressure)

    def drive(
        self,
        graph: StageGraph,
        calls: tuple[StageCall, ...],
        max_parallel: int | None,
        fail_fast: bool,
        pressure: Callable[[], Awaitable[None] | None] | None,
    ) -> None:
        """Set up what driving ``graph`` takes (the run's, or a nested part's)."""
        self.calls = calls
        self.pressure = pressure
        self.fail_fast = fail_fast
        self.pending = list(graph.in_degree)
        self.blocked: dict[int, str] = {}  # stage -> why it will be skipped (or _NOT_TAKEN)
        self.untaken: dict[int, int] = {}  # stage -> its dependencies whose edge was not taken
        self.chosen: dict[int, tuple[str, ...]] = {}  # ROUTE stage -> the routes it chose
        self.unrouted: dict[int, str] = {}  # a route not chosen -> why it is skipped
        self.guards = dict(graph.guards)  # the stages' conditions; a dict is the fastest
        # The ROUTE stages (None: none), whose dict outputs are no completion of their own.
        self.routing = frozenset(graph.routes) or None
        self.remaining = len(graph.stages)
        self.active = 0
        self.limit = sys.maxsize if max_parallel is None else max_parallel
        self.queue: deque[int] = deque()  # ready, waiting for a slot (max_parallel)
        # Holding a slot, waiting for a task: see launch().
        self.backlog: deque[int] = deque()
        self.unstarted = 0  # tasks created whose worker has not begun yet
        # Running worker tasks, keyed by the stage each one started with.
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.stop_reason = ""
        self.failed = 0
        self.first_error: BaseException | None = None
        self.timed_out = False
        self.ended = False
        self.waits = 0  # input stages waiting for a value the run can park for (see park())
        self.parked = False

    def part(
        self, graph: StageGraph, calls: tuple[StageCall, ...], names: tuple[str, ...],
        enclosing: StageContext,
    ) -> RunState:  # fmt: skip
        """A nested part of this run that drives ``graph`` (a subgraph, a loop iteration)
        inside the stage of ``enclosing``, its stages named ``names``."""
        part: RunState = object.__new__(RunState)
        self.nest(part, graph, names, enclosing)
        part.parts = self.parts
        part.flags = self.flags
        if lone(graph):  # run in the calling task (execute_lone): no scheduling to set up
            part.calls = calls
            part.routing = None
            part.failed = 0
            part.first_error = None
            part.stop_reason = ""
            part.sink = self.sink
            part.parked = False
            return part
        limit = None if self.limit == sys.maxsize else self.limit
        part.drive(graph, calls, limit, self.fail_fast, self.pressure)
        return part

    def again(self, names: tuple[str, ...]) -> RunState:
        """This lone part (see part()) made the next iteration of its loop: outcomes of
        its own, named ``names``; the services, calls and context it shares stay. (An
        iteration that failed or was cancelled ended the loop: nothing else to reset.)"""
        self.outcomes = Outcomes(names)
        return self

    async def execute_lone(self) -> None:
        """Drive a part whose graph is one plain stage (see lone()) in the calling task:
        a loop of a one-stage body pays no task, no future and no event loop turn per
        iteration."""
        spec = self.graph.stages[0]
        outcomes = self.outcomes
        times = outcomes.times
        now = self.now
        ctx = new_context(self, 0, spec)
        if self.sink is not None:
            self.event(EventType.STAGE_STARTED, outcomes.names[0], 1, {"kind": spec.kind.value})
        times[0] = now() - self.t0
        outcomes.attempts[0] = 1
        try:
            out: object = await self.calls[0](ctx)
        except asyncio.CancelledError:
            times[1] = now() - self.t0
            self.stopping = True
            self.stop_reason = self.enclosing_reason()
            self.record_cancelled(0)
            raise
        except Exception as exc:  # noqa: BLE001 - a stage's error is its outcome
            times[1] = now() - self.t0
            code = self.record_failure(0, exc)
        else:
            times[1] = now() - self.t0
            if type(out) is dict:
                outcomes.outputs[0] = out
                outcomes.status[0] = code = COMPLETED
            else:
                code = self.record_output(0, out)
        if code == FAILED:
            self.failed = 1
            self.first_error = outcomes.errors[0]
        if self.sink is not None:
            self.stage_event(0)

    async def execute_part(self) -> None:
        """Drive a nested part to its end (see part()); a cancel stops it, then raises."""
        for i in self.graph.roots:
            self.ready(i)
        if self.remaining == 0:
            self.done.set_result(None)
        try:
            await self.done
        except BaseException as error:  # cancelled from outside, or escaped a stage
            reason = (
                self.enclosing_reason()
                if isinstance(error, asyncio.CancelledError)
                else (f"{type(error).__name__} escaped a stage")
            )
            self.stop(reason)
            if self.tasks:
                await asyncio.wait(self.tasks.values())
            self.settle()
            raise
        if self.tasks:  # only after a stop: let cancelled stages unwind
            await asyncio.wait(self.tasks.values())
        if self.stopping:
            self.settle()

    def enclosing_reason(self) -> str:
        root = self.root
        reason = root.stop_reason if isinstance(root, RunState) else ""
        return reason or "the enclosing stage was cancelled"

    # ------------------------------------------------------------------ driving the run

    async def execute(self, timeout: float | None, *, resumed: bool = False) -> RunResult:
        wall_start = self.wall()
        self.t0 = self.now()
        if self.sink is not None:
            started: dict[str, Any] = {"stages": len(self.graph.stages)}
            if resumed:  # this drive goes on with a run that an earlier one started
                started["resumed"] = True
            self.event(EventType.RUN_STARTED, None, 0, started)
        for i in self.graph.roots:
            self.ready(i)
        if self.remaining == 0:
            self.done.set_result(None)
        cancelled: asyncio.CancelledError | None = None
        escaped: BaseException | None = None
        # The run's limit is a timer on the engine's clock, like every other limit.
        timer = None if timeout is None else self.clock.call_later(timeout, self.time_out)
        try:
            await self.done
        except asyncio.CancelledError as error:
            cancelled = error
        except BaseException as error:  # noqa: BLE001 - from a worker: stop, then raise it
            escaped = error
        if timer is not None:
            timer.cancel()
        timed_out = self.timed_out
        parked = self.parked and cancelled is None and escaped is None and not timed_out
        if parked:  # only waiting input stages hold tasks: stop them, the run waits
            self.stop(WAITING_REASON)
        elif cancelled is not None:
            self.stop("the run was cancelled")
        elif timed_out:
            self.stop(f"the run timed out ({timeout:g}s)")
        elif escaped is not None:
            self.stop(f"{type(escaped).__name__} escaped a stage")
        if self.tasks:  # only after a stop: let cancelled stages unwind, leave no orphans
            await asyncio.wait(self.tasks.values())
        if self.stopping and not parked:  # a waiting run's other stages are pending
            self.settle()
        if parked:
            status = RunStatus.WAITING
        elif cancelled is not None or timed_out:
            status = RunStatus.CANCELLED
            if timed_out:
                assert timeout is not None
                self.first_error = RunTimeoutError.of(self.run_id, timeout)
        else:
            status = RunStatus.FAILED if self.failed or escaped else RunStatus.COMPLETED
        duration = self.now() - self.t0
        self.ended = True
        if self.sink is not None:
            summary: dict[str, Any] = {"status": status.value, "duration": duration,
                                       **self.outcomes.counts()}  # fmt: skip
            if parked:
                summary["waiting_for"] = [pending.name for pending in self.inputs.waiting_for()]
            self.event(_RUN_EVENT[status], None, 0, summary)
        if cancelled is not None:
            raise cancelled
        if escaped is not None:
            raise escaped
        return RunResult(
            self.run_id,
            self.pipeline,
            status,
            StageResults(self.outcomes, self.graph.index, self.parts),
            started_at=wall_start,
            duration=duration,
            error=self.first_error,
            sink_errors=self.sink_errors,
            usage=EMPTY_USAGE if self.ledger is None else self.ledger.summary(self.pipeline),
            waiting_for=self.inputs.waiting_for() if parked else (),
        )

    def time_out(self) -> None:
        """The run's timeout is up (a timer on the clock): unless it ended, it stops."""
        if not self.done.done():
            self.timed_out = True
            self.done.set_result(None)

    def ready(self, i: int) -> None:
        """Stage i may start: start it now if a slot is free, else queue it."""
        if self.active < self.limit:
            self.active += 1
            self.launch(i)
        else:
            self.queue.append(i)

    def launch(self, i: int) -> None:
        """Give stage i (which holds a slot) a task of its own.

        At most LAUNCH_AHEAD tasks wait for their first step at any time; past that, stages
        wait in the backlog and each worker that begins launches the next one. The order
        in which stages begin is the same, but a fan-out of 100 000 stages no longer keeps
        100 000 task objects alive at once for the garbage collector to walk over and over.
        """
        if self.unstarted < LAUNCH_AHEAD:
            self.unstarted += 1
            self.tasks[i] = self.loop.create_task(self.worker(i))
        else:
            self.backlog.append(i)

    async def worker(self, i: int) -> None:
        first = i
        calls = self.calls
        specs = self.graph.stages
        outcomes = self.outcomes
        outputs = outcomes.outputs
        status = outcomes.status
        times = outcomes.times
        attempts = outcomes.attempts
        sink = self.sink
        pressure = self.pressure
        now = self.now
        t0 = self.t0
        guards = self.guards
        routing = self.routing
        durable = self.durable
        names = outcomes.names
        self.unstarted -= 1
        if self.backlog:
            self.launch(self.backlog.popleft())
        try:
            while True:
                if pressure is not None:  # only with a sink that has pressure(), e.g. "block"
                    wait = pressure()
                    if wait is not None:  # the sink is full: wait for room before starting
                        try:
                            while wait is not None:  # woken together, not all may start
                                await wait
                                wait = pressure()
                        except asyncio.CancelledError:
                            if self.stopping:
                                raise  # the stage never started: settle() skips it
                            # A cancel the run did not cause (see record_stray_cancel).
                            i = self.finish(i, self.record_stray_cancel(i))
                            if i < 0:
                                return
                            continue
                spec = specs[i]
                ctx = new_context(self, i, spec)
                if guards and i in guards:  # a condition: false is a branch not taken
                    code = -1 if durable is None else self.recall(i, ctx)
                    if code < 0:  # not decided by an earlier driver: ask it (inline: W8)
                        try:
                            if guards[i](ctx):
                                code = 0
                            else:
                                self.not_taken(i, CONDITION_FALSE)
                                code = _UNTAKEN if durable is None else _SAVE_UNTAKEN
                        except Exception as error:  # noqa: BLE001 - fails its stage
                            code = self.record_failure(i, error)
                    if code:
                        if code == _SAVE_UNTAKEN:
                            code = await self.save_untaken(i, ctx)
                        i = self.finish(i, code)
                        if i < 0:
                            return
                        continue
                if sink is not None:
                    self.event(EventType.STAGE_STARTED, names[i], 1, {"kind": spec.kind.value})
                times[2 * i] = now() - t0
                attempts[i] = 1  # a retrying interceptor counts further attempts
                try:
                    out: object = await calls[i](ctx)  # raw when no interceptor normalizes
                except asyncio.CancelledError:
                    times[2 * i + 1] = now() - t0
                    if self.stopping:
                        self.record_cancelled(i)
                        raise
                    code = self.record_stray_cancel(i)
                except Exception as exc:  # noqa: BLE001 - a stage's error is its outcome
                    times[2 * i + 1] = now() - t0
                    code = self.record_failure(i, exc)
                else:
                    times[2 * i + 1] = now() - t0
                    if type(out) is dict and (routing is None or i not in routing):  # inline
                        outputs[i] = out
                        status[i] = code = COMPLETED
                    else:
                        code = self.record_output(i, out)
                i = self.finish(i, code)
                if i < 0:
                    return
        except asyncio.CancelledError:
            raise  # the run stopped: this stage is recorded as cancelled
        except BaseException as escaped:
            # A stage raised a BaseException that is no Exception (KeyboardInterrupt,
            # SystemExit, your own), or stageflow itself failed: never leave the run waiting
            # forever. Engine.run stops the other stages and raises it, as TaskGroup does.
            if self.outcomes.status[i] == NONE:
                self.record_failure(i, escaped)
                if self.sink is not None:
                    self.stage_event(i)
            if not self.done.done():
                self.done.set_exception(escaped)
            if isinstance(escaped, KeyboardInterrupt | SystemExit):
                raise  # asyncio stops the loop for these
        finally:
            del self.tasks[first]

    # ------------------------------------------------------------------ recording outcomes

    def record_output(self, i: int, out: object) -> int:
        """Record what stage i returned (not a dict); return its status code."""
        outcomes = self.outcomes
        if isinstance(out, StageOutput):
            code = CODE[out.status]
            outcomes.outputs[i] = out.data
            if out.reason is not None:
                outcomes.reasons[i] = out.reason
            if code == FAILED:
                outcomes.errors[i] = StageFailedError.of(outcomes.names[i], out.reason or "")
            elif code == COMPLETED and self.routing is not None and i in self.routing:
                return self.record_route(i, out)
            elif out.routes is not None and code == COMPLETED:
                name = outcomes.names[i]
                return self.record_failure(i, RouteError(
                    f"stage {name!r} returned StageOutput.route(...) but is no ROUTE "
                    "stage: declare it with StageKind.ROUTE and routes=(...)",
                    stage=name, chosen=out.routes, routes=(),
                ))  # fmt: skip
        elif self.routing is not None and i in self.routing:  # a ROUTE stage, no choice
            return self.record_route(i, normalize_output(outcomes.names[i], out))
        elif out is None:
            code = COMPLETED
            outcomes.outputs[i] = {}
        elif isinstance(out, Mapping):
            code = COMPLETED
            outcomes.outputs[i] = dict(out)
        else:
            return self.record_failure(i, InvalidOutputError.of(outcomes.names[i], out))
        outcomes.status[i] = code
        return code

    def record_route(self, i: int, out: StageOutput) -> int:
        """Record what ROUTE stage i returned, its choice checked; return its code."""
        outcomes = self.outcomes
        routes = self.graph.stages[i].routes
        assert routes is not None
        try:
            every = check_route(outcomes.names[i], routes, out)
        except RouteError as error:  # no data: as when the check raises inside the chain
            outcomes.outputs[i] = None
            return self.record_failure(i, error)
        outcomes.outputs[i] = out.data
        outcomes.status[i] = COMPLETED
        outcomes.reasons[i] = routed_reason(out.routes)  # type: ignore[arg-type]
        if every:  # all its routes taken: a plain completion
            return COMPLETED
        self.chosen[i] = out.routes  # type: ignore[assignment]
        return _ROUTED

    def record_failure(self, i: int, error: BaseException) -> int:
        outcomes = self.outcomes
        outcomes.status[i] = FAILED
        outcomes.errors[i] = error
        outcomes.reasons[i] = redacted(f"{type(error).__name__}: {error}")
        return FAILED

    def record_cancelled(self, i: int) -> None:
        """Stage i was cancelled by a stop."""
        if self.parked:  # an input stage waiting when the run stopped to wait (park())
            self.outcomes.status[i] = WAITING
            self.outcomes.reasons[i] = WAITING_REASON
            return
        self.outcomes.status[i] = CANCELLED
        self.outcomes.reasons[i] = self.stop_reason
        if self.sink is not None:
            self.stage_event(i)

    def record_stray_cancel(self, i: int) -> int:
        """A CancelledError the run did not cause: the stage let one out, or someone
        cancelled this task. Fail the stage rather than hang or tear down the run."""
        task = asyncio.current_task()
        if task is not None:
            while task.cancelling():
                task.uncancel()
        name = self.outcomes.names[i]
        error = StageCancelledError(
            f"stage {name!r} raised CancelledError without the run cancelling it", stage=name
        )
        return self.record_failure(i, error)

    def finish(self, i: int, code: int) -> int:
        """Stage i ended with ``code``; return the stage this worker runs next, or -1."""
        self.remaining -= 1
        if self.sink is not None:
            self.stage_event(i)
        if self.stopping:
            return -1
        nxt = -1
        if code == COMPLETED:
            pending = self.pending
            blocked = self.blocked
            for j in self.graph.successors[i]:
                p = pending[j] - 1
                pending[j] = p
                if p == 0:
                    if blocked and j in blocked:
                        self.resolve(j)
                    elif nxt < 0:
                        nxt = j
                    elif self.active < self.limit:  # self.ready(j), inline: W2's hot loop
                        self.active += 1
                        if self.unstarted < LAUNCH_AHEAD:  # self.launch(j), inline
                            self.unstarted += 1
                            self.tasks[j] = self.loop.create_task(self.worker(j))
                        else:
                            self.backlog.append(j)
                    else:
                        self.queue.append(j)
        elif code == _ROUTED:
            nxt = self.route(i)
        elif code == _UNTAKEN:
            self.untake(i, self.graph.successors[i])
        else:
            name = self.outcomes.names[i]
            if code == FAILED:
                self.failed += 1
                if self.first_error is None:
                    self.first_error = self.outcomes.errors[i]
                if self.fail_fast:
                    self.stop(f"stage {name!r} failed (fail_fast)")
                    return -1
                self.block_successors(i, f"dependency {name!r} failed")
            else:
                self.block_successors(i, f"dependency {name!r} was skipped")
        if nxt < 0:
            if self.queue:
                nxt = self.queue.popleft()
            else:
                self.active -= 1
                if not self.active and self.waits:  # nothing runs but waits for input
                    self.park()
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)
        return nxt

    # ------------------------------------------------------------------ waiting for input

    def wait_begins(self, parks: bool) -> None:
        """An input stage begins to wait: it gives its slot up (to a stage queued for
        one). ``parks``: once nothing else runs, the run stops to wait (see park())."""
        if parks:
            self.waits += 1
        if self.queue:
            self.launch(self.queue.popleft())  # the slot goes on to it
            return
        self.active -= 1
        if not self.active and self.waits:
            self.park()

    def wait_ends(self, parks: bool) -> None:
        """An input stage got its value (or its deadline passed): it runs on, in a slot."""
        if parks:
            self.waits -= 1
        self.active += 1

    def park(self) -> None:
        """Nothing runs and input stages wait: the run stops, its result says it waits.

        Decided one loop turn later, when it still holds: tasks already scheduled (the
        other items of an input per item) take their first step before."""
        self.loop.call_soon(self._park)

    def _park(self) -> None:
        if not self.active and self.waits and not self.done.done():
            self.parked = True
            self.done.set_result(None)

    # ------------------------------------------------------------------ branches not taken

    def recall(self, i: int, ctx: StageContext) -> int:
        """Stage i has a condition and the run is durable: what an earlier driver decided
        (never asked again), or -1 when none did."""
        assert self.durable is not None
        name = ctx.stage
        restored = self.durable.restored
        stored = restored.get(name)
        if stored is None:
            nested = self.graph.stages[i].dynamic
            if isinstance(nested, LoopSpec):  # no record of its own: one of its stages'?
                inside = nested.prefix(name, 1)[: len(name) + 1]  # "refine[" or "etl."
                if any(path.startswith(inside) for path in restored):
                    return 0  # it ran: its condition held
            return -1
        if stored.reason == CONDITION_FALSE and stored.status is StageStatus.SKIPPED:
            self.not_taken(i, CONDITION_FALSE)
            return _UNTAKEN
        return 0  # it ran: its stored outcome is restored through its chain

    async def save_untaken(self, i: int, ctx: StageContext) -> int:
        """Store that stage i's condition was false, before anything depends on it."""
        assert self.durable is not None
        try:
            await self.durable.save(ctx, StageOutput.skip(CONDITION_FALSE))
        except Exception as error:  # noqa: BLE001 - e.g. the lease was lost: the stage fails
            del self.outcomes.reasons[i]
            return self.record_failure(i, error)
        return _UNTAKEN

    def not_taken(self, i: int, reason: str) -> None:
        self.outcomes.status[i] = SKIPPED
        self.outcomes.reasons[i] = reason

    def route(self, i: int) -> int:
        """ROUTE stage i completed: its routes it did not choose are edges not taken.

        Returns the stage this worker runs next, as finish() does for a completion.
        """
        chosen = self.chosen.pop(i)
        routes = self.graph.routes[i]
        index = self.graph.index
        taken = {index[name] for name in chosen}
        skipped = [j for j in routes if j not in taken]
        reason = f"not routed by {self.outcomes.names[i]!r}"
        for j in skipped:  # skipped whatever its other dependencies do (see resolve())
            self.unrouted[j] = reason
        self.untake(i, skipped)
        nxt = -1
        pending = self.pending
        for j in self.graph.successors[i]:
            if j in routes and j not in taken:
                continue
            pending[j] -= 1
            if pending[j] == 0:
                if j in self.blocked:
                    self.resolve(j)
                elif nxt < 0:
                    nxt = j  # this worker goes on with it, in its slot
                else:
                    self.ready(j)
        return nxt

    def untake(self, i: int, successors: Iterable[int]) -> None:
        """The edges from stage i to ``successors`` are not taken."""
        pending = self.pending
        blocked = self.blocked
        untaken = self.untaken
        for j in successors:
            untaken[j] = untaken.get(j, 0) + 1
            if j not in blocked:
                blocked[j] = _NOT_TAKEN
            pending[j] -= 1
            if pending[j] == 0:
                self.resolve(j)

    def resolve(self, j: int) -> None:
        """Stage j's last dependency ended and some did not complete: skip or start it.

        A join runs when at least one path into it was taken and none failed; it is
        skipped as not taken only when no path into it was taken.
        """
        why = self.blocked[j]
        if why is not _NOT_TAKEN:
            self.skip(j)
        elif j not in self.unrouted and self.untaken[j] < self.graph.in_degree[j]:
            del self.blocked[j]  # a dependency completed: the join runs
            self.ready(j)
        else:  # no path into it was taken, or a ROUTE stage did not choose it
            reason = self.unrouted.get(j, "not reached: no path into it was taken")
            self.not_taken(j, reason)
            self.remaining -= 1
            if self.sink is not None:
                self.stage_event(j)
            self.untake(j, self.graph.successors[j])

    # ------------------------------------------------------------------ the failure paths

    def block_successors(self, i: int, reason: str) -> None:
        """Stage i did not complete: skip its dependents, except through optional edges."""
        specs = self.graph.stages
        successors = self.graph.successors
        pending = self.pending
        blocked = self.blocked
        stack = [(i, reason)]
        while stack:
            k, why = stack.pop()
            name = specs[k].name
            for j in successors[k]:
                if blocked.get(j, _NOT_TAKEN) is _NOT_TAKEN and name not in specs[j].optional:
                    blocked[j] = why
                pending[j] -= 1
                if pending[j] == 0:
                    if j not in blocked:
                        self.ready(j)
                    elif blocked[j] is _NOT_TAKEN:
                        self.resolve(j)
                    else:
                        self.skip(j, cascade=False)
                        stack.append((j, f"dependency {specs[j].name!r} was skipped"))

    def skip(self, j: int, *, cascade: bool = True) -> None:
        """Record stage j as skipped because of a dependency (it never runs)."""
        self.outcomes.status[j] = SKIPPED
        self.outcomes.reasons[j] = self.blocked[j]
        self.remaining -= 1
        if self.sink is not None:
            self.stage_event(j)
        if cascade:
            self.block_successors(j, f"dependency {self.outcomes.names[j]!r} was skipped")

    def stop(self, reason: str) -> None:
        """Start no more stages and cancel the running ones (fail-fast or cancellation)."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.queue.clear()
        self.backlog.clear()
        current = asyncio.current_task()
        for task in self.tasks.values():
            if task is not current:
                task.cancel()
        if not self.done.done():
            self.done.set_result(None)

    def abort(self, error: BaseException) -> None:
        """End the run as failed with ``error``, whatever its stages are doing."""
        if self.first_error is None:
            self.first_error = error
        self.failed += 1
        self.stop(redacted(f"{type(error).__name__}: {error}"))

    def settle(self) -> None:
        """After a stop: give every stage that has no outcome one."""
        status = self.outcomes.status
        for j in range(len(status)):
            # A stage that started has an outcome by now (completed, failed, or cancelled
            # by its worker), so one without an outcome never started.
            if status[j] == NONE:
                status[j] = SKIPPED
                self.outcomes.reasons[j] = f"not started: {self.stop_reason}"
                if self.sink is not None:
                    self.stage_event(j)

    # ------------------------------------------------------------------ events

    def stage_event(self, i: int) -> None:
        outcomes = self.outcomes
        data: dict[str, Any] = {}
        restored = outcomes.restored
        if restored is not None and i in restored:  # what its outcome took when it ran
            attempts, started, ended = restored[i]
            if started is not None and ended is not None:
                data["duration"] = ended - started
        else:
            attempts = outcomes.attempts[i]
            if attempts:
                data["duration"] = outcomes.times[2 * i + 1] - outcomes.times[2 * i]
        reason = outcomes.reasons.get(i)
        if reason is not None:
            data["reason"] = reason
        error = outcomes.errors.get(i)
        if error is not None:
            data["error"] = type(error).__qualname__
        self.event(_STAGE_EVENT[outcomes.status[i]], outcomes.names[i], attempts, data)  # type: ignore[arg-type]

    def unstored(self) -> list[UsageRecord]:
        """Usage reports no stage end has stored yet (for the run's end to store)."""
        return [] if self.ledger is None else self.ledger.unstored()
