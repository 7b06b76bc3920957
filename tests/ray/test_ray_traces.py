"""Spans made inside a stage's call in a Ray worker nest under that stage's span in the
driver's trace: the driver traces with TracingInterceptor (the real SDK, in memory), each
worker with the real SDK installed by its setup hook (conftest.py), exporting to a file."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stageflow import Engine, Pipeline, RunStatus
from stageflow.adapters.ray import RayRunner
from stageflow.interceptors import TracingInterceptor

from . import stages

pytestmark = pytest.mark.usefixtures("ray_cluster")

RUNS = 4  # runs in a row: the cluster's two CPUs' workers each run several of the calls


def inner_spans(path: Path, run_ids: set[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The ``inner`` spans the workers exported for ``run_ids``, by (run, stage)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    for span in map(json.loads, lines):
        attributes = span["attributes"]
        if span["name"] == "inner" and attributes.get("run") in run_ids:
            key = (attributes["run"], attributes["stage"])
            assert key not in found, f"two inner spans for {key}"
            found[key] = span
    return found


def stage_span(spans: tuple[ReadableSpan, ...], run_id: str, stage: str) -> ReadableSpan:
    (span,) = [
        s
        for s in spans
        if s.name == f"stage {stage}"
        and s.attributes is not None
        and s.attributes.get("stageflow.run_id") == run_id
    ]
    return span


@pytest.mark.parametrize("stage", [stages.traced_sync, stages.traced_async],
                         ids=["sync", "async"])  # fmt: skip
def test_spans_made_in_a_worker_nest_under_the_stage_span(
    stage: Any, worker_spans: Path, tag: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = Engine(runners={"ray": RayRunner()},
                    interceptors=[TracingInterceptor(tracer_provider=provider)])  # fmt: skip
    graph = (
        Pipeline("traced")
        .with_stage("first", stage, runner="ray")
        .with_stage("second", stage, dependencies=("first",), runner="ray")
        .build()
    )
    run_ids = [f"{tag}-{k}" for k in range(RUNS)]
    for run_id in run_ids:
        result = asyncio.run(engine.run(graph, run_id=run_id))
        assert result.status is RunStatus.COMPLETED, result.error
        assert result["first"].data["pid"] != os.getpid()  # in a worker

    driver = exporter.get_finished_spans()
    # SimpleSpanProcessor exports as the span ends, inside the call: all are in the file.
    inner = inner_spans(worker_spans, set(run_ids))
    wrong = []
    for run_id in run_ids:
        (run_span,) = [s for s in driver if s.name == "run traced"
                       and s.attributes["stageflow.run_id"] == run_id]  # fmt: skip
        for name in ("first", "second"):
            parent = stage_span(driver, run_id, name)
            assert parent.parent is not None
            assert parent.parent.span_id == run_span.context.span_id
            span = inner[run_id, name]
            # The runner makes no span of its own: the call's carrier is the stage span's.
            expected = (f"{parent.context.trace_id:032x}", f"{parent.context.span_id:016x}")
            got = (span["trace_id"], span["parent"])
            if got != expected:
                wrong.append(f"{run_id}/{name} (worker {span['pid']}): parent {got}, "
                             f"expected the stage span {expected}")  # fmt: skip
            else:
                assert span["parent_remote"] is True
    assert not wrong, "inner spans not under their stage's span:\n" + "\n".join(wrong)


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    """A run id prefix of this test's own: the spans file is the session's."""
    return "traced-" + request.node.callspec.id
