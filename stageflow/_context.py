"""What a running stage sees: its context, its dependencies' outputs, its own state.

A :class:`StageContext` is also how an interceptor reaches the run it is part of:
the engine's clock (``ctx.clock``), thread-safe events (``ctx.event``,
``ctx.emit``), the run's usage ledger (``ctx.ledger``) and, in a durable run, its
link to the store (``ctx.durable``). The built-in interceptors use nothing else,
so an interceptor of your own can do whatever they do.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from . import _codec
from ._events import EventType
from ._ledger import StageUsage, UsageLedger
from ._services import RunServices
from ._status import COMPLETED
from .errors import ConfigurationError, MissingInputError, StageCancelledError

if TYPE_CHECKING:
    from ._durable import DurableRun
    from ._spec import StageSpec
    from .ports import Clock

__all__ = ["StageCall", "StageContext", "StageInputs", "StageState"]

_MISSING: Final[Any] = object()
_CUSTOM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*")


class StageContext:
    """What a running stage sees.

    Attributes:
        spec: the stage's frozen :class:`~stageflow.StageSpec` (name, kind, options).
        attempt: 1 for the first call, 2 for the first retry, ...
    """

    __slots__ = ("_abandoned", "_index", "_run", "attempt", "spec")

    def __init__(self, run: RunServices, index: int, spec: StageSpec, attempt: int = 1) -> None:
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
        return StageUsage(self, self._run.usage_ledger())

    @property
    def ledger(self) -> UsageLedger:
        """The run's usage ledger, for interceptors: reserve, release, report, unstored.

        Made on first use: a run that reports nothing and has no budget has none.
        """
        return self._run.usage_ledger()

    def model(self, preferred: str) -> str:
        """The model to use now for ``preferred``: itself, or a cheaper one of its
        :class:`~stageflow.ModelChain` when a ``downgrade`` budget says so.

        Raises:
            BudgetExceededError: the budget calls for a model below the end of the chain.
        """
        return self._run.usage_ledger().model(self, preferred)

    @property
    def durable(self) -> DurableRun | None:
        """The run's link to its store (restore, save, usage, state), or None when the
        run is not durable (the engine has no store)."""
        return self._run.durable

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

        Safe from any thread: from a sync stage's worker thread the event is handed
        to the event loop, and dropped if its attempt no longer counts by then.

        Args:
            type: an :class:`~stageflow.EventType` (e.g. ``EventType.STAGE_RETRYING``).
            **data: the event's payload, as documented for that type.
        """
        if not isinstance(type, EventType):
            raise ConfigurationError(
                f"stage {self.spec.name!r}: event() takes an EventType, not {type!r}; "
                "use emit() for your own events",
                field="type",
                value=type,
            )
        self._run.emit(self, type, data, own=True)

    def emit(self, type: str, **data: Any) -> None:  # noqa: A002 - mirrors Event.type
        """Send a ``custom.<type>`` event to the engine's sink (safe from any thread;
        dropped once this attempt no longer counts).

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
                field="type",
                value=type,
            )
        self._run.emit(self, type if type.startswith("custom.") else "custom." + type, data)

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

    def __init__(self, run: RunServices, index: int, spec: StageSpec) -> None:
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
                stage=self._spec.name,
                dependency=dependency,
                key=None,
            )
        j = self._run.graph.index[dependency]
        outcomes = self._run.outcomes
        return outcomes.outputs[j] if outcomes.status[j] == COMPLETED else None

    def __getitem__(self, dependency: str) -> Mapping[str, Any]:
        """The output of ``dependency``, read-only."""
        output = self._output(dependency)
        if output is None:
            raise MissingInputError(
                f"stage {self._spec.name!r}: optional dependency {dependency!r} did not "
                "complete, so it has no output; use get_from(..., default=...)",
                stage=self._spec.name,
                dependency=dependency,
                key=None,
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
            f"stage {self._spec.name!r}: {why}",
            stage=self._spec.name,
            dependency=dependency,
            key=key,
        )

    def __iter__(self) -> Iterator[str]:
        status = self._run.outcomes.status
        index = self._run.graph.index
        for dependency in self._spec.dependencies:
            if status[index[dependency]] == COMPLETED:
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
        ctx = self._ctx
        if ctx.cancelled:
            raise StageCancelledError(
                f"stage {ctx.stage!r}: attempt {ctx.attempt} no longer counts; its state "
                "was not saved",
                stage=ctx.stage,
            )
        durable = ctx.durable
        if durable is None:
            ctx._run.states[ctx.stage] = _codec.dumps(
                value, f"the state of stage {ctx.stage!r}", stage=ctx.stage
            )
        else:
            await durable.save_state(ctx.stage, value)

    async def load(self, default: Any = None) -> Any:
        """The state last saved by this stage in this run (by any attempt), or ``default``."""
        ctx = self._ctx
        durable = ctx.durable
        if durable is None:
            text = ctx._run.states.get(ctx.stage)
            return default if text is None else _codec.loads(text)
        return await durable.load_state(ctx.stage, default)


StageCall: TypeAlias = Callable[[StageContext], Awaitable[Any]]
"""The call an interceptor wraps: takes the context, returns (an awaitable of) the output."""
