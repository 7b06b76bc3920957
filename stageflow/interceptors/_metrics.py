"""MetricsInterceptor: OpenTelemetry metrics of stages and runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from .._context import StageCall, StageContext
from .._dynamic import MapSpec
from .._result import RunResult, RunStatus
from .._run import RunCall, RunContext
from .._spec import StageSpec
from .._status import StageStatus
from ..errors import ConfigurationError
from ._base import Priority
from ._telemetry import (
    CANCELLED,
    FAILED,
    MODEL,
    OUTCOME,
    PIPELINE,
    RESTORED,
    STAGE,
    TOKEN_TYPE,
    WAITING,
    TelemetryErrors,
    maps_of,
    outcome_of,
    outcome_of_error,
    restored,
    stage_path,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

    from .._graph import StageGraph
    from ..ports import UsageRecord

# Seconds, from a cache hit to a long LLM call.
BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
_OUTCOMES: Final = ("completed", FAILED, "skipped", CANCELLED, RESTORED, WAITING)
_SKIPPED: Final = StageStatus.SKIPPED


class _ModelUsage:
    """Plain sums of what one (pipeline, stage) reported on one model (or on none)."""

    __slots__ = ("attributes", "by_type", "cost", "input_tokens", "output_tokens")

    def __init__(self, stage: dict[str, str], model: str | None) -> None:
        self.attributes = stage if model is None else {**stage, MODEL: model}
        self.by_type = {t: {**self.attributes, TOKEN_TYPE: t} for t in ("input", "output")}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost: float | None = None  # None until a report with a cost


class _StageStats:
    """Plain counts of one (pipeline, stage), read when metrics are collected."""

    __slots__ = ("active", "attempts", "attributes", "by_outcome", "outcomes", "usage")

    def __init__(self, pipeline: str, stage: str) -> None:
        self.attributes = {PIPELINE: pipeline, STAGE: stage}
        self.by_outcome = {o: {**self.attributes, OUTCOME: o} for o in _OUTCOMES}
        self.outcomes = dict.fromkeys(_OUTCOMES, 0)
        self.attempts = 0
        self.active = 0
        self.usage: dict[str | None, _ModelUsage] = {}  # by model: what the stage reported

    def count_usage(self, reports: tuple[UsageRecord, ...]) -> None:
        """Add an ended stage's reports (this driver's, every attempt) to the sums."""
        for report in reports:
            model = self.usage.get(report.model)
            if model is None:
                model = self.usage[report.model] = _ModelUsage(self.attributes, report.model)
            model.input_tokens += report.input_tokens
            model.output_tokens += report.output_tokens
            if report.cost is not None:
                model.cost = report.cost if model.cost is None else model.cost + report.cost


class MetricsInterceptor(TelemetryErrors):
    """Records OpenTelemetry metrics of every stage and run.

    Instruments (meter ``stageflow``), with bounded attributes only —
    ``stageflow.pipeline``, ``stageflow.stage``, ``stageflow.outcome``, never a run id
    and never an item's key: a map's items count under the map's name (``score``), the
    stages of subgraphs and loops under their path without iterations
    (``etl.fetch``, ``refine.critique``):

    ============================  ==================  ========  ==============================
    name                          kind                unit      value
    ============================  ==================  ========  ==============================
    ``stageflow.stage.duration``  histogram           s         one per executed stage, any
                                                                outcome (not restored ones)
    ``stageflow.stage.outcomes``  counter             {stage}   stages ended, by outcome:
                                                                completed, failed, skipped
                                                                (by themselves or for a
                                                                failed dependency),
                                                                cancelled, restored
    ``stageflow.stage.attempts``  counter             {attempt} attempts made
    ``stageflow.stage.active``    up-down counter     {stage}   stages running now
    ``stageflow.run.duration``    histogram           s         one per run, by pipeline and
                                                                outcome (the run's status)
    ``stageflow.usage.tokens``    counter             {token}   tokens reported
                                                                (``ctx.usage.report``), by
                                                                ``gen_ai.request.model`` and
                                                                ``gen_ai.token.type`` (input,
                                                                output) too
    ``stageflow.usage.cost``      counter (float)     {cost}    the cost of what was
                                                                reported, when known, by
                                                                model too; in the price
                                                                table's currency
    ============================  ==================  ========  ==============================

    The counters are observable: the interceptor keeps plain counts and the SDK
    reads them when it collects, so a stage costs one histogram record, not four
    instrument calls; a stage that reported usage adds its reports to plain sums
    when it ends (a report without a model has no ``gen_ai.request.model``). With
    no SDK configured (no provider given and no global one set when the engine
    first runs a graph) it wraps nothing and costs nothing.

    Args:
        meter_provider: where metrics go (default: the global one).
        priority: where it sits in the chain (default 200).
    """

    name = "metrics"
    transparent = True  # looks at outputs, passes them through untouched: see Interceptor

    def __init__(
        self, *, meter_provider: MeterProvider | None = None, priority: int = Priority.METRICS
    ) -> None:
        if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
            raise ConfigurationError(
                f"meter_provider must be an OpenTelemetry MeterProvider, not {meter_provider!r}",
                field="meter_provider",
                value=meter_provider,
            )
        self.meter_provider = meter_provider
        self.priority = priority
        self.errors = 0
        self._stats: dict[tuple[str, str], _StageStats] = {}
        self._instruments: tuple[Histogram, Histogram] | None = None

    def _histograms(self) -> tuple[Histogram, Histogram] | None:
        """The two histograms, once an SDK is configured (instruments made once)."""
        if self._instruments is not None:
            return self._instruments
        from opentelemetry import metrics
        from opentelemetry.metrics import NoOpMeterProvider

        from .._version import __version__

        provider = self.meter_provider or metrics.get_meter_provider()
        if isinstance(provider, NoOpMeterProvider) or type(provider).__name__ in (
            "_ProxyMeterProvider",  # what get_meter_provider() returns while none is set
        ):
            return None
        meter = provider.get_meter("stageflow", __version__)
        meter.create_observable_counter(
            "stageflow.stage.outcomes",
            [self._observe_outcomes],
            unit="{stage}",
            description="Stages that ended, by outcome",
        )
        meter.create_observable_counter(
            "stageflow.stage.attempts",
            [self._observe_attempts],
            unit="{attempt}",
            description="Attempts made at stages",
        )
        meter.create_observable_up_down_counter(
            "stageflow.stage.active",
            [self._observe_active],
            unit="{stage}",
            description="Stages running now",
        )
        meter.create_observable_counter(
            "stageflow.usage.tokens",
            [self._observe_tokens],
            unit="{token}",
            description="Tokens that stages reported, by model and token type",
        )
        meter.create_observable_counter(
            "stageflow.usage.cost",
            [self._observe_cost],
            unit="{cost}",
            description="The cost of what stages reported, by model (price table currency)",
        )
        self._instruments = (
            meter.create_histogram(
                "stageflow.stage.duration",
                unit="s",
                description="How long stages took, all attempts included",
                explicit_bucket_boundaries_advisory=BUCKETS,
            ),
            meter.create_histogram(
                "stageflow.run.duration",
                unit="s",
                description="How long runs took",
                explicit_bucket_boundaries_advisory=BUCKETS,
            ),
        )
        return self._instruments

    # --------------------------------------------------------------- observable callbacks

    def _observe_outcomes(self, options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        for stats in list(self._stats.values()):
            for outcome, count in list(stats.outcomes.items()):
                if count:
                    yield Observation(count, stats.by_outcome[outcome])

    def _observe_attempts(self, options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        for stats in list(self._stats.values()):
            yield Observation(stats.attempts, stats.attributes)

    def _observe_active(self, options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        for stats in list(self._stats.values()):
            yield Observation(stats.active, stats.attributes)

    def _observe_tokens(self, options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        for stats in list(self._stats.values()):
            for model in list(stats.usage.values()):
                yield Observation(model.input_tokens, model.by_type["input"])
                yield Observation(model.output_tokens, model.by_type["output"])

    def _observe_cost(self, options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        for stats in list(self._stats.values()):
            for model in list(stats.usage.values()):
                if model.cost is not None:
                    yield Observation(model.cost, model.attributes)

    # ---------------------------------------------------------------------------- wrapping

    def _stage_stats(self, pipeline: str, stage: str) -> _StageStats:
        stats = self._stats.get((pipeline, stage))
        if stats is None:
            stats = self._stats[pipeline, stage] = _StageStats(pipeline, stage)
        return stats

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Count the stage's outcome and attempts; record its duration."""
        histograms = self._histograms()
        if histograms is None:
            return call
        record = histograms[0].record
        name = spec.name
        # Decided here: only a map's calls are items, counted under the map's name.
        item = isinstance(spec.dynamic, MapSpec)
        top: _StageStats | None = None  # of the stage itself (not nested): ctx.pipeline

        async def measured(ctx: StageContext) -> Any:
            nonlocal top
            stage = ctx.stage  # the spec's name but for an item or a nested stage
            owner = stage[: len(stage) - len(ctx.item_key) - 2] if item else stage
            if owner == name:  # the stage, or an item of the map, at the graph's top
                if top is None:
                    top = self._stage_stats(ctx.pipeline, name)
                stats = top
            else:  # inside a subgraph or a loop: by its path (refine.critique)
                stats = self._stage_stats(ctx.pipeline, stage_path(owner))
            if restored(ctx, stage):
                output = await call(ctx)  # returns the stored output; nothing runs
                stats.outcomes[RESTORED] += 1
                return output
            stats.active += 1
            try:
                output = await call(ctx)
            except BaseException as error:
                self._ended(stats, ctx, outcome_of_error(error), record)
                raise
            self._ended(stats, ctx, outcome_of(output)[0], record)
            return output

        measured.__qualname__ = f"measured({name})"
        return measured

    def _ended(self, stats: _StageStats, ctx: StageContext, outcome: str, record: Any) -> None:
        stats.active -= 1
        stats.outcomes[outcome] += 1
        stats.attempts += ctx.attempts
        reports = ctx.usage_reports  # () for next to nothing: most stages report none
        if reports:
            stats.count_usage(reports)
        try:
            # From the start of the first attempt, as the scheduler timed it: one clock read.
            record(ctx.clock.monotonic() - ctx.started, stats.by_outcome[outcome])
        except Exception as error:  # noqa: BLE001 - telemetry never breaks a run
            self.failed(error, f"recording the duration of stage {ctx.stage!r}")

    def wrap_run(self, graph: StageGraph, call: RunCall) -> RunCall:
        """Record the run's duration, by pipeline and outcome."""
        histograms = self._histograms()
        if histograms is None:
            return call
        record = histograms[1].record
        by_outcome = {
            outcome: {PIPELINE: graph.name, OUTCOME: outcome}
            for outcome in ("completed", FAILED, CANCELLED, WAITING)
        }

        maps = maps_of(graph)[0]

        async def measured_run(run: RunContext) -> RunResult:
            now = run.clock.monotonic
            started = now()
            try:
                result = await call(run)
            except BaseException as error:
                self._record_run(record, now() - started, by_outcome[outcome_of_error(error)], run)
                raise
            self._record_run(record, result.duration, by_outcome[result.status.value], run)
            pipeline = graph.name
            for name in result.with_status(StageStatus.SKIPPED):
                if result[name].attempts == 0:  # skipped without a call: count it here
                    self._stage_stats(pipeline, stage_path(name)).outcomes["skipped"] += 1
            if maps and result.status is not RunStatus.COMPLETED:
                self._unstarted_items(pipeline, result)
            return result

        measured_run.__qualname__ = f"measured_run({graph.name})"
        return measured_run

    def _unstarted_items(self, pipeline: str, result: RunResult) -> None:
        """Count the items that a map's stop skipped before they started (another item
        failed, the run stopped), as the stages skipped without a call are."""
        for stage in result:
            skipped = sum(1 for i in stage.items if i.attempts == 0 and i.status is _SKIPPED)
            if skipped:
                self._stage_stats(pipeline, stage_path(stage.stage)).outcomes["skipped"] += skipped

    def _record_run(
        self, record: Any, duration: float, attributes: dict[str, str], run: RunContext
    ) -> None:
        try:
            record(duration, attributes)
        except Exception as error:  # noqa: BLE001 - telemetry never breaks a run
            self.failed(error, f"recording the duration of run {run.run_id!r}")

    def __repr__(self) -> str:
        return f"<MetricsInterceptor priority={self.priority}>"
