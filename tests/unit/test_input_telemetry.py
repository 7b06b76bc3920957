"""Input stages in spans and logs: the wait shows as waiting, never as a failure or an error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opentelemetry.trace import StatusCode

from stageflow import (
    Engine,
    LoggingInterceptor,
    Pipeline,
    RunStatus,
    TracingInterceptor,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import run_virtual

from ._helpers import Capture, VirtualWall, noop
from ._otel import Traces, events


def graph() -> Any:
    return (
        Pipeline("ask")
        .with_stage("draft", noop)
        .with_input("ok", schema=bool, dependencies=("draft",))
        .with_stage("then", noop, dependencies=("ok",))
        .build()
    )


def test_a_waiting_run_and_its_input_stage_end_their_spans_as_waiting() -> None:
    traces = Traces()
    engine = Engine(
        store=MemoryStore(), interceptors=[TracingInterceptor(tracer_provider=traces.provider)]
    )

    result = run_virtual(engine.run(graph(), run_id="r1"))

    assert result.status is RunStatus.WAITING
    stage = traces.stage("ok")
    assert stage.attributes["stageflow.outcome"] == "waiting"
    assert stage.status.status_code is StatusCode.UNSET
    run = traces.run("ask")
    assert run.attributes["stageflow.outcome"] == "waiting"
    assert run.status.status_code is StatusCode.UNSET
    assert events(run, "stageflow.input.waiting") == [{"stageflow.stage": "ok"}]
    assert "stage then" not in traces.names()  # pending: it never ran


def test_the_span_of_an_input_covers_the_wait_of_a_live_driver() -> None:
    traces = Traces()
    engine = Engine(
        clock=VirtualWall(), interceptors=[TracingInterceptor(tracer_provider=traces.provider)]
    )

    async def main() -> None:
        task = asyncio.ensure_future(engine.run(graph(), run_id="r1", wait=True))
        await asyncio.sleep(30)
        await engine.send("r1", "ok", True)
        assert (await task).ok

    run_virtual(main())
    span = traces.stage("ok")
    assert span.attributes["stageflow.outcome"] == "completed"
    assert (span.end_time - span.start_time) / 1e9 == 30.0


def test_a_waiting_run_is_logged_as_waiting_not_as_trouble() -> None:
    capture = Capture()
    logger = logging.getLogger("stageflow")
    logger.addHandler(capture)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        engine = Engine(store=MemoryStore(), interceptors=[LoggingInterceptor()])
        run_virtual(engine.run(graph(), run_id="r1"))
    finally:
        logger.setLevel(level)
        logger.removeHandler(capture)
    ends = [r for r in capture.runs() if "waiting" in r.getMessage()]
    assert ends, [r.getMessage() for r in capture.records]
    assert all(r.levelno < logging.WARNING for r in ends)
    assert not [r for r in capture.records if r.levelno >= logging.ERROR]
