"""W5-otel and W1-noop: stageflow's telemetry interceptors, and the same done by hand.

W5-otel is W5 (W1's chain, every stage with ``timeout=``, ``retry=`` and
``circuit_breaker=``) with a span and metrics per stage, exported to memory:

* stageflow: ``Engine(interceptors=[TracingInterceptor(tracer_provider=tp),
  MetricsInterceptor(meter_provider=mp)])``;
* the reference: ``run_bare_traced``, W5's ``bare.run_bare_guarded`` with the same
  telemetry written by hand: a run span, and per stage a span (child of the run span,
  current while the stage runs: ``context.attach``/``detach``) carrying the attributes the
  interceptor sets, one record in an SDK histogram with the same bounded attributes, and
  the stage's outcome counted in a plain dict that an observable counter reads.

Each side has its own ``Telemetry``: an SDK ``TracerProvider`` with a
``SimpleSpanProcessor(InMemorySpanExporter())`` and an SDK
``MeterProvider(metric_readers=[InMemoryMetricReader()])``. Neither is set as the global
provider. The exporter is cleared before every run, the spans of every run are checked after
it, the metrics after the first (warm-up) run; all of this is untimed.

W1-noop is W1 on stageflow with ``TracingInterceptor()``, ``MetricsInterceptor()`` and
``LoggingInterceptor()`` and no SDK configured anywhere, against W1 on a plain ``Engine()``:
both sides are stageflow. Its first row leaves the LoggingInterceptor out; the second has it,
its records off by level (the logger at WARNING), so that it wraps no stage of the run.

The OpenTelemetry SDK is imported only by ``Telemetry``: W1-noop needs just the API (a
dependency of stageflow).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

from bare import CircuitOpen, GuardedGraph, Resilience, StageSpec
from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode
from workloads import Impl, Runner, stageflow_build

# The attribute names stageflow's interceptors use (stageflow/interceptors/_telemetry.py),
# spelled out so that the bare side never imports stageflow.
RUN_ID: Final = "stageflow.run_id"
PIPELINE: Final = "stageflow.pipeline"
STAGE: Final = "stageflow.stage"
KIND: Final = "stageflow.stage.kind"
ATTEMPTS: Final = "stageflow.attempts"
OUTCOME: Final = "stageflow.outcome"
STAGES: Final = "stageflow.run.stages"

COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
OUTCOMES: Final = (COMPLETED, FAILED, CANCELLED)

# The histograms' bucket boundaries (seconds): MetricsInterceptor's.
BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


class Telemetry:
    """An SDK tracer provider and meter provider, both exporting to memory (not global)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        # Not shut down at exit but by shutdown(): an atexit hook would keep the providers,
        # and through their callbacks the graphs, alive (and the cyclic GC busier) for the
        # rest of the suite.
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.runs = 0  # checked so far

    def check(self, n: int, pipeline: str, duration: str, outcomes: str) -> None:
        """Raise unless the last run left a run span with ``n`` completed stage spans under
        it; after the first run (the warm-up), unless the ``duration`` histogram and the
        ``outcomes`` counter also hold one completed stage for each of the ``n`` stages.

        Metrics are checked once only: collecting them takes about as long as a run.
        """
        self.runs += 1
        spans = self.exporter.get_finished_spans()
        runs = [s for s in spans if s.parent is None]
        stages = [s for s in spans if s.parent is not None]
        if len(runs) != 1 or len(stages) != n:
            raise RuntimeError(
                f"{len(runs)} run spans and {len(stages)} stage spans, not 1 and {n}"
            )
        run = runs[0]
        assert run.context is not None
        for span in stages:
            attributes = span.attributes or {}
            if (
                span.parent is None
                or span.parent.span_id != run.context.span_id
                or attributes.get(OUTCOME) != COMPLETED
                or attributes.get(ATTEMPTS) != 1
                or attributes.get(RUN_ID) != (run.attributes or {}).get(RUN_ID)
                or attributes.get(PIPELINE) != pipeline
            ):
                raise RuntimeError(f"unexpected stage span {span.name}: {dict(attributes)}")
        if self.runs > 1:
            return
        data = self.reader.get_metrics_data()
        assert data is not None
        points = {
            metric.name: metric.data.data_points
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        counts = {
            name: sorted(
                getattr(p, "count", getattr(p, "value", None)) for p in points.get(name, ())
            )
            for name in (duration, outcomes)
        }
        for name, values in counts.items():
            if values != [1] * n:
                raise RuntimeError(f"{name}: {len(values)} data points, not {n} of 1 each")

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.exporter.clear()


# --------------------------------------------------------------------------- W5-otel: by hand


class TracedGraph(GuardedGraph):
    """W5's GuardedGraph plus what per-stage telemetry needs, made once like the breakers:
    a tracer, two histograms, each stage's span name and metric attributes (by outcome),
    and per stage a dict of outcome counts, read by an observable counter."""

    __slots__ = (
        "duration_attributes",
        "outcomes",
        "pipeline",
        "run_duration",
        "span_names",
        "stage_duration",
        "tracer",
    )

    def __init__(
        self, pipeline: str, spec: Sequence[StageSpec], options: Resilience, telemetry: Telemetry
    ) -> None:
        super().__init__(spec, options)
        self.pipeline = pipeline
        self.tracer = telemetry.tracer_provider.get_tracer("bench")
        meter = telemetry.meter_provider.get_meter("bench")
        self.stage_duration = meter.create_histogram(
            "stage.duration", unit="s", explicit_bucket_boundaries_advisory=BUCKETS
        )
        self.run_duration = meter.create_histogram(
            "run.duration", unit="s", explicit_bucket_boundaries_advisory=BUCKETS
        )
        meter.create_observable_counter("stage.outcomes", [self.observe_outcomes], unit="{stage}")
        self.span_names = [f"stage {name}" for name in self.names]
        self.duration_attributes = [
            {o: {PIPELINE: pipeline, STAGE: name, OUTCOME: o} for o in OUTCOMES}
            for name in self.names
        ]
        self.outcomes = [dict.fromkeys(OUTCOMES, 0) for _ in self.names]

    def observe_outcomes(self, options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [
            Observation(count, self.duration_attributes[i][outcome])
            for i, counts in enumerate(self.outcomes)
            for outcome, count in counts.items()
            if count
        ]


async def run_bare_traced(graph: TracedGraph) -> list[Any]:
    """``bare.run_bare_guarded`` with a run span and, per stage, a span and metrics.

    The stage span (``stage <name>``: run id, pipeline, stage and kind when it starts;
    attempts and outcome when it ends) is a child of the run span and current while the
    stage runs; it covers the retry loop, as stageflow's tracing (outermost) does. The
    duration, all attempts included, goes to the histogram with the bounded attributes
    pipeline, stage and outcome; the outcome is counted in the stage's dict of counts.
    A failed stage records its exception and an ERROR status on its span (W5 has none).
    """
    loop = asyncio.get_running_loop()
    funcs = graph.funcs
    names = graph.names
    breakers = graph.breakers
    successors = graph.successors
    opts = graph.options
    limit = opts.timeout
    attempts = opts.attempts
    pipeline = graph.pipeline
    start_span = graph.tracer.start_span
    span_names = graph.span_names
    record = graph.stage_duration.record
    duration_attributes = graph.duration_attributes
    outcomes = graph.outcomes
    perf_counter = time.perf_counter
    waiting = graph.indegree.copy()
    results: list[Any] = [None] * len(funcs)
    tried = [0] * len(funcs)  # attempts made, per stage
    running: dict[int, asyncio.Task[None]] = {}
    done: asyncio.Future[list[Any]] = loop.create_future()
    remaining = len(funcs)
    run_id = uuid.uuid4().hex

    async def attempt(i: int) -> Any:
        tried[i] += 1
        breaker = breakers[i]
        if not breaker.closed:
            raise CircuitOpen(breaker.key)
        try:
            async with asyncio.timeout(limit):
                out = await funcs[i](results)
        except Exception:
            breaker.failed()
            raise
        breaker.failures = 0
        return out

    async def retry(i: int, error: Exception) -> Any:
        for n in range(1, attempts):
            if isinstance(error, CircuitOpen):
                raise error
            await asyncio.sleep(opts.base * 2 ** (n - 1))
            try:
                return await attempt(i)
            except Exception as again:
                error = again
        raise error

    async def node(i: int) -> None:
        nonlocal remaining
        try:
            span = start_span(
                span_names[i],
                attributes={RUN_ID: run_id, PIPELINE: pipeline, STAGE: names[i], KIND: "work"},
            )
            token = context.attach(trace.set_span_in_context(span))
            started = perf_counter()
            outcome = COMPLETED
            try:
                # attempt() inlined: the path every successful stage takes
                tried[i] = 1
                breaker = breakers[i]
                try:
                    if not breaker.closed:
                        raise CircuitOpen(breaker.key)
                    try:
                        async with asyncio.timeout(limit):
                            out = await funcs[i](results)
                    except Exception:
                        breaker.failed()
                        raise
                    breaker.failures = 0
                except Exception as error:
                    if attempts == 1:
                        raise
                    out = await retry(i, error)
            except BaseException as error:
                if isinstance(error, Exception):
                    outcome = FAILED
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                else:  # cancelled: the stage did not fail, it was stopped
                    outcome = CANCELLED
                raise
            finally:
                record(perf_counter() - started, duration_attributes[i][outcome])
                outcomes[i][outcome] += 1
                context.detach(token)
                span.set_attributes({ATTEMPTS: tried[i], OUTCOME: outcome})
                span.end()
            results[i] = out
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        finally:
            del running[i]
        for j in successors[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                running[j] = loop.create_task(node(j))
        remaining -= 1
        if remaining == 0:
            done.set_result(results)

    # The run span is current while the root tasks are created: every task copies the
    # context it is created in, so each stage span is a child of the run span.
    run_started = perf_counter()
    run_span = graph.tracer.start_span(
        f"run {pipeline}", attributes={RUN_ID: run_id, PIPELINE: pipeline, STAGES: len(funcs)}
    )
    run_token = context.attach(trace.set_span_in_context(run_span))
    run_outcome = COMPLETED
    try:
        if remaining == 0:
            return results
        for i in graph.roots:
            running[i] = loop.create_task(node(i))
        return await done
    except BaseException as error:
        run_outcome = FAILED if isinstance(error, Exception) else CANCELLED
        if isinstance(error, Exception):
            run_span.record_exception(error)
            run_span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        raise
    finally:
        context.detach(run_token)
        run_span.set_attribute(OUTCOME, run_outcome)
        run_span.end()
        graph.run_duration.record(
            perf_counter() - run_started, {PIPELINE: pipeline, OUTCOME: run_outcome}
        )


# --------------------------------------------------------------------------- W5-otel: adapters


def w5_otel_impls(with_stageflow: bool) -> list[Impl]:
    """The bare-by-hand side and (when stageflow imports) the interceptors' side of W5-otel,
    each with its own in-memory Telemetry, checked after every run."""
    bare_telemetry = Telemetry()

    def bare_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        assert options is not None
        return TracedGraph(name, spec, options, bare_telemetry)

    def bare_runner(graph: TracedGraph) -> Runner:
        bare_telemetry.exporter.clear()
        return lambda: run_bare_traced(graph)

    def bare_verify(result: list[Any], n: int) -> None:
        if len(result) != n or any(r is None for r in result):
            raise RuntimeError("bare scheduler did not run every stage")
        bare_telemetry.check(n, "w5-otel", "stage.duration", "stage.outcomes")

    impls = [Impl("bare", bare_prepare, bare_runner, bare_verify, bare_telemetry.shutdown)]
    if not with_stageflow:
        return impls

    from stageflow import Engine
    from stageflow.interceptors import MetricsInterceptor, TracingInterceptor

    sf_telemetry = Telemetry()
    tracing = TracingInterceptor(tracer_provider=sf_telemetry.tracer_provider)
    metrics = MetricsInterceptor(meter_provider=sf_telemetry.meter_provider)

    def sf_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        engine = Engine(max_parallel=None, interceptors=[tracing, metrics])
        return engine, stageflow_build(name, spec, options)

    def sf_runner(prepared: tuple[Any, Any]) -> Runner:
        engine, graph = prepared
        sf_telemetry.exporter.clear()
        return lambda: engine.run(graph)

    def sf_verify(result: Any, n: int) -> None:
        if result.status != "completed":
            raise RuntimeError(f"stageflow run ended with status {result.status!r}")
        if tracing.errors or metrics.errors:
            raise RuntimeError(
                f"telemetry errors: tracing {tracing.errors}, metrics {metrics.errors}"
            )
        sf_telemetry.check(n, "w5-otel", "stageflow.stage.duration", "stageflow.stage.outcomes")

    impls.append(Impl("stageflow", sf_prepare, sf_runner, sf_verify, sf_telemetry.shutdown))
    return impls


# --------------------------------------------------------------------------- W1-noop


def no_global_sdk() -> None:
    """Raise unless this process has no global tracer or meter provider (W1-noop's premise)."""
    from opentelemetry import metrics

    tracer_provider = trace.get_tracer_provider()
    meter_provider = metrics.get_meter_provider()
    if (
        not isinstance(tracer_provider, trace.ProxyTracerProvider)
        or type(meter_provider).__name__ != "_ProxyMeterProvider"
    ):
        raise RuntimeError(
            f"a global OpenTelemetry provider is set ({tracer_provider!r}, {meter_provider!r}); "
            "W1-noop measures the interceptors without one"
        )


def w1_noop_impls(with_logging: bool) -> list[Impl]:
    """W1 on a plain Engine (the "bare" side) and on one with the telemetry interceptors,
    no SDK configured: TracingInterceptor(), MetricsInterceptor() and, ``with_logging``,
    LoggingInterceptor() (its logger at the default level: WARNING, so nothing is logged)."""
    from stageflow import Engine
    from stageflow.interceptors import LoggingInterceptor, MetricsInterceptor, TracingInterceptor

    no_global_sdk()
    interceptors: list[Any] = [TracingInterceptor(), MetricsInterceptor()]
    if with_logging:
        logger = LoggingInterceptor()
        if logger.logger.isEnabledFor(logging.INFO):
            raise RuntimeError(f"{logger.logger.name!r} logs INFO here: W1-noop logs nothing")
        interceptors.append(logger)

    def plain_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        return Engine(max_parallel=None), stageflow_build(name, spec)

    def telemetry_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        return Engine(max_parallel=None, interceptors=interceptors), stageflow_build(name, spec)

    def runner(prepared: tuple[Any, Any]) -> Runner:
        engine, graph = prepared
        return lambda: engine.run(graph)

    def verify(result: Any, n: int) -> None:
        if result.status != "completed" or len(result) != n:
            raise RuntimeError(f"stageflow run ended with status {result.status!r}")
        no_global_sdk()

    return [
        Impl("bare", plain_prepare, runner, verify),
        Impl("stageflow", telemetry_prepare, runner, verify),
    ]
