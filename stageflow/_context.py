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
from types import MappingProxyType, UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    NamedTuple,
    TypeAlias,
    TypeVar,
    Union,
    cast,
    get_origin,
    is_typeddict,
    overload,
)

from . import _codec
from ._check import integer, number
from ._events import EventType
from ._ledger import StageUsage, UsageLedger
from ._outputref import OutputRef
from ._secrets import SecretRef, resolve_secret
from ._services import RunServices
from ._stage import Stage, StageOutput, StageReturn
from ._status import COMPLETED
from .errors import ConfigurationError, InputTypeError, MissingInputError, StageCancelledError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ._durable import DurableRun
    from ._legacy import ContextSnapshot, Entry
    from ._spec import StageSpec
    from .ports import Clock, UsageRecord

__all__ = [
    "InputsSnapshot",
    "LoopInfo",
    "StageCall",
    "StageContext",
    "StageFunction",
    "StageInputs",
    "StageLike",
    "StageState",
    "SyncStageFunction",
]

_MISSING: Final[Any] = object()
_T = TypeVar("_T")
_D = TypeVar("_D")
_CUSTOM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*")


class StageContext:
    """What a running stage sees.

    Attributes:
        spec: the stage's frozen :class:`~stageflow.StageSpec` (name, kind, options).
        attempt: 1 for the first call, 2 for the first retry, ...
    """

    __slots__ = ("_abandoned", "_index", "_run", "attempt", "spec")

    def __init__(
        self,
        run: RunServices = _MISSING,
        index: int = 0,
        spec: StageSpec = _MISSING,
        attempt: int = 1,
        *,
        snapshot: Any = _MISSING,
        inputs: Any = None,
        stage_name: str = "pipeline_entry",
        timer: Any = None,
    ) -> None:
        self._run = run
        self._index = index
        self.spec = spec
        self.attempt = attempt
        self._abandoned = False
        if run is _MISSING:  # stageflow-core's hand-built entry context (deprecated)
            from ._legacy import entry

            if snapshot is _MISSING:
                raise TypeError(
                    "StageContext() is made by the engine; a hand-built entry context "
                    "takes snapshot=, as stageflow-core's did"
                )
            self._run = entry(snapshot, inputs, stage_name, timer)  # type: ignore[assignment]
            self.__class__ = _EntryContext

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
        """This stage's name in the run: ``spec.name``, prefixed inside a subgraph or a
        loop (``etl.fetch``, ``refine[2].critique``); for an item of a map stage, the
        name its outcome is kept under (``score[3]``, ``score[<key>]``)."""
        return self._run.outcomes.names[self._index]

    @property
    def item(self) -> Any:
        """The item this call of a map stage is for (``with_map``).

        Raises:
            ConfigurationError: the stage is not a map stage.
        """
        return self._run.item_of(self._index)[0]

    @property
    def item_index(self) -> int:
        """The item's position in the map's items (``with_map``)."""
        return self._run.item_of(self._index)[1]

    @property
    def item_key(self) -> str:
        """The item's key: ``key(item)`` of ``with_map(key=)``, else its index as str."""
        return self._run.item_of(self._index)[2]

    @property
    def loop(self) -> LoopInfo | None:
        """Inside a loop stage's body: the iteration (``ctx.loop.iteration``, from 1)
        and the previous iteration's output (``ctx.loop.previous``, None in the first);
        else None."""
        return self._run.loop_of()

    @property
    def data(self) -> Mapping[str, Any]:
        """The run's initial data (read-only)."""
        return self._run.data

    @property
    def snapshot(self) -> ContextSnapshot:
        """stageflow-core's view of the run's input (deprecated; read ``ctx.data``).

        Built from the run's data (``input_text``, ``topology``, ``execution_mode``,
        ``extensions``, ``metadata``, the ids) on each access, with a warning.
        """
        from ._legacy import deprecated, snapshot_of

        deprecated("ctx.snapshot", "read the run's data: ctx.data['input_text']")
        return snapshot_of(self._run.run_id, self._run.data)

    @property
    def inputs(self) -> StageInputs:
        """The outputs of this stage's dependencies, by stage name.

        Inside a subgraph or a loop, a stage also sees the inputs of the stage it is
        inside; an item of a map stage sees the map's inputs.
        """
        run = self._run
        if run.items is not None:
            return run.enclosing.inputs  # type: ignore[union-attr]
        return StageInputs(run, self._index, self.spec)

    @property
    def idempotency_key(self) -> str:
        """``"<run_id>:<stage>"``: the same on every attempt and every resume of this run.

        Pass it to external services so that a stage re-run after a crash or a retry
        does not repeat a side effect. Each item of a map, and each iteration of a
        loop, has its own (``ctx.stage`` names it).
        """
        return f"{self._run.run_id}:{self.stage}"

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

    @property
    def usage_reports(self) -> tuple[UsageRecord, ...]:
        """What this stage reported in this driver of the run, report by report (all
        its attempts), for interceptors: what the telemetry ones read when it ends.

        Makes no ledger: empty, for next to nothing, when the stage reported nothing.
        """
        ledger = self._run.ledger
        return () if ledger is None else ledger.reported(self.stage)

    async def secret(self, ref: SecretRef) -> SecretStr:
        """The secret ``ref`` names, resolved now (``env``, ``file``, or a scheme of the
        engine's ``secrets=``), as a pydantic ``SecretStr``: masked in ``repr``, ``str``
        and f-strings; ``.get_secret_value()`` gives its text, which stageflow masks
        wherever it writes text from now on and refuses to store.

        Raises:
            ConfigurationError: ``ref`` is no SecretRef, or it cannot be resolved (naming
                the reference, never a value).
        """
        return await resolve_secret(ref, self._run.secrets)

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
        return new_context(self._run, self._index, self.spec, attempt)

    def report_restored(
        self, attempts: int, started: float | None = None, ended: float | None = None
    ) -> None:
        """Say that this stage's outcome was restored, not run: what it took back then.

        A checkpointing interceptor that returns a stored outcome instead of calling
        the stage calls it, e.g. with a :class:`~stageflow.ports.StageRecord`'s
        ``attempts``, ``started`` and ``ended``. The stage's ``StageResult`` (and its
        terminal event) then report those attempts and that duration, not this run's
        single call of no length. ``started`` and ``ended`` are seconds since the run
        started, as the driver that ran the stage recorded them.

        Raises:
            ConfigurationError: ``attempts`` is not an int >= 1, or the times are not
                numbers >= 0 with ``ended`` >= ``started``.
        """
        attempts = integer(attempts, "attempts", "an int >= 1", ge=1)
        if started is not None:
            started = number(started, "started", "a number of seconds >= 0", ge=0)
        if ended is not None:
            least = 0.0 if started is None else started
            ended = number(ended, "ended", f"a number of seconds >= {least:g}", ge=least)
        outcomes = self._run.outcomes
        if outcomes.restored is None:
            outcomes.restored = {}
        outcomes.restored[self._index] = (attempts, started, ended)

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
                f"stage {self.stage!r}: event() takes an EventType, not {type!r}; "
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
                f"stage {self.stage!r}: event type must be a dotted name like "
                f"'progress' or 'custom.progress', not {type!r}",
                field="type",
                value=type,
            )
        self._run.emit(self, type if type.startswith("custom.") else "custom." + type, data)

    def __repr__(self) -> str:
        return f"<StageContext {self.stage!r} run={self._run.run_id!r} attempt={self.attempt}>"


class _EntryContext(StageContext):
    """stageflow-core's hand-built entry context (deprecated): what ``graph.run(ctx)``
    takes. It only carries a snapshot to the run; the engine makes the stages' contexts.
    """

    __slots__ = ()  # the layout of StageContext: _run holds the Entry

    @property
    def _entry(self) -> Entry:
        return cast("Entry", self._run)

    @property
    def snapshot(self) -> ContextSnapshot:
        """The snapshot it was made with."""
        return self._entry.snapshot

    @property
    def inputs(self) -> StageInputs:
        """The inputs it was made with (none: the entry context has no dependencies)."""
        return cast("StageInputs", self._entry.inputs)

    @property
    def stage(self) -> str:
        """Its ``stage_name``."""
        return self._entry.stage_name

    @property
    def data(self) -> Mapping[str, Any]:
        """The run data its snapshot stands for."""
        return MappingProxyType(self._entry.snapshot.to_data())

    def __repr__(self) -> str:
        return f"<StageContext {self._entry.stage_name!r}: a hand-built entry context>"


_new_context = object.__new__


def new_context(run: RunServices, index: int, spec: StageSpec, attempt: int = 1) -> StageContext:
    """A context for attempt ``attempt`` of stage ``index`` of ``run``: how the engine makes
    them, without the constructor's checks for stageflow-core's hand-built contexts (a
    context per stage: this is on every stage's path)."""
    ctx: StageContext = _new_context(StageContext)
    ctx._run = run
    ctx._index = index
    ctx.spec = spec
    ctx.attempt = attempt
    ctx._abandoned = False
    return ctx


class LoopInfo(NamedTuple):
    """Where a stage of a loop's body is: ``ctx.loop``.

    Attributes:
        iteration: the iteration, from 1.
        previous: the previous iteration's output (its ``output_stage``'s data), None
            in the first.
    """

    iteration: int
    previous: Mapping[str, Any] | None


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
            enclosing = self._run.enclosing
            if enclosing is not None and dependency in enclosing.inputs._known():
                return enclosing.inputs._output(dependency)
            deps = ", ".join(map(repr, self._known())) or "none"
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

    def _known(self) -> tuple[str, ...]:
        """The stages this stage may read: its dependencies, then those it sees through
        the stage it is inside (a subgraph's, a loop's)."""
        enclosing = self._run.enclosing
        if enclosing is None:
            return self._spec.dependencies
        return self._spec.dependencies + enclosing.inputs._known()

    def __getitem__(self, dependency: str) -> Mapping[str, Any]:
        """The output of ``dependency``, read-only."""
        output = self._output(dependency)
        if output is None:
            raise _no_output(self._spec.name, dependency)
        return MappingProxyType(output)  # read-only: siblings see the same output

    @overload
    def get_from(self, dependency: str, key: str, default: Any = ...) -> Any: ...

    @overload
    def get_from(self, dependency: str, key: str, *, type: type[_T]) -> _T: ...

    @overload
    def get_from(
        self,
        dependency: str,
        key: str,
        default: _D,
        *,
        type: type[_T],
    ) -> _T | _D: ...

    def get_from(
        self,
        dependency: str,
        key: str,
        default: Any = _MISSING,
        *,
        type: Any = None,  # noqa: A002 - reads as the type asked for
    ) -> Any:
        """One value of a dependency's output; with ``type=``, checked and typed.

        ``get_from("fetch", "pages", type=int)`` is typed ``int`` for a type checker
        and checked at run time with ``isinstance`` (an ``int`` passes for ``float``,
        as type checkers allow). A parameterized type is checked on its outer class
        only (``list[str]``: a list); a ``TypedDict`` as a Mapping with its required
        keys. A ``default`` is returned as it is, unchecked. Without ``type=`` the
        value is typed ``Any``.

        Args:
            dependency: the dependency's stage name.
            key: the key in its output data.
            default: returned when the dependency did not complete or has no such
                key; without it, that is a :class:`~stageflow.errors.MissingInputError`.
            type: the class the value must be an instance of.

        Raises:
            MissingInputError: ``dependency`` is not a dependency of this stage, or
                the value is missing and no default was given.
            InputTypeError: the value is not of ``type`` (a MissingInputError and a
                TypeError, naming stage, dependency, key and both types).
            ConfigurationError: ``type`` is not a class.
        """
        return _value_of(self._spec.name, self._output(dependency), dependency, key, default,
                         type)  # fmt: skip

    def __iter__(self) -> Iterator[str]:
        status = self._run.outcomes.status
        index = self._run.graph.index
        for dependency in self._spec.dependencies:
            if status[index[dependency]] == COMPLETED:
                yield dependency
        enclosing = self._run.enclosing
        if enclosing is not None:
            yield from (d for d in enclosing.inputs if d not in self._spec.dependencies)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, dependency: object) -> bool:
        return isinstance(dependency, str) and (
            dependency in self._known() and self._output(dependency) is not None
        )

    def __repr__(self) -> str:
        return f"<StageInputs of {self._spec.name!r}: {list(self)}>"

    def snapshot(self) -> InputsSnapshot:
        """These inputs as plain data: what a stage whose call runs elsewhere reads (the
        outputs themselves, not copies: the snapshot gives read-only views of them, and a
        runner may tell one it has sent before by its identity). An output a runner left
        where it ran (an :class:`~stageflow.OutputRef`) is kept as that reference, for
        the runner to hand on."""
        outputs: dict[str, Mapping[str, Any]] = {}
        for d in self:
            output = self._output(d)
            assert output is not None  # iterating gives the completed ones
            plain = type(output) is dict or isinstance(output, OutputRef)
            outputs[d] = output if plain else dict(output)
        return InputsSnapshot(self._spec.name, outputs, self._known())


class InputsSnapshot(Mapping[str, Mapping[str, Any]]):
    """A stage's inputs, copied: what ``ctx.inputs`` is where a runner runs the call
    (another process, another machine). The same reads, the same errors as
    :class:`StageInputs`; picklable."""

    __slots__ = ("_known", "_outputs", "_stage")

    def __init__(self, stage: str, outputs: Mapping[str, Mapping[str, Any]],
                 known: tuple[str, ...]) -> None:  # fmt: skip
        self._stage = stage
        self._outputs = outputs
        self._known = known

    def _output(self, dependency: str) -> Mapping[str, Any] | None:
        if dependency not in self._known:
            deps = ", ".join(map(repr, self._known)) or "none"
            raise MissingInputError(
                f"stage {self._stage!r} asked for the output of {dependency!r}, "
                f"which is not one of its dependencies ({deps})",
                stage=self._stage,
                dependency=dependency,
                key=None,
            )
        return self._outputs.get(dependency)

    def __getitem__(self, dependency: str) -> Mapping[str, Any]:
        """The output of ``dependency``, read-only."""
        output = self._output(dependency)
        if output is None:
            raise _no_output(self._stage, dependency)
        return MappingProxyType(output)

    def get_from(self, dependency: str, key: str, default: Any = _MISSING, *,
                 type: Any = None) -> Any:  # noqa: A002  # fmt: skip
        """One value of a dependency's output (see :meth:`StageInputs.get_from`)."""
        return _value_of(self._stage, self._output(dependency), dependency, key, default, type)

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def __contains__(self, dependency: object) -> bool:
        return dependency in self._outputs

    def __repr__(self) -> str:
        return f"<InputsSnapshot of {self._stage!r}: {list(self._outputs)}>"


def _no_output(stage: str, dependency: str) -> MissingInputError:
    return MissingInputError(
        f"stage {stage!r}: optional dependency {dependency!r} did not complete, so it has no "
        "output; use get_from(..., default=...)",
        stage=stage,
        dependency=dependency,
        key=None,
    )


def _value_of(stage: str, output: Mapping[str, Any] | None, dependency: str, key: str,
              default: Any, expected: Any) -> Any:  # fmt: skip
    """``get_from``'s answer, for the output of ``dependency`` (None: it did not complete)."""
    if output is not None:
        value = output.get(key, _MISSING)
        if value is not _MISSING:
            if expected is not None and not _is_a(value, expected):
                raise _wrong_type(stage, dependency, key, expected, value)
            return value
    if expected is not None:
        _is_a(None, expected)  # a type= that cannot be checked is refused even when unused
    if default is not _MISSING:
        return default
    if output is None:
        why = f"optional dependency {dependency!r} did not complete"
    else:
        keys = ", ".join(map(repr, output)) or "none"
        why = f"the output of {dependency!r} has no key {key!r} (keys: {keys})"
    raise MissingInputError(
        f"stage {stage!r}: {why}",
        stage=stage,
        dependency=dependency,
        key=key,
    )


def _wrong_type(
    stage: str, dependency: str, key: str, expected: Any, value: object
) -> InputTypeError:
    want = getattr(expected, "__qualname__", None) or repr(expected)
    if get_origin(expected) is not None:
        want = repr(expected).replace("typing.", "")  # list[str], int | None
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InputTypeError.of(stage, dependency, key, want, type(value).__qualname__, shown)


def _is_a(value: object, expected: Any) -> bool:
    """Whether ``value`` passes for ``expected`` in ``get_from(..., type=expected)``."""
    if is_typeddict(expected):
        required: frozenset[str] = expected.__required_keys__
        return isinstance(value, Mapping) and required.issubset(value.keys())
    origin = get_origin(expected)
    cls = expected if origin is None or origin is Union or origin is UnionType else origin
    if cls is float and isinstance(value, int) and not isinstance(value, bool):
        return True
    try:
        return isinstance(value, cls)
    except TypeError:
        raise ConfigurationError(
            f"get_from(..., type={expected!r}): type must be a class that isinstance() "
            "can check, e.g. int, str, dict, list[str] or a TypedDict",
            field="type",
            value=expected,
        ) from None


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


StageCall: TypeAlias = Callable[[StageContext], Awaitable[StageOutput]]
"""The call an interceptor wraps: takes the context, returns an awaitable of the output.

An interceptor that is not ``transparent`` is given, and passes on, StageOutputs.
"""

StageFunction: TypeAlias = Callable[[StageContext], Awaitable[StageReturn]]
"""An async function stage: ``async def f(ctx: StageContext) -> StageReturn``."""

SyncStageFunction: TypeAlias = Callable[[StageContext], StageReturn]
"""A plain function stage, run in a worker thread: ``def f(ctx: StageContext) -> StageReturn``."""

StageLike: TypeAlias = StageFunction | SyncStageFunction | type[Stage] | Stage
"""Whatever ``with_stage`` takes as a stage: an async or plain function of the context,
a class with ``execute(self, ctx)`` (instantiated for every attempt) or an object with
``execute(ctx)``."""
