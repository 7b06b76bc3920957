"""A stage's call run elsewhere: the context it sees there, and what comes back.

What every :class:`~stageflow.ports.StageRunner` does the same way: :func:`detach` makes a
picklable copy of a :class:`~stageflow.StageContext` (its data, its inputs, its item or
iteration, its attempt, its saved state, the trace context), :func:`run_detached` runs
the stage with it on the other side, and :func:`attach` brings back what the stage
reported (usage, state saves) into the engine's run, and returns its output. An
:class:`OutputRef` is an output left where the call ran, for the runner to hand on to
dependents it runs too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import pickle
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ._context import InputsSnapshot, LoopInfo
from ._ledger import NO_DOWNGRADE, ModelPlan, choose_model, no_model_left
from ._sdkusage import usage_of_response
from ._spec import stage_call
from .errors import BudgetExceededError, ConfigurationError, RemoteError

if TYPE_CHECKING:
    from ._context import StageContext

__all__ = ["DetachedContext", "DetachedResult", "attach", "attach_error", "detach", "run_detached"]


class Report(NamedTuple):
    """One ``ctx.usage.report`` made where the call ran."""

    model: str | None
    input_tokens: int
    output_tokens: int
    cost: float | None


class DetachedResult(NamedTuple):
    """What a call run elsewhere gives back: its output (what the stage returned), the
    usage it reported, the state it saved, and the models ``ctx.model()`` chose there
    (``(preferred, chosen)``, chosen None: none was left), in order."""

    output: Any
    reports: tuple[Report, ...]
    states: tuple[Any, ...]
    models: tuple[tuple[str, str | None], ...] = ()


class _Usage:
    """``ctx.usage`` where the call runs: reports are kept, and reach the run's ledger
    and budgets when the call returns (:func:`attach`)."""

    __slots__ = ("reports",)

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def report(self, *, model: str | None = None, input_tokens: int = 0, output_tokens: int = 0,
               cost: float | None = None) -> Report:  # fmt: skip
        """Record what this attempt spent (see :meth:`stageflow.StageUsage.report`)."""
        for name, tokens in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise ConfigurationError(f"usage.report({name}={tokens!r}): a count >= 0",
                                         field=name, value=tokens)  # fmt: skip
        report = Report(model, input_tokens, output_tokens, cost)
        self.reports.append(report)
        return report

    def report_response(self, response: Any, *, model: str | None = None,
                        cost: float | None = None) -> Report:  # fmt: skip
        """Record what an LLM SDK's response says it used (see
        :meth:`stageflow.StageUsage.report_response`)."""
        used = usage_of_response(response)
        return self.report(model=model or used.model, input_tokens=used.input_tokens,
                           output_tokens=used.output_tokens, cost=cost)  # fmt: skip


class _State:
    """``ctx.state`` where the call runs: ``load`` gives what was saved before the call;
    saves reach the store when the call returns, fail or succeed (:func:`attach`)."""

    __slots__ = ("has", "saved", "saves")

    def __init__(self, saved: tuple[bool, Any]) -> None:
        self.has, self.saved = saved
        self.saves: list[Any] = []

    async def save(self, value: Any) -> None:
        """Keep ``value`` as this stage's state."""
        self.has, self.saved = True, value
        self.saves.append(value)

    async def load(self, default: Any = None) -> Any:
        """The state last saved, or ``default``."""
        return self.saved if self.has else default


_NOTHING: Any = object()


class DetachedContext:
    """What a stage's call sees where a runner runs it: a copy of its
    :class:`~stageflow.StageContext`, made by :func:`detach`, that pickles.

    The same reads as the engine's context: ``run_id``, ``pipeline``, ``stage``,
    ``attempt``, ``data``, ``inputs`` (an :class:`~stageflow.InputsSnapshot`: the same
    ``get_from`` and errors), ``item``/``item_index``/``item_key`` in a map,
    ``loop`` in a loop's body, ``idempotency_key``, ``usage.report(...)``,
    ``state.load()``/``state.save()``, ``model(preferred)``. It has no clock, no events
    and no store: the engine keeps those; ``cancelled`` is always False there (the runner stops the
    call itself). ``traceparent`` carries the W3C trace context of the stage's span.
    """

    __slots__ = (
        "_item",
        "_models",
        "_state_saved",
        "attempt",
        "chosen",
        "data",
        "idempotency_key",
        "inputs",
        "loop",
        "pipeline",
        "run_id",
        "stage",
        "state",
        "trace",
        "usage",
    )  # fmt: skip

    def __init__(
        self,
        *,
        run_id: str,
        pipeline: str,
        stage: str,
        attempt: int,
        data: Mapping[str, Any],
        inputs: InputsSnapshot,
        item: tuple[Any, int, str] | None,
        loop: LoopInfo | None,
        idempotency_key: str,
        state: tuple[bool, Any],
        trace: Mapping[str, str],
        models: ModelPlan = NO_DOWNGRADE,
    ) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.stage = stage
        self.attempt = attempt
        self.data = data
        self.inputs = inputs
        self._item = item
        self.loop = loop
        self.idempotency_key = idempotency_key
        self._state_saved = state
        self.trace = dict(trace)
        self._models = models
        self.usage = _Usage()
        self.state = _State(state)
        self.chosen: list[tuple[str, str | None]] = []

    def __getstate__(self) -> dict[str, Any]:
        names = ("attempt", "data", "idempotency_key", "inputs", "loop", "pipeline", "run_id",
                 "stage", "trace", "_item", "_models", "_state_saved")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.usage = _Usage()
        self.state = _State(self._state_saved)
        self.chosen = []

    def model(self, preferred: str) -> str:
        """The model to use for ``preferred``, as :meth:`stageflow.StageContext.model`
        says: the downgrade the budgets called for when the call was sent. What it
        chooses is told in the engine when the call returns (``budget.downgraded``).

        Raises:
            BudgetExceededError: the budget calls for a model below the end of the chain.
        """
        plan = self._models
        target = choose_model(plan, self.stage, preferred)
        if plan.steps:
            self.chosen.append((preferred, target))
        if target is None:
            raise no_model_left(plan, self.stage, preferred)
        return target

    def wire(self) -> tuple[Any, ...]:
        """This context as builtin values only (str, int, dict, tuple, None): what a
        runner sends where serializers have fast paths for them (Ray's cost ten times
        less than for an object); :meth:`from_wire` makes the context again."""
        inputs = self.inputs
        loop = None if self.loop is None else tuple(self.loop)
        models = None if self._models.steps == 0 else tuple(self._models)
        return (self.run_id, self.pipeline, self.stage, self.attempt, dict(self.data),
                dict(inputs._outputs), inputs._stage, inputs._known, self._item, loop,
                self.idempotency_key, self._state_saved, self.trace, models)  # fmt: skip

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> DetachedContext:
        """The context :meth:`wire` gave."""
        (run_id, pipeline, stage, attempt, data, outputs, owner, known, item, loop, key,
         state, trace, models) = wire  # fmt: skip
        return cls(
            run_id=run_id, pipeline=pipeline, stage=stage, attempt=attempt, data=data,
            inputs=InputsSnapshot(owner, outputs, tuple(known)), item=item,
            loop=None if loop is None else LoopInfo(*loop), idempotency_key=key,
            state=tuple(state), trace=trace,
            models=NO_DOWNGRADE if models is None else ModelPlan(*models),
        )  # fmt: skip

    @property
    def item(self) -> Any:
        """The item this call of a map stage is for."""
        return self._map_item()[0]

    @property
    def item_index(self) -> int:
        """The item's position in the map's items."""
        return int(self._map_item()[1])

    @property
    def item_key(self) -> str:
        """The item's key."""
        return str(self._map_item()[2])

    def _map_item(self) -> tuple[Any, int, str]:
        if self._item is None:
            raise ConfigurationError(
                f"stage {self.stage!r} is not a map stage: ctx.item is for with_map(...) stages",
                field="item",
                value=self.stage,
            )
        return self._item

    @property
    def cancelled(self) -> bool:
        """Always False where the call runs: the runner stops a cancelled call itself."""
        return False

    def abandon(self) -> None:
        """Nothing to do where the call runs (see :meth:`stageflow.StageContext.abandon`)."""

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the stage's span in the engine (None: no trace)."""
        return self.trace.get("traceparent")

    def __repr__(self) -> str:
        return f"<DetachedContext {self.run_id}/{self.stage} attempt {self.attempt}>"


async def detach(ctx: StageContext) -> DetachedContext:
    """A picklable copy of ``ctx``, for a stage's call to run elsewhere.

    It holds the run's data (copied) and the stage's inputs, its item or iteration, its
    attempt, the state it saved before (read from the store now) and the trace context
    of the current span (``traceparent``), and the downgrade ``ctx.model()`` makes now.
    """
    from opentelemetry import propagate

    run = ctx._run
    items = run.items
    item = None if items is None else run.item_of(ctx._index)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    saved = await ctx.state.load(_NOTHING)
    state = (False, None) if saved is _NOTHING else (True, saved)
    return DetachedContext(
        run_id=ctx.run_id, pipeline=ctx.pipeline, stage=ctx.stage, attempt=ctx.attempt,
        data=dict(ctx.data), inputs=ctx.inputs.snapshot(), item=item, loop=ctx.loop,
        idempotency_key=ctx.idempotency_key, state=state, trace=carrier,
        models=run.usage_ledger().model_plan(ctx.stage),
    )  # fmt: skip


def run_detached(
    stage: object, ctx: DetachedContext, *, loop: asyncio.Runner | None = None
) -> DetachedResult:
    """Call ``stage`` (what ``with_stage`` was given) with ``ctx``, where a runner runs it,
    inside the trace context ``ctx`` carries: an async stage in an event loop of its own,
    a plain function in the calling thread (so that an interrupt there stops it).
    ``loop``: an :class:`asyncio.Runner` to run async stages on, kept by the caller from
    call to call (a new event loop per call costs more than a small remote call); None:
    a new one each time (``asyncio.run``).

    Returns what the stage returned, with the usage it reported and the state it saved.
    Raises what the stage raised.
    """
    from opentelemetry import context, propagate

    call = stage_call(ctx.stage, stage)
    sync = getattr(call, "sync", None)  # a plain function: called in this thread, no loop
    token = context.attach(propagate.extract(ctx.trace))
    try:
        if loop is None:
            run: Any = asyncio.run
        else:
            kept = loop.get_loop()

            def run(coro: Any) -> Any:
                # Not Runner.run: a SIGINT handler set and reset every call costs three
                # times the rest. The task runs in this context (the trace's), and an
                # interrupt (a cancel) leaves no task behind in the kept loop.
                task = kept.create_task(coro, context=contextvars.copy_context())
                try:
                    return kept.run_until_complete(task)
                except BaseException:
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            kept.run_until_complete(task)
                    raise

        out = sync(ctx) if sync is not None else run(_call(call, ctx))
        if inspect.iscoroutine(out):  # a sync wrapper around an async function
            out = run(out)
    except BaseException as error:  # it travels back with what was spent before it
        raised = error
        if isinstance(error, Exception) and not _pickles(error):
            kind = type(error)
            where = "".join(traceback.format_exception(error))
            raised = RemoteError.of(ctx.stage, f"{kind.__module__}.{kind.__qualname__}",
                                    str(error), where)  # fmt: skip
        with contextlib.suppress(AttributeError, TypeError):  # an error with __slots__
            raised.__dict__[_CARRIED] = DetachedResult(None, tuple(ctx.usage.reports),
                                                       tuple(ctx.state.saves),
                                                       tuple(ctx.chosen))  # fmt: skip
        if raised is error:
            raise
        raise raised from None
    finally:
        context.detach(token)
    return DetachedResult(out, tuple(ctx.usage.reports), tuple(ctx.state.saves),
                          tuple(ctx.chosen))  # fmt: skip


def _pickles(error: BaseException) -> bool:
    """Whether ``error`` comes back from pickling as an error of its type."""
    try:
        return type(pickle.loads(pickle.dumps(error))) is type(error)
    except Exception:  # noqa: BLE001 - any failure means: it does not cross
        return False


_CARRIED = "_stageflow_detached"  # the attribute a failed call's reports travel back in


async def _call(call: Any, ctx: DetachedContext) -> Any:
    out = call(ctx)
    return await out if inspect.isawaitable(out) else out


async def attach_error(ctx: StageContext, error: BaseException) -> BaseException:
    """Bring what a failed call reported and saved before it failed into the engine's
    run (see :func:`attach`); return ``error``, to raise."""
    carried = error.__dict__.pop(_CARRIED, None) if hasattr(error, "__dict__") else None
    if isinstance(carried, DetachedResult):
        with contextlib.suppress(BudgetExceededError):  # recorded; the call's error stands
            await attach(ctx, carried)
    return error


async def attach(ctx: StageContext, result: DetachedResult) -> Any:
    """Bring ``result`` into the engine's run: its usage reports to the run's ledger (and
    budgets), its state saves to the store; return the stage's output.

    Raises:
        BudgetExceededError: a report took a ``block`` budget over (the usage is
            recorded all the same: it was spent).
    """
    for value in result.states:
        await ctx.state.save(value)
    if result.models:  # what ctx.model() chose there, told here (events, budget.exceeded)
        ledger = ctx._run.usage_ledger()
        plan = ledger.model_plan(ctx.stage)
        for preferred, chosen in result.models:
            with contextlib.suppress(BudgetExceededError):  # raised there already
                ledger.chose(ctx, plan, preferred, chosen)
    for report in result.reports:
        ctx.usage.report(model=report.model, input_tokens=report.input_tokens,
                         output_tokens=report.output_tokens, cost=report.cost)  # fmt: skip
    return result.output
