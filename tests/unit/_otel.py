"""Real OpenTelemetry SDK providers with in-memory exporters, and ways to read them.

Every test makes its own providers and passes them to the interceptors explicitly: the
global providers are never set (OTel allows that once per process), so tests stay
independent of each other and of their order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Traces:
    """A TracerProvider exporting to memory, with lookups of the finished spans."""

    def __init__(self, *processors: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(shutdown_on_exit=False)
        for processor in processors:  # before the exporter: they see spans first
            self.provider.add_span_processor(processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        """The only finished span called ``name``."""
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.names()}"
        return found[0]

    def stage(self, name: str) -> ReadableSpan:
        return self.one(f"stage {name}")

    def run(self, pipeline: str) -> ReadableSpan:
        return self.one(f"run {pipeline}")

    def stage_spans(self) -> dict[str, ReadableSpan]:
        """Stage spans by stage name (each name must appear once)."""
        spans = [s for s in self.spans if s.name.startswith("stage ")]
        by_name = {s.name.removeprefix("stage "): s for s in spans}
        assert len(by_name) == len(spans), f"a stage has two spans: {self.names()}"
        return by_name

    def names(self) -> list[str]:
        return sorted(s.name for s in self.spans)

    def clear(self) -> None:
        self.exporter.clear()


def parent_id(span: ReadableSpan) -> int | None:
    """The span id of ``span``'s parent, None for a root span."""
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    context = span.context
    assert context is not None
    return context.span_id


def trace_id(span: ReadableSpan) -> int:
    context = span.context
    assert context is not None
    return context.trace_id


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    """The attributes of ``span``'s events called ``name``, in order."""
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


class Metrics:
    """A MeterProvider read by an InMemoryMetricReader, with lookups of data points."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def collect(self) -> dict[str, Metric]:
        """Every metric, by name (collects now)."""
        data = self.reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    assert metric.name not in found, f"{metric.name} reported twice"
                    found[metric.name] = metric
        return found


def points(metric: Metric) -> list[Any]:
    return list(metric.data.data_points)


def by(metric: Metric, *names: str) -> dict[tuple[Any, ...], Any]:
    """The metric's data points keyed by the values of the attributes ``names``."""
    out: dict[tuple[Any, ...], Any] = {}
    for point in points(metric):
        attributes: Mapping[str, Any] = point.attributes or {}
        k = tuple(attributes[n] for n in names)
        assert k not in out, f"two points of {metric.name} for {k}"
        out[k] = point
    return out


def values(metric: Metric, *names: str) -> dict[tuple[Any, ...], Any]:
    """Each point's value (a histogram's: its count), keyed as :func:`by` does."""
    return {k: p.value if hasattr(p, "value") else p.count for k, p in by(metric, *names).items()}
