"""What a stage is, what it sees while it runs, and what it leaves behind."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, runtime_checkable

from ._events import EventType
from ._status import COMPLETED as _COMPLETED_CODE
from ._status import StageKind, StageStatus
from .errors import ConfigurationError, MissingInputError, StageCancelledError

if TYPE_CHECKING:
    from ._durable import Checkpointing
    from ._graph import StageGraph
    from ._ledger import StageUsage, UsageLedger
    from ._outcomes import Outcomes
    from ._spec import StageSpec
    from .ports import Clock, EventSink

__all__ = [
    "Stage",
    "StageCall",
    "StageContext",
    "StageInputs",
    "StageKind",
    "StageOutput",
    "StageResult",
    "StageState",
    "StageStatus",
]

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_MISSING: Final[Any] = object()
_StageUsage: Any = None  # stageflow._ledger.StageUsage, once ctx.usage was first read
_CUSTOM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*")


class StageOutput:
    """What a stage returns: its data, or that it skipped or failed.

    A stage may also return a plain Mapping (same as ``StageOutput.ok(**mapping)``)
    or None (same as ``StageOutput.ok()``). Instances are immutable.

    Example:
        >>> StageOutput.ok(summary="3 pages").data["summary"]
        '3 pages'
        >>> StageOutput.skip("nothing to do").status
        <StageStatus.SKIPPED: 'skipped'>
    """

    __slots__ = ("data", "reason", "status")

    status: StageStatus
    data: Mapping[str, Any]
    reason: str | None

    def __init__(
        self,
        status: StageStatus = StageStatus.COMPLETED,
        data: Mapping[str, Any] = _EMPTY,
        reason: str | None = None,
    ) -> None:
        if status is StageStatus.CANCELLED or not isinstance(status, StageStatus):
            raise ConfigurationError(
                f"StageOutput status must be completed, skipped or failed, not {status!r}",
                "status",
                status,
            )
        setattr_ = object.__setattr__
        setattr_(self, "status", status)
        setattr_(self, "data", data)
        setattr_(self, "reason", reason)

    @classmethod
    def ok(cls, **data: Any) -> StageOutput:
        """The stage completed with ``data`` as its output."""
        return cls(StageStatus.COMPLETED, data)

    @classmethod
    def skip(cls, reason: str = "skipped by the stage") -> StageOutput:
        """The stage decided not to run; its dependents are skipped with this reason."""
        return cls(StageStatus.SKIPPED, _EMPTY, str(reason))

    @classmethod
    def fail(cls, reason: str | BaseException, **data: Any) -> StageOutput:
        """The stage failed without raising; the run treats it as a raised error."""
        text = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        return cls(StageStatus.FAILED, data, text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"StageOutput is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"StageOutput is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StageOutput):
            return NotImplemented
        return (self.status, self.reason, dict(self.data)) == (
            other.status,
            other.reason,
            dict(other.data),
        )

    __hash__ = None  # type: ignore[assignment]  # data is a mutable mapping

    def __repr__(self) -> str:
        if self.status is StageStatus.COMPLETED:
            return f"StageOutput.ok({', '.join(f'{k}={v!r}' for k, v in self.data.items())})"
        how = "skip" if self.status is StageStatus.SKIPPED else "fail"
        return f"StageOutput.{how}({self.reason!r})"


class StageResult:
    """How one stage of a run ended. Read-only by contract.

    Attributes:
        stage: the stage's name.
        status: completed, failed, skipped or cancelled.
        data: the output data (empty unless completed or failed with data).
        error: the exception that failed the stage, if any.
        reason: why it was skipped or failed, in words.
        attempts: how many attempts were made (0 when it never ran); an attempt
            refused by an open circuit breaker counts.
        started: when it started, in seconds since the run started (None if it never ran).
        ended: when it ended, in seconds since the run started.
    """

    __slots__ = ("attempts", "data", "ended", "error", "reason", "stage", "started", "status")

    def __init__(
        self,
        stage: str,
        status: StageStatus,
        data: Mapping[str, Any] = _EMPTY,
        error: BaseException | None = None,
        reason: str | None = None,
        attempts: int = 0,
        started: float | None = None,
        ended: float | None = None,
    ) -> None:
        self.stage = stage
        self.status = status
        self.data = data
        self.error = error
        self.reason = reason
        self.attempts = attempts
        self.started = started
        self.ended = ended

    @property
    def duration(self) -> float | None:
        """Seconds between start and end, or None if the stage never ran."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        """True when the stage completed."""
        return self.status is StageStatus.COMPLETED

    def __repr__(self) -> str:
        extra = f", reason={self.reason!r}" if self.reason else ""
        return f"<StageResult {self.stage!r} {self.status.value} attempts={self.attempts}{extra}>"


class _Run(Protocol):
    """What a context needs from the run that created it (the scheduler's run state)."""

    run_id: str
    pipeline: str
    data: Mapping[str, Any]
    graph: StageGraph
    outcomes: Outcomes
    stopping: bool
    checkpoint: Checkpointing | None
    states: dict[str, str]
    sink: EventSink | None
    clock: Clock
    t0: float
    ledger: UsageLedger | None

    def emit_custom(self, ctx: StageContext, type_: str, data: dict[str, Any]) -> None: ...

    def usage_ledger(self) -> UsageLedger: ...

    def event(
        self, type_: str, stage: str | None, attempt: int, data: Mapping[str, Any]
    ) -> None: ...


class StageContext:
    """What a running stage sees.

    Attributes:
        spec: the stage's frozen :class:`~stageflow.StageSpec` (name, kind, options).
        attempt: 1 for the first call, 2 for the first retry, ...
    """

    __slots__ = ("_abandoned", "_index", "_run", "attempt", "spec")

    def __init__(self, run: _Run, index: int, spec: StageSpec, attempt: int = 1) -> None:
        self._run = run
        self._index = index
        self.spec = spec
        self.attempt = attempt
        self._abandoned = False

    @property
    def cancelled(self) -> bool:
        """True once this attempt no longer counts.

        That is when it timed out, a newer attempt began, the stage ended or the run
        is stopping. Async stages are cancelled outright; a sync stage running in a
        thread cannot be, so it should poll this in long loops and return early:
        whatever it returns then is discarded anyway.
        """
        run = self._run
        i = self._index
        return (
            self._abandoned
            or run.stopping
            or run.outcomes.status[i] != 0
            or run.outcomes.attempts[i] != self.attempt
        )

    def abandon(self) -> None:
        """Mark this attempt as over (interceptors call it, e.g. on timeout)."""
        self._abandoned = True

    @property
    def run_id(self) -> str:
        """The run's id: stable across resumes of the same run."""
        return self._run.run_id

    @property
    def pipeline(self) -> str:
        """The pipeline's name."""
        return self._run.pipeline

    @property
    def stage(self) -> str:
        """This stage's name."""
        return self.spec.name

    @property
    def data(self) -> Mapping[str, Any]:
        """The run's initial data (read-only)."""
        return self._run.data

    @property
    def inputs(self) -> StageInputs:
        """The outputs of this stage's dependencies, by stage name."""
        return StageInputs(self._run, self._index, self.spec)

    @property
    def idempotency_key(self) -> str:
        """``"<run_id>:<stage>"``: the same on every attempt and every resume of this run.

        Pass it to external services so that a stage re-run after a crash or a retry
        does not repeat a side effect.
        """
        return f"{self._run.run_id}:{self.spec.name}"

    @property
    def clock(self) -> Clock:
        """The engine's clock: interceptors read time and sleep through it."""
        return self._run.clock

    @property
    def started(self) -> float:
        """When this stage's first attempt started, on ``clock.monotonic()``."""
        return self._run.t0 + self._run.outcomes.times[2 * self._index]

    @property
    def run_started(self) -> float:
        """When the run started, on ``clock.monotonic()``."""
        return self._run.t0

    @property
    def attempts(self) -> int:
        """Attempts of this stage made so far (``attempt`` is this context's own)."""
        return self._run.outcomes.attempts[self._index]

    @property
    def state(self) -> StageState:
        """This stage's intra-stage state: ``await ctx.state.save(x)``, ``ctx.state.load()``.

        A long stage saves where it is; after a crash, the resumed attempt loads it
        and goes on from there. Saved in the run's store (fenced by its lease), or
        in memory for a run without a store.
        """
        return StageState(self)

    @property
    def usage(self) -> StageUsage:
        """What this stage spends: ``ctx.usage.report(model=, input_tokens=, output_tokens=)``.

        Report after each model call; budgets (``Engine(budget=)``, ``with_stage(...,
        budget=)``) count it at once, and the run's ``result.usage`` sums it.
        """
        global _StageUsage  # noqa: PLW0603 - imported on first use: _ledger imports this module
        if _StageUsage is None:
            from ._ledger import StageUsage as _StageUsage
        return _StageUsage(self, self._run.usage_ledger())  # type: ignore[no-any-return]

    def model(self, preferred: str) -> str:
        """The model to use now for ``preferred``: itself, or a cheaper one of its
        :class:`~stageflow.ModelChain` when a ``downgrade`` budget says so.

        Raises:
            BudgetExceededError: the budget calls for a model below the end of the chain.
        """
        return self._run.usage_ledger().model(self, preferred)

    @property
    def checkpointing(self) -> Checkpointing | None:
        """The run's link to its CheckpointStore, or None when the run is not durable."""
        return self._run.checkpoint

    def with_attempt(self, attempt: int) -> StageContext:
        """A context for another attempt of this stage; it becomes the current attempt.

        Retrying interceptors call it. Each attempt has its own context, so work left
        over from a superseded attempt (a thread that could not be stopped) can be told
        apart: its custom events are dropped.
        """
        self._run.outcomes.attempts[self._index] = attempt
        return StageContext(self._run, self._index, self.spec, attempt)

    def event(self, type: EventType, **data: Any) -> None:  # noqa: A002 - mirrors Event.type
        """Send one of stageflow's own events about this stage (for interceptors).

        Args:
            type: an :class:`~stageflow.EventType` (e.g. ``EventType.STAGE_RETRYING``).
            **data: the event's payload, as documented for that type.
        """
        if not isinstance(type, EventType):
            raise ConfigurationError(
                f"stage {self.spec.name!r}: event() takes an EventType, not {type!r}; "
                "use emit() for your own events",
                "type",
                type,
            )
        if self._run.sink is not None:
            self._run.event(type, self.spec.name, self.attempt, data)

    def emit(self, type: str, **data: Any) -> None:  # noqa: A002 - mirrors Event.type
        """Send a ``custom.<type>`` event to the engine's sink.

        Args:
            type: the event's name, e.g. ``"progress"``; ``"custom."`` is prepended
                unless already there.
            **data: the event's payload.

        Raises:
            ConfigurationError: if ``type`` is not a dotted identifier.
        """
        if not isinstance(type, str) or _CUSTOM_NAME.fullmatch(type) is None:
            raise ConfigurationError(
                f"stage {self.spec.name!r}: event type must be a dotted name like "
                f"'progress' or 'custom.progress', not {type!r}",
                "type",
                type,
            )
        self._run.emit_custom(self, type if type.startswith("custom.") else "custom." + type, data)

    def __repr__(self) -> str:
        return f"<StageContext {self.spec.name!r} run={self._run.run_id!r} attempt={self.attempt}>"


class StageInputs(Mapping[str, Mapping[str, Any]]):
    """The outputs of a stage's completed dependencies, by dependency name.

    A dependency that was skipped or failed (possible only for an optional one)
    is absent. Asking for a stage that is not a dependency is an error, not a
    silent default: it would otherwise race with that stage.

    Example:
        >>> # inside a stage depending on "fetch":
        >>> # ctx.inputs.get_from("fetch", "pages", default=0)
    """

    __slots__ = ("_index", "_run", "_spec")

    def __init__(self, run: _Run, index: int, spec: StageSpec) -> None:
        self._run = run
        self._index = index
        self._spec = spec

    def _output(self, dependency: str) -> Mapping[str, Any] | None:
        """The dependency's output, or None if it did not complete."""
        if dependency not in self._spec.dependencies:
            deps = ", ".join(map(repr, self._spec.dependencies)) or "none"
            raise MissingInputError(
                f"stage {self._spec.name!r} asked for the output of {dependency!r}, "
                f"which is not one of its dependencies ({deps})",
                self._spec.name,
                dependency,
                None,
            )
        j = self._run.graph.index[dependency]
        outcomes = self._run.outcomes
        return outcomes.outputs[j] if outcomes.status[j] == _COMPLETED_CODE else None

    def __getitem__(self, dependency: str) -> Mapping[str, Any]:
        """The output of ``dependency``, read-only."""
        output = self._output(dependency)
        if output is None:
            raise MissingInputError(
                f"stage {self._spec.name!r}: optional dependency {dependency!r} did not "
                "complete, so it has no output; use get_from(..., default=...)",
                self._spec.name,
                dependency,
                None,
            )
        return MappingProxyType(output)  # read-only: siblings see the same output

    def get_from(self, dependency: str, key: str, default: Any = _MISSING) -> Any:
        """One value of a dependency's output.

        Args:
            dependency: the dependency's stage name.
            key: the key in its output data.
            default: returned when the dependency did not complete or has no such
                key; without it, that is a :class:`~stageflow.errors.MissingInputError`.

        Raises:
            MissingInputError: ``dependency`` is not a dependency of this stage, or
                the value is missing and no default was given.
        """
        output = self._output(dependency)
        if output is not None:
            value = output.get(key, _MISSING)
            if value is not _MISSING:
                return value
        if default is not _MISSING:
            return default
        if output is None:
            why = f"optional dependency {dependency!r} did not complete"
        else:
            keys = ", ".join(map(repr, output)) or "none"
            why = f"the output of {dependency!r} has no key {key!r} (keys: {keys})"
        raise MissingInputError(
            f"stage {self._spec.name!r}: {why}", self._spec.name, dependency, key
        )

    def __iter__(self) -> Iterator[str]:
        status = self._run.outcomes.status
        index = self._run.graph.index
        for dependency in self._spec.dependencies:
            if status[index[dependency]] == _COMPLETED_CODE:
                yield dependency

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, dependency: object) -> bool:
        return isinstance(dependency, str) and (
            dependency in self._spec.dependencies and self._output(dependency) is not None
        )

    def __repr__(self) -> str:
        return f"<StageInputs of {self._spec.name!r}: {list(self)}>"


class StageState:
    """A stage's intra-stage state, for a stage that resumes half-way (see ``ctx.state``)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx

    async def save(self, value: Any) -> None:
        """Keep ``value`` (anything stage outputs may hold) as this stage's state.

        Raises:
            StageCancelledError: this attempt no longer counts (it timed out, a newer
                one began, the run stopped): its state must not overwrite the current.
            CodecError: ``value`` cannot be stored faithfully.
        """
        from . import _codec

        ctx = self._ctx
        if ctx.cancelled:
            raise StageCancelledError(
                f"stage {ctx.stage!r}: attempt {ctx.attempt} no longer counts; its state "
                "was not saved",
                ctx.stage,
            )
        text = _codec.dumps(value, f"the state of stage {ctx.stage!r}")
        durable = ctx.checkpointing
        if durable is None:
            ctx._run.states[ctx.stage] = text
        else:
            await durable.store.save_state(durable.lease, ctx.stage, text)

    async def load(self, default: Any = None) -> Any:
        """The state last saved by this stage in this run (by any attempt), or ``default``."""
        from . import _codec

        ctx = self._ctx
        durable = ctx.checkpointing
        if durable is None:
            text = ctx._run.states.get(ctx.stage)
        else:
            text = await durable.store.load_state(ctx.run_id, ctx.stage)
        return default if text is None else _codec.loads(text)


StageCall: TypeAlias = Callable[[StageContext], Awaitable[Any]]
"""The call an interceptor wraps: takes the context, returns (an awaitable of) the output."""


@runtime_checkable
class Stage(Protocol):
    """A class-based stage: an object with ``execute(ctx)`` (async, or sync to run in a thread).

    Plain functions ``async def f(ctx)`` and ``def f(ctx)`` are stages too.
    """

    def execute(self, ctx: StageContext) -> Any:
        """Run the stage; return a StageOutput, a Mapping or None (awaitable if async)."""
