"""The Interceptor protocol, BaseInterceptor, and how a chain is composed."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._context import StageCall, StageContext
from .._run import RunCall, RunContext
from .._spec import StageSpec
from .._stage import StageOutput
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .._graph import StageGraph

__all__ = [
    "BaseInterceptor",
    "Interceptor",
    "Priority",
    "RunInterceptor",
    "SelectiveInterceptor",
    "TransparentInterceptor",
    "compose",
    "compose_run",
    "sort_interceptors",
]


class Priority(enum.IntEnum):
    """Default priorities of the built-in interceptors: lower runs first (outer).

    Tracing is outermost so that its span covers everything, retries included;
    checkpoint sits outside retry so that a restored stage runs nothing; assistance
    between them (a restored stage is not assisted again; a pre-validation runs once, a
    diagnosis after the last attempt); timeout is
    innermost so that it limits one attempt. ``USER`` (1000) is the default for
    your own interceptors: closest to the stage.
    """

    TRACING = 100
    METRICS = 200
    LOGGING = 300
    CHECKPOINT = 400
    ASSISTANCE = 450
    RETRY = 500
    CIRCUIT_BREAKER = 600
    BUDGET = 700
    TIMEOUT = 800
    USER = 1000


@runtime_checkable
class Interceptor(Protocol):
    """Wraps the call of a stage.

    The contract: ``wrap(spec, call)`` is called once per stage when the engine
    first runs a graph (not per run, not per call) and returns the call to use
    instead of ``call`` — or ``call`` itself when this interceptor does not apply
    to that stage, which then costs that stage nothing. The returned call takes
    the :class:`~stageflow.StageContext` and returns (an awaitable of) a
    :class:`~stageflow.StageOutput`; it must await ``call`` at most once per
    attempt it makes and let ``asyncio.CancelledError`` through.

    What the built-in interceptors reach of a run, yours can too, through the
    context: ``ctx.clock``, ``ctx.event``/``ctx.emit`` (safe from any thread),
    ``ctx.ledger`` (usage and budgets) and ``ctx.durable`` (the run's store).

    Three optional members, each a Protocol of its own so that it is typed and
    documented, are looked for once per graph (or once per run), never per call:

    - ``transparent`` (:class:`TransparentInterceptor`): it passes results through;
    - ``wrap_run`` (:class:`RunInterceptor`): it also wraps whole runs;
    - ``applies`` (:class:`SelectiveInterceptor`): it may sit a run out.

    ``name`` and ``priority`` are read-only members of the Protocol, so a class
    attribute (``priority = Priority.USER``), an instance attribute or a property
    all satisfy it.
    """

    @property
    def name(self) -> str:
        """For errors, logs and docs."""
        ...

    @property
    def priority(self) -> int:
        """Lower wraps outer (runs first, ends last); ties keep the order in which the
        interceptors were given to the Engine."""
        ...

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Return the call to use for this stage."""
        ...


@runtime_checkable
class TransparentInterceptor(Interceptor, Protocol):
    """An interceptor that says whether it passes the inner call's result through.

    With ``transparent = True`` it promises to return what the inner call returned,
    unchanged. When only such interceptors wrap a stage, they receive the stage's
    raw result (a dict, None, ...) rather than a :class:`~stageflow.StageOutput`,
    which saves a layer per call; one that looks at results (the telemetry
    interceptors do) must then accept raw results too.
    """

    transparent: bool


@runtime_checkable
class RunInterceptor(Interceptor, Protocol):
    """An interceptor that also wraps whole runs (a run's span, its duration).

    ``wrap_run(graph, call)`` is called once per graph, like ``wrap``, with a call
    that takes a :class:`~stageflow.RunContext` and returns the
    :class:`~stageflow.RunResult`; the engine drives every run of that graph through
    the composed calls, outermost first by ``priority``, and the stages of the run
    execute inside them (tasks inherit the context variables ``wrap_run`` sets, e.g.
    the current span). Return ``call`` itself when it does not apply.
    """

    def wrap_run(self, graph: StageGraph, call: RunCall) -> RunCall:
        """Return the call to use for the runs of this graph."""
        ...


@runtime_checkable
class SelectiveInterceptor(Interceptor, Protocol):
    """An interceptor that may wrap no stage of a run, decided once per run.

    ``applies(run)`` is called once at the start of each run, inside the ``wrap_run``
    hooks; when it returns False, the run's stage calls are composed without this
    interceptor (its ``wrap_run`` still applies), so it costs the run's stages
    nothing. Each combination is composed once per graph and kept. E.g.
    :class:`~stageflow.LoggingInterceptor` sits out the stages of a run whose stage
    records would all be dropped by their level.
    """

    def applies(self, run: RunContext) -> bool:
        """Whether to wrap the stages of this run."""
        ...


class BaseInterceptor:
    """An interceptor written as hooks; override those you need.

    Hooks you do not override cost nothing: ``wrap`` builds a call with only the
    ones you did. Override :meth:`applies_to` to leave some stages alone.

    Example:
        >>> class Audit(BaseInterceptor):
        ...     priority = 900
        ...
        ...     async def after(self, ctx, output):
        ...         print(f"{ctx.stage} -> {dict(output.data)}")
        ...         return None  # keep the output
    """

    name: str = ""
    priority: int = Priority.USER

    def __init__(self, *, name: str | None = None, priority: int | None = None) -> None:
        if name is not None:
            self.name = name
        if priority is not None:
            self.priority = priority
        if not self.name:
            self.name = type(self).__name__

    def applies_to(self, spec: StageSpec) -> bool:
        """Whether to wrap this stage at all (default: every stage)."""
        return True

    async def before(self, ctx: StageContext) -> StageOutput | None:
        """Called before the stage; return an output to skip the call and use it instead."""
        return None

    async def after(self, ctx: StageContext, output: StageOutput) -> StageOutput | None:
        """Called after the stage returned; return an output to replace its output."""
        return None

    async def on_error(self, ctx: StageContext, error: Exception) -> StageOutput | None:
        """Called when the stage raised; return an output to recover, None to re-raise."""
        return None

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Return ``call`` with the overridden hooks around it (``call`` itself if none apply)."""
        if not self.applies_to(spec):
            return call
        cls = type(self)
        before = self.before if cls.before is not BaseInterceptor.before else None
        after = self.after if cls.after is not BaseInterceptor.after else None
        on_error = self.on_error if cls.on_error is not BaseInterceptor.on_error else None
        if before is None and after is None and on_error is None:
            return call

        async def intercepted(ctx: StageContext) -> Any:
            if before is not None:
                early = await before(ctx)
                if early is not None:
                    return early
            if on_error is None:
                output = await call(ctx)
            else:
                try:
                    output = await call(ctx)
                except Exception as error:
                    recovered = await on_error(ctx, error)
                    if recovered is None:
                        raise
                    return recovered
            if after is not None:
                replaced = await after(ctx, output)
                if replaced is not None:
                    return replaced
            return output

        intercepted.__qualname__ = f"{self.name}({spec.name})"
        return intercepted

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} priority={self.priority}>"


def sort_interceptors(interceptors: Sequence[object]) -> tuple[Interceptor, ...]:
    """Validate interceptors and order them outermost first (stable on priority ties)."""
    checked: list[Interceptor] = []
    for position, interceptor in enumerate(interceptors):
        priority = getattr(interceptor, "priority", None)
        if isinstance(interceptor, type):
            raise ConfigurationError(
                f"interceptors[{position}] = {interceptor.__qualname__} is a class; pass an "
                f"instance: {interceptor.__qualname__}()",
                field="interceptors",
                value=interceptor,
            )
        if not callable(getattr(interceptor, "wrap", None)):
            raise ConfigurationError(
                f"interceptors[{position}] = {interceptor!r} has no wrap(spec, call) method",
                field="interceptors",
                value=interceptor,
            )
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ConfigurationError(
                f"interceptors[{position}] = {interceptor!r}: priority must be an int, "
                f"not {priority!r}",
                field="interceptors",
                value=interceptor,
            )
        if not isinstance(getattr(interceptor, "name", None), str):
            raise ConfigurationError(
                f"interceptors[{position}] = {interceptor!r}: name must be a str",
                field="interceptors",
                value=interceptor,
            )
        checked.append(interceptor)  # type: ignore[arg-type]
    return tuple(sorted(checked, key=lambda ic: ic.priority))


def compose(
    spec: StageSpec,
    interceptors: Sequence[Interceptor],
    inner: StageCall,
    normalizing: Callable[[StageCall], StageCall],
) -> StageCall:
    """Wrap ``inner`` in ``interceptors`` (outermost first) for one stage.

    Each interceptor's ``wrap`` is called once. The first one that is not
    ``transparent`` is handed ``normalizing(call)``, so that it and those outside it
    see StageOutputs; the transparent ones inside it pass the raw result through.
    """
    call = inner
    normalized = False
    for interceptor in reversed(interceptors):
        if normalized or (
            isinstance(interceptor, TransparentInterceptor) and interceptor.transparent
        ):
            wrapped = interceptor.wrap(spec, call)
        else:
            candidate = normalizing(call)
            wrapped = interceptor.wrap(spec, candidate)
            if wrapped is candidate:  # it does not apply: no layer at all
                wrapped = call
            else:
                normalized = True
        if not callable(wrapped):
            raise ConfigurationError(
                f"interceptor {interceptor.name!r} returned {wrapped!r} from wrap() for stage "
                f"{spec.name!r}; wrap must return a call",
                field="interceptors",
                value=interceptor,
            )
        call = wrapped
    return call


def compose_run(graph: StageGraph, interceptors: Sequence[Interceptor], inner: RunCall) -> RunCall:
    """Wrap ``inner`` in the ``wrap_run`` hooks of those interceptors that define one."""
    call = inner
    for interceptor in reversed(interceptors):
        if not isinstance(interceptor, RunInterceptor):
            continue
        wrapped = interceptor.wrap_run(graph, call)
        if not callable(wrapped):
            raise ConfigurationError(
                f"interceptor {interceptor.name!r} returned {wrapped!r} from wrap_run() for "
                f"pipeline {graph.name!r}; wrap_run must return a call",
                field="interceptors",
                value=interceptor,
            )
        call = wrapped
    return call
