"""TracingInterceptor: an OpenTelemetry span per run, and one per stage inside it."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._clock import is_loop_clock
from .._context import StageCall, StageContext
from .._dynamic import InputSpec, MapSpec
from .._redact import SECRETS, redacted
from .._result import RunResult, RunStatus
from .._run import RunCall, RunContext
from .._spec import StageSpec
from .._status import StageStatus
from ..errors import ConfigurationError
from ._base import Priority
from ._telemetry import (
    ATTEMPTS,
    FAILED,
    ITEM_INDEX,
    ITEM_KEY,
    KIND,
    OUTCOME,
    PIPELINE,
    REASON,
    RESTORED,
    RESUMED,
    RUN_ID,
    STAGE,
    STAGES,
    USAGE_REPORTED,
    TelemetryErrors,
    outcome_of,
    outcome_of_error,
    report_attributes,
    restored,
    stage_path,
    usage_attributes,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .._graph import StageGraph
    from ..ports import Clock, UsageRecord


class TracingInterceptor(TelemetryErrors):
    """Traces every run as an OpenTelemetry span, with a child span per stage.

    The run span (``run <pipeline>``) is a child of the span current where the run
    was started (so a run started inside a request's span joins its trace); every
    stage span (``stage <name>``) is a direct child of the run span. The stage's
    own code runs inside its span, in threads too, so the spans it creates (an
    HTTP client's, an LLM SDK's) nest under it.

    Dynamic stages: a stage of a subgraph or of a loop's iteration has a span that is a
    child of the subgraph's or loop's own span; a map stage's calls are its items, each
    with a span, child of the span the map runs in (the run's, or an enclosing
    subgraph's or loop's; the map has none of its own), carrying ``stageflow.item.key``
    and ``stageflow.item.index``. Their ``stageflow.stage`` is their name in the run
    (``etl.fetch``, ``refine[2].critique``, ``score[<key>]``); their span names are
    their place in the graph (``stage etl.fetch``, ``stage refine.critique``,
    ``stage score``): span names never carry a key or an iteration.

    What the spans carry:

    - run span: ``stageflow.run_id``, ``stageflow.pipeline``,
      ``stageflow.run.stages``, ``stageflow.run.resumed``, and at the end
      ``stageflow.outcome`` (the run's status). Stages skipped without running (a
      dependency failed) appear as ``stageflow.stage.skipped`` events on it.
    - stage span: ``stageflow.run_id``, ``stageflow.pipeline``, ``stageflow.stage``
      (its name in the run: ``ctx.stage``), ``stageflow.stage.kind``, an item's
      ``stageflow.item.key`` and ``stageflow.item.index``, and at the end
      ``stageflow.attempts`` and
      ``stageflow.outcome`` (completed, failed, skipped, cancelled or restored);
      ``stageflow.reason`` for a skip or a ``StageOutput.fail``. Each retry adds a
      ``stageflow.stage.retry`` event (attempt, delay, the error) to it.
    - usage, on the span of a stage that reported some (``ctx.usage.report``), in
      this driver of the run, all attempts, failed ones too: ``gen_ai.usage.input_tokens``
      and ``gen_ai.usage.output_tokens`` (the OpenTelemetry GenAI conventions' names),
      ``gen_ai.request.model`` when it used one model, ``stageflow.usage.models``
      (every model it used), ``stageflow.usage.cost`` when known (GenAI has no cost
      attribute); and per report a ``stageflow.usage.reported`` event at its time
      (tokens, model, cost, ``stageflow.attempt``). A stage that reports nothing
      gets none of them, for nothing.
    - a failure records the exception (an ``exception`` event) and sets the span's
      status to ERROR; success leaves the status unset, as the OTel conventions ask
      of instrumentation.

    With no SDK configured (no provider given and no global one set when the engine
    first runs a graph) it wraps nothing and costs nothing: set the global provider
    at start-up, before the first run.

    Args:
        tracer_provider: where spans go (default: the global one).
        priority: where it sits in the chain (default 100: outermost, so that its
            span covers everything the other interceptors do).
    """

    name = "tracing"
    transparent = True  # looks at outputs, passes them through untouched: see Interceptor

    def __init__(
        self, *, tracer_provider: TracerProvider | None = None, priority: int = Priority.TRACING
    ) -> None:
        if tracer_provider is not None and not callable(
            getattr(tracer_provider, "get_tracer", None)
        ):
            raise ConfigurationError(
                f"tracer_provider must be an OpenTelemetry TracerProvider, not {tracer_provider!r}",
                field="tracer_provider",
                value=tracer_provider,
            )
        self.tracer_provider = tracer_provider
        self.priority = priority
        self.errors = 0

    def _tracer(self) -> Tracer | None:
        from opentelemetry import trace

        from .._version import __version__

        provider = self.tracer_provider or trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None  # no SDK configured: every span would be a no-op
        return provider.get_tracer("stageflow", __version__)

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Run the stage inside a span of its own, child of the run's span."""
        tracer = self._tracer()
        if tracer is None:
            return call
        from opentelemetry import context, trace

        start_span, attach, detach = tracer.start_span, context.attach, context.detach
        in_context = trace.set_span_in_context
        name = spec.name
        kind = spec.kind.value
        span_name = f"stage {name}"
        static = {STAGE: name, KIND: kind}
        # Decided here: only a map's calls (its items) read an item's key and index.
        dynamic = spec.dynamic
        item = isinstance(dynamic, MapSpec) or (
            isinstance(dynamic, InputSpec) and dynamic.map is not None
        )

        async def traced(ctx: StageContext) -> Any:
            span = None
            stage = ctx.stage  # the spec's name but for an item or a nested stage
            try:
                if stage == name:
                    attributes: dict[str, str | int] = {
                        RUN_ID: ctx.run_id, PIPELINE: ctx.pipeline, **static
                    }  # fmt: skip
                    started = span_name
                else:  # an item (score[3]), or a stage of a subgraph or loop (etl.fetch)
                    attributes = {RUN_ID: ctx.run_id, PIPELINE: ctx.pipeline, STAGE: stage,
                                  KIND: kind}  # fmt: skip
                    owner = stage
                    if item:
                        key = attributes[ITEM_KEY] = ctx.item_key
                        attributes[ITEM_INDEX] = ctx.item_index
                        owner = stage[: len(stage) - len(key) - 2]  # the map's name in the run
                    # Named by its place in the graph, never by a key or an iteration: span
                    # names stay as few as the graphs' stages.
                    started = span_name if owner == name else f"stage {stage_path(owner)}"
                span = start_span(
                    started,
                    attributes=attributes,
                    start_time=_ns(ctx.clock),
                    record_exception=False,
                    set_status_on_exception=False,
                )
                token = attach(in_context(span))
            except Exception as error:  # noqa: BLE001 - telemetry never breaks a run
                self.failed(error, f"starting the span of stage {stage!r}")
                if span is not None:  # started, but not made current: end it still
                    with contextlib.suppress(Exception):
                        span.end(_ns(ctx.clock))
                return await call(ctx)
            try:
                output = await call(ctx)
            except BaseException as error:
                detach(token)
                self._end_failed(span, ctx, error)
                raise
            detach(token)
            try:
                outcome, reason = outcome_of(output)
                if restored(ctx, stage):
                    outcome = RESTORED
                ended: dict[str, str | int] = {ATTEMPTS: ctx.attempts, OUTCOME: outcome}
                if reason is not None:
                    ended[REASON] = reason
                    if outcome == FAILED:
                        _error_status(span, reason)
                span.set_attributes(ended)
                reports = ctx.usage_reports  # () for next to nothing: most stages report none
                if reports:
                    _add_usage(span, reports)
                span.end(_ns(ctx.clock))
            except Exception as error:  # noqa: BLE001
                self.failed(error, f"ending the span of stage {stage!r}")
            return output

        traced.__qualname__ = f"traced({name})"
        return traced

    def _end_failed(self, span: Span, ctx: StageContext, error: BaseException) -> None:
        try:
            outcome = outcome_of_error(error)
            if outcome == FAILED:
                _record_exception(span, error)
                _error_status(span, f"{type(error).__name__}: {error}")
            span.set_attributes({ATTEMPTS: ctx.attempts, OUTCOME: outcome})
            reports = ctx.usage_reports  # what a failed stage spent counts too
            if reports:
                _add_usage(span, reports)
            span.end(_ns(ctx.clock))
        except Exception as failure:  # noqa: BLE001
            self.failed(failure, f"ending the span of stage {ctx.stage!r}")

    def wrap_run(self, graph: StageGraph, call: RunCall) -> RunCall:
        """Drive the run inside its span: the parent of every stage span."""
        tracer = self._tracer()
        if tracer is None:
            return call
        from opentelemetry import context, trace

        span_name = f"run {graph.name}"
        static: dict[str, str | int] = {PIPELINE: graph.name, STAGES: len(graph.stages)}

        async def traced_run(run: RunContext) -> RunResult:
            try:
                span = tracer.start_span(
                    span_name,
                    attributes={RUN_ID: run.run_id, RESUMED: run.resumed, **static},
                    start_time=_ns(run.clock),
                    record_exception=False,
                    set_status_on_exception=False,
                )
                token = context.attach(trace.set_span_in_context(span))
            except Exception as error:  # noqa: BLE001 - telemetry never breaks a run
                self.failed(error, f"starting the span of run {run.run_id!r}")
                return await call(run)
            try:
                result = await call(run)
            except BaseException as error:
                context.detach(token)
                try:
                    outcome = outcome_of_error(error)
                    if outcome == FAILED:
                        _record_exception(span, error)
                        _error_status(span, f"{type(error).__name__}: {error}")
                    span.set_attribute(OUTCOME, outcome)
                    span.end(_ns(run.clock))
                except Exception as failure:  # noqa: BLE001
                    self.failed(failure, f"ending the span of run {run.run_id!r}")
                raise
            context.detach(token)
            try:
                self._end_run(span, result, _ns(run.clock))
            except Exception as failure:  # noqa: BLE001
                self.failed(failure, f"ending the span of run {run.run_id!r}")
            return result

        traced_run.__qualname__ = f"traced_run({graph.name})"
        return traced_run

    @staticmethod
    def _end_run(span: Span, result: RunResult, end_time: int | None) -> None:
        span.set_attribute(OUTCOME, result.status.value)
        for name in result.with_status(StageStatus.SKIPPED):
            stage = result[name]
            if stage.attempts == 0:  # skipped without running: it has no span of its own
                span.add_event("stageflow.stage.skipped", {STAGE: name, REASON: stage.reason or ""})
        for pending in result.waiting_for:  # the run stopped to wait: for what
            span.add_event("stageflow.input.waiting", {STAGE: pending.name})
        if result.status is not RunStatus.COMPLETED and result.status is not RunStatus.WAITING:
            error = result.error
            _error_status(
                span,
                result.status.value if error is None else f"{type(error).__name__}: {error}",
            )
        span.end(end_time)

    def __repr__(self) -> str:
        return f"<TracingInterceptor priority={self.priority}>"


def _add_usage(span: Span, reports: Sequence[UsageRecord]) -> None:
    """The stage's usage on its span: the totals, and an event per report at its time."""
    span.set_attributes(usage_attributes(reports))
    for report in reports:
        span.add_event(USAGE_REPORTED, report_attributes(report), int(report.at * 1e9))


def _error_status(span: Span, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, redacted(description)))


def _record_exception(span: Span, error: BaseException) -> None:
    """``span.record_exception(error)``, known secrets masked in its message and trace."""
    if not SECRETS.active:
        span.record_exception(error)
        return
    import traceback

    span.add_event("exception", {
        "exception.type": f"{type(error).__module__}.{type(error).__qualname__}",
        "exception.message": redacted(str(error)),
        "exception.stacktrace": redacted("".join(traceback.format_exception(error))),
        "exception.escaped": "False",
    })  # fmt: skip


def _ns(clock: Clock) -> int | None:
    """Now on ``clock``'s wall time, in the nanoseconds spans take; None (the SDK reads
    the time itself, the same) for the default LoopClock."""
    return None if is_loop_clock(clock) else int(clock.wall() * 1e9)
