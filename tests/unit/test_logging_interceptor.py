"""LoggingInterceptor and JsonFormatter: levels, structured fields, trace ids, failures."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from stageflow import (
    ConfigurationError,
    Engine,
    JsonFormatter,
    LoggingInterceptor,
    Pipeline,
    RunContext,
    RunStatus,
    StageContext,
    StageGraph,
    StageOutput,
    TracingInterceptor,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import run_virtual

from ._helpers import Capture, ExplodingRun, failing, sleeper
from ._otel import Traces, span_id, trace_id

LOGGER = "stageflow.stages"
STAGE_FIELDS = {"run_id", "pipeline", "stage", "attempt", "outcome", "duration"}


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """The interceptor's default logger at DEBUG, restored afterwards."""
    log = logging.getLogger(LOGGER)
    level, propagate = log.level, log.propagate
    log.setLevel(logging.DEBUG)
    log.propagate = False  # keep the records to the handlers of each test
    yield log
    log.setLevel(level)
    log.propagate = propagate


@pytest.fixture
def captured(logger: logging.Logger) -> Iterator[Capture]:
    handler = Capture()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def fields(record: logging.LogRecord, *names: str) -> dict[str, Any]:
    return {n: getattr(record, n) for n in names if hasattr(record, n)}


def run_logged(graph: StageGraph, *interceptors: Any, **options: Any) -> Any:
    engine = Engine(interceptors=[LoggingInterceptor(), *interceptors], **options)
    return run_virtual(engine.run(graph, run_id="r1"))


async def refuse(ctx: StageContext) -> StageOutput:
    await asyncio.sleep(0.5)
    return StageOutput.fail("no input")


def two_stages() -> StageGraph:
    return (
        Pipeline("logged")
        .with_stage("fetch", sleeper(2, n=1))
        .with_stage("store", sleeper(0.25), dependencies=["fetch"])
        .build()
    )


class TestStageRecords:
    def test_a_stage_logs_its_start_at_debug_and_its_end_at_info(self, captured: Capture) -> None:
        run_logged(two_stages())

        start, end = captured.of("fetch")
        assert (start.levelno, start.getMessage()) == (logging.DEBUG, "stage fetch started")
        assert fields(start, *STAGE_FIELDS) == {
            "run_id": "r1",
            "pipeline": "logged",
            "stage": "fetch",
            "attempt": 1,
        }
        assert (end.levelno, end.getMessage()) == (logging.INFO, "stage fetch completed in 2.000s")
        assert fields(end, *STAGE_FIELDS) == {
            "run_id": "r1",
            "pipeline": "logged",
            "stage": "fetch",
            "attempt": 1,
            "outcome": "completed",
            "duration": pytest.approx(2.0),
        }
        assert end.exc_info is None
        assert captured.of("store")[1].duration == pytest.approx(0.25)

    def test_a_raised_error_is_logged_at_error_with_its_traceback(self, captured: Capture) -> None:
        graph = Pipeline("logged").with_stage("s", failing(1.5, "boom")).build()

        run_logged(graph)

        _, end = captured.of("s")
        assert end.levelno == logging.ERROR
        assert end.getMessage() == "stage s failed after 1.500s: boom"
        assert fields(end, "outcome", "attempt", "duration") == {
            "outcome": "failed",
            "attempt": 1,
            "duration": pytest.approx(1.5),
        }
        assert end.exc_info is not None
        assert end.exc_info[0] is ValueError
        assert str(end.exc_info[1]) == "boom"

    def test_a_stage_output_fail_is_a_warning_with_its_reason_and_no_traceback(
        self, captured: Capture
    ) -> None:
        run_logged(Pipeline("logged").with_stage("s", refuse).build())

        _, end = captured.of("s")
        assert end.levelno == logging.WARNING
        assert end.getMessage() == "stage s failed after 0.500s: no input"
        assert end.outcome == "failed"  # type: ignore[attr-defined]
        assert end.exc_info is None

    def test_a_self_skip_is_logged_at_info_as_skipped(self, captured: Capture) -> None:
        async def skip(ctx: StageContext) -> StageOutput:
            return StageOutput.skip("later")

        run_logged(Pipeline("logged").with_stage("s", skip).build())

        _, end = captured.of("s")
        assert (end.levelno, end.outcome) == (logging.INFO, "skipped")  # type: ignore[attr-defined]
        assert end.getMessage() == "stage s skipped after 0.000s: later"
        assert end.exc_info is None

    def test_a_retried_stage_logs_one_start_and_one_end_counting_its_attempts(
        self, captured: Capture
    ) -> None:
        async def flaky(ctx: StageContext) -> dict[str, int]:
            await asyncio.sleep(1)
            if ctx.attempt == 1:
                raise ConnectionError("down")
            return {}

        run_logged(Pipeline("logged").with_stage("s", flaky, retry=3).build())

        start, end = captured.of("s")
        assert (start.attempt, end.attempt) == (1, 2)  # type: ignore[attr-defined]
        assert end.outcome == "completed"  # type: ignore[attr-defined]
        assert end.duration == pytest.approx(2.1)  # type: ignore[attr-defined]

    def test_a_stage_skipped_by_its_dependency_logs_nothing(self, captured: Capture) -> None:
        graph = (
            Pipeline("logged")
            .with_stage("a", failing())
            .with_stage("b", sleeper(1), dependencies=["a"])
            .build()
        )

        result = run_logged(graph, fail_fast=False)

        assert result["b"].attempts == 0
        assert captured.of("b") == []

    def test_a_restored_stage_is_logged_as_restored(self, captured: Capture) -> None:
        store = MemoryStore()
        calls = {"b": 0}

        async def b(ctx: StageContext) -> dict[str, int]:
            calls["b"] += 1
            if calls["b"] == 1:
                raise ConnectionError("down")
            return {}

        graph = (
            Pipeline("logged")
            .with_stage("a", sleeper(1))
            .with_stage("b", b, dependencies=["a"])
            .build()
        )
        logging_ = LoggingInterceptor()

        async def main() -> Any:
            await Engine(store=store, interceptors=[logging_]).run(graph, run_id="r1")
            captured.records.clear()
            return await Engine(store=store, interceptors=[logging_]).resume("r1", graph)

        assert run_virtual(main()).ok

        ends = [r for r in captured.records if hasattr(r, "outcome") and hasattr(r, "stage")]
        assert [(r.stage, r.outcome) for r in ends] == [  # type: ignore[attr-defined]
            ("a", "restored"),
            ("b", "completed"),
        ]
        run_start = captured.runs()[0]
        assert run_start.getMessage() == "run r1 of logged resumed"

    def test_a_stage_returning_what_no_stage_may_return_is_a_warning(
        self, captured: Capture
    ) -> None:
        async def odd(ctx: StageContext) -> Any:
            await asyncio.sleep(0.5)
            return 42

        result = run_logged(Pipeline("logged").with_stage("s", odd).build())

        assert result["s"].status.value == "failed"
        _, end = captured.of("s")
        assert end.levelno == logging.WARNING
        assert (
            end.getMessage()
            == "stage s failed after 0.500s: returned int, which is no stage output"
        )
        assert end.outcome == "failed"  # type: ignore[attr-defined]

    def test_a_restored_self_skip_is_logged_as_restored(self, captured: Capture) -> None:
        store = MemoryStore()
        calls = {"flaky": 0}

        async def skip(ctx: StageContext) -> StageOutput:
            return StageOutput.skip("nothing to do")

        async def flaky(ctx: StageContext) -> None:
            calls["flaky"] += 1
            if calls["flaky"] == 1:
                raise ConnectionError("down")

        graph = Pipeline("logged").with_stage("skipper", skip).with_stage("flaky", flaky).build()

        async def main() -> Any:
            await Engine(store=store, fail_fast=False).run(graph, run_id="r1")
            engine = Engine(store=store, interceptors=[LoggingInterceptor()])
            return await engine.resume("r1", graph)

        assert run_virtual(main()).ok

        _, end = captured.of("skipper")
        assert end.outcome == "restored"  # type: ignore[attr-defined]

    def test_the_level_option_sets_the_level_of_ordinary_records(self, captured: Capture) -> None:
        engine = Engine(interceptors=[LoggingInterceptor(level=logging.DEBUG + 5)])

        run_virtual(engine.run(two_stages(), run_id="r1"))

        assert {r.levelno for r in captured.of("fetch")} == {logging.DEBUG, logging.DEBUG + 5}
        assert {r.levelno for r in captured.runs()} == {logging.DEBUG + 5}

    def test_nothing_is_logged_when_the_level_is_disabled(
        self, logger: logging.Logger, captured: Capture
    ) -> None:
        logger.setLevel(logging.WARNING)

        run_logged(Pipeline("logged").with_stage("s", refuse).with_stage("t", sleeper(1)).build())

        assert [(r.levelno, getattr(r, "stage", None)) for r in captured.records] == [
            (logging.WARNING, "s"),
            (logging.ERROR, None),  # the failed run
        ]


class TestRunRecords:
    def test_a_run_logs_its_start_and_its_end(self, captured: Capture) -> None:
        run_logged(two_stages())

        start, end = captured.runs()
        assert (start.levelno, start.getMessage()) == (logging.INFO, "run r1 of logged started")
        assert fields(start, *STAGE_FIELDS) == {"run_id": "r1", "pipeline": "logged"}
        assert (end.levelno, end.getMessage()) == (
            logging.INFO,
            "run r1 of logged completed in 2.250s",
        )
        assert fields(end, *STAGE_FIELDS) == {
            "run_id": "r1",
            "pipeline": "logged",
            "outcome": "completed",
            "duration": pytest.approx(2.25),
        }
        assert captured.records[0] is start
        assert captured.records[-1] is end

    def test_a_failed_run_ends_at_error_naming_its_error(self, captured: Capture) -> None:
        result = run_logged(Pipeline("logged").with_stage("s", failing(1, "boom")).build())

        assert result.status is RunStatus.FAILED
        end = captured.runs()[-1]
        assert end.levelno == logging.ERROR
        assert end.getMessage() == "run r1 of logged failed in 1.000s: boom"
        assert end.outcome == "failed"  # type: ignore[attr-defined]

    def test_a_timed_out_run_ends_at_warning_as_cancelled(self, captured: Capture) -> None:
        graph = Pipeline("logged").with_stage("s", sleeper(10)).build()

        result = run_virtual(
            Engine(interceptors=[LoggingInterceptor()]).run(graph, run_id="r1", timeout=3)
        )

        assert result.status is RunStatus.CANCELLED
        end = captured.runs()[-1]
        assert (end.levelno, end.outcome) == (logging.WARNING, "cancelled")  # type: ignore[attr-defined]
        assert end.duration == pytest.approx(3.0)  # type: ignore[attr-defined]
        assert captured.of("s")[-1].outcome == "cancelled"  # type: ignore[attr-defined]

    def test_a_run_whose_task_is_cancelled_logs_a_warning(self, captured: Capture) -> None:
        engine = Engine(interceptors=[LoggingInterceptor()])
        graph = Pipeline("logged").with_stage("s", sleeper(10)).build()

        async def main() -> None:
            task = asyncio.create_task(engine.run(graph, run_id="r1"))
            await asyncio.sleep(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run_virtual(main())

        end = captured.runs()[-1]
        assert end.levelno == logging.WARNING
        assert end.getMessage() == "run r1 of logged cancelled: CancelledError"
        stage_end = captured.of("s")[-1]
        assert (stage_end.outcome, stage_end.levelno) == ("cancelled", logging.INFO)  # type: ignore[attr-defined]
        assert stage_end.exc_info is None

    def test_a_run_that_raises_is_logged_at_error_as_failed(self, captured: Capture) -> None:
        engine = Engine(interceptors=[LoggingInterceptor(), ExplodingRun()])

        with pytest.raises(RuntimeError, match="store down"):
            run_virtual(engine.run(two_stages(), run_id="r1"))

        end = captured.runs()[-1]
        assert end.getMessage() == "run r1 of logged failed: RuntimeError"
        assert end.outcome == "failed"  # type: ignore[attr-defined]
        assert end.levelno == logging.ERROR
        assert end.exc_info is not None
        assert str(end.exc_info[1]) == "store down"


class TestTraceIds:
    def test_with_tracing_records_carry_the_ids_of_the_current_span(
        self, captured: Capture
    ) -> None:
        traces = Traces()

        run_logged(two_stages(), TracingInterceptor(tracer_provider=traces.provider))

        for name in ("fetch", "store"):
            span = traces.stage(name)
            for record in captured.of(name):
                assert record.trace_id == f"{trace_id(span):032x}"  # type: ignore[attr-defined]
                assert record.span_id == f"{span_id(span):016x}"  # type: ignore[attr-defined]
                assert len(record.trace_id) == 32  # type: ignore[attr-defined]
                assert len(record.span_id) == 16  # type: ignore[attr-defined]
        run = traces.run("logged")
        assert {(r.trace_id, r.span_id) for r in captured.runs()} == {  # type: ignore[attr-defined]
            (f"{trace_id(run):032x}", f"{span_id(run):016x}")
        }

    def test_without_tracing_records_have_no_trace_ids(self, captured: Capture) -> None:
        run_logged(two_stages())

        assert len(captured.records) == 6
        for record in captured.records:
            assert not hasattr(record, "trace_id")
            assert not hasattr(record, "span_id")


class TestJsonFormatter:
    def test_records_are_json_lines_with_the_stageflow_fields(self, logger: logging.Logger) -> None:
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        traces = Traces()
        graph = (
            Pipeline("logged")
            .with_stage("fetch", sleeper(2, n=1))
            .with_stage("boom", failing(1, "bad <input> \u00e9"))
            .build()
        )
        try:
            run_logged(graph, TracingInterceptor(tracer_provider=traces.provider), fail_fast=False)
        finally:
            logger.removeHandler(handler)

        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert len(lines) == 6
        end = next(x for x in lines if x.get("stage") == "fetch" and "outcome" in x)
        span = traces.stage("fetch")
        assert end == {
            "ts": end["ts"],
            "level": "INFO",
            "logger": LOGGER,
            "message": "stage fetch completed in 2.000s",
            "run_id": "r1",
            "pipeline": "logged",
            "stage": "fetch",
            "attempt": 1,
            "outcome": "completed",
            "duration": pytest.approx(2.0),
            "trace_id": f"{trace_id(span):032x}",
            "span_id": f"{span_id(span):016x}",
        }
        assert end["ts"].endswith("+00:00")
        failed = next(x for x in lines if x.get("stage") == "boom" and "outcome" in x)
        assert failed["level"] == "ERROR"
        assert failed["message"] == "stage boom failed after 1.000s: bad <input> \u00e9"
        assert failed["exc"].startswith("Traceback (most recent call last):")
        assert failed["exc"].endswith("ValueError: bad <input> \u00e9")
        assert "\u00e9" in out.getvalue()  # not escaped: ensure_ascii=False
        assert all("exc" not in x for x in lines if x is not failed)

    def test_values_json_cannot_hold_are_written_as_their_repr(self) -> None:
        record = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
        record.thing = frozenset({1})  # neither JSON nor anything with to_dict()

        line = json.loads(JsonFormatter().format(record))

        assert line["thing"] == "frozenset({1})"

    def test_private_fields_are_left_out(self) -> None:
        """What a library adds to every record (Ray: ``_ray_timestamp_ns``) is not ours."""
        record = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
        record._ray_timestamp_ns = 1  # type: ignore[attr-defined]
        record.stage = "fetch"

        line = json.loads(JsonFormatter().format(record))

        assert line["stage"] == "fetch"
        assert "_ray_timestamp_ns" not in line


class _Raising(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.calls += 1
        raise RuntimeError("filter down")


def _outcome(result: Any) -> Any:
    return result.status, {r.stage: (r.status, r.attempts, dict(r.data)) for r in result}


class TestLoggingNeverBreaksARun:
    def test_a_handler_whose_filter_raises_is_counted_and_the_run_goes_on(
        self, logger: logging.Logger, caplog: pytest.LogCaptureFixture
    ) -> None:
        handler = logging.Handler()
        broken = _Raising()
        handler.addFilter(broken)
        logger.addHandler(handler)
        interceptor = LoggingInterceptor()
        graph = two_stages()
        plain = run_virtual(Engine().run(graph, run_id="r1"))
        try:
            with caplog.at_level(logging.ERROR, logger="stageflow"):
                result = run_virtual(Engine(interceptors=[interceptor]).run(graph, run_id="r1"))
        finally:
            logger.removeHandler(handler)

        assert _outcome(result) == _outcome(plain)
        assert result["store"].data == {}
        assert broken.calls == 6  # run start and end, two records per stage
        assert interceptor.errors == 6
        logged = [r for r in caplog.records if r.name == "stageflow"]
        assert [r.getMessage().split(";")[0] for r in logged] == [
            "logging failed while logging a record"
        ]

    def test_a_broken_handler_on_the_root_logger_does_not_break_the_run(
        self, logger: logging.Logger
    ) -> None:
        logger.propagate = True  # records reach the root logger, as they usually do
        root = logging.getLogger()
        handler = logging.Handler()
        handler.addFilter(_Raising())
        root.addHandler(handler)
        interceptor = LoggingInterceptor()
        try:
            result = run_virtual(Engine(interceptors=[interceptor]).run(two_stages()))
        finally:
            root.removeHandler(handler)

        assert result.ok
        assert interceptor.errors == 6  # the report of the first could not be logged either


class TestConfiguration:
    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"logger": 42}, "logger"),
            ({"logger": None}, "logger"),
            ({"level": "INFO"}, "level"),
            ({"level": True}, "level"),
            ({"level": -1}, "level"),
            ({"level": 20.0}, "level"),
        ],
    )
    def test_bad_options_are_refused_naming_the_field(
        self, options: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=field) as info:
            LoggingInterceptor(**options)

        assert info.value.field == field
        assert info.value.value is options[field]

    def test_a_logger_name_or_a_logger_is_accepted(self) -> None:
        mine = logging.getLogger("tests.mine")

        assert LoggingInterceptor("tests.mine").logger is mine
        assert LoggingInterceptor(mine).logger is mine
        assert LoggingInterceptor().logger is logging.getLogger(LOGGER)
        assert LoggingInterceptor().priority == 300


def callers() -> list[str]:
    """The qualified names of the code that called the caller, innermost first."""
    frame = sys._getframe(2)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_qualname)
        frame = frame.f_back  # type: ignore[assignment]
    return names


def failures(records: list[logging.LogRecord]) -> list[tuple[Any, ...]]:
    """The stage failure records, by stage: level, fields, the error logged with it."""
    return sorted(
        (r.stage, r.levelno, fields(r, *STAGE_FIELDS), r.exc_info and r.exc_info[1])  # type: ignore[attr-defined]
        for r in records
        if getattr(r, "outcome", None) == "failed" and hasattr(r, "stage")
    )


class TestRecordsOffByLevel:
    """Stage records all off by level: the run's stages go unwrapped, failures logged at its end."""

    @pytest.mark.parametrize(
        ("logger_at", "level", "applies"),
        [
            (logging.WARNING, logging.INFO, False),  # Python's default: nothing but failures
            (logging.INFO, logging.DEBUG + 5, False),
            (logging.INFO, logging.INFO, True),  # stage ends
            (logging.DEBUG, logging.INFO, True),  # stage starts
            (logging.WARNING, logging.ERROR, True),  # ends at ERROR
        ],
    )
    def test_it_applies_to_a_run_when_a_stage_record_could_be_written(
        self, logger: logging.Logger, logger_at: int, level: int, applies: bool
    ) -> None:
        logger.setLevel(logger_at)
        run = RunContext(two_stages(), "r1", {})

        assert LoggingInterceptor(level=level).applies(run) is applies

    def test_with_records_off_the_stages_are_called_without_it(
        self, logger: logging.Logger, captured: Capture
    ) -> None:
        seen: list[list[str]] = []

        async def look(ctx: StageContext) -> None:
            seen.append(callers())

        graph = Pipeline("logged").with_stage("s", look).build()
        engine = Engine(interceptors=[LoggingInterceptor()])
        logger.setLevel(logging.WARNING)
        assert run_virtual(engine.run(graph, run_id="r1")).ok
        logger.setLevel(logging.INFO)  # read again at the next run: on
        assert run_virtual(engine.run(graph, run_id="r2")).ok

        off, on = ([n for n in names if "LoggingInterceptor" in n] for names in seen)
        assert off == []
        assert on == ["LoggingInterceptor.wrap.<locals>.logged"]
        assert [r.run_id for r in captured.records if hasattr(r, "stage")] == ["r2"]  # type: ignore[attr-defined]

    def test_with_records_off_a_raised_error_is_logged_once_at_the_run_end_with_its_traceback(
        self, logger: logging.Logger, captured: Capture
    ) -> None:
        logger.setLevel(logging.WARNING)
        graph = (
            Pipeline("logged")
            .with_stage("a", sleeper(1))
            .with_stage("s", failing(1.5, "boom"), dependencies=["a"], retry=2)
            .build()
        )

        result = run_logged(graph)

        record, run_end = captured.records
        assert (record.levelno, record.getMessage()) == (
            logging.ERROR,
            f"stage s failed after {result['s'].duration:.3f}s: boom",
        )
        assert fields(record, *STAGE_FIELDS) == {
            "run_id": "r1",
            "pipeline": "logged",
            "stage": "s",
            "attempt": 2,
            "outcome": "failed",
            "duration": result["s"].duration,
        }
        assert record.exc_info is not None
        assert record.exc_info[1] is result["s"].error
        assert record.exc_info[2] is not None  # the traceback
        assert (run_end.levelno, run_end.outcome) == (logging.ERROR, "failed")  # type: ignore[attr-defined]

    def test_failures_are_logged_alike_with_records_on_and_off(
        self, logger: logging.Logger, captured: Capture
    ) -> None:
        async def odd(ctx: StageContext) -> Any:
            return 42

        graph = (
            Pipeline("logged")
            .with_stage("raises", failing(1, "boom"))
            .with_stage("refuses", refuse)
            .with_stage("odd", odd)
            .with_stage("ok", sleeper(1))
            .build()
        )
        seen = {}
        for level in (logging.INFO, logging.WARNING):  # records on, then off
            logger.setLevel(level)
            captured.records.clear()
            result = run_logged(graph, fail_fast=False)
            seen[level] = failures(captured.records)
            messages = {r.stage: r.getMessage() for r in captured.records if hasattr(r, "stage")}  # type: ignore[attr-defined]
            assert messages["raises"] == "stage raises failed after 1.000s: boom"
            assert messages["refuses"] == "stage refuses failed after 0.500s: no input"
            assert messages["odd"].startswith("stage odd failed after 0.000s: ")

        on, off = seen[logging.INFO], seen[logging.WARNING]
        assert [(stage, level) for stage, level, *_ in off] == [
            ("odd", logging.WARNING),
            ("raises", logging.ERROR),
            ("refuses", logging.WARNING),
        ]
        assert [row[:3] for row in on] == [row[:3] for row in off]
        assert [type(row[3]) for row in on] == [type(None), ValueError, type(None)]
        assert [type(row[3]) for row in off] == [type(None), ValueError, type(None)]
        assert off[1][3] is result["raises"].error

    def test_the_level_is_read_once_per_run_and_a_failure_logged_once(
        self, logger: logging.Logger, captured: Capture
    ) -> None:
        async def louder_then_fail(ctx: StageContext) -> None:
            logger.setLevel(logging.DEBUG)  # too late for this run's stages
            raise ValueError("boom")

        logger.setLevel(logging.WARNING)
        graph = Pipeline("logged").with_stage("s", louder_then_fail).build()
        engine = Engine(interceptors=[LoggingInterceptor()])

        run_virtual(engine.run(graph, run_id="r1"))
        first = list(captured.records)
        captured.records.clear()
        run_virtual(engine.run(graph, run_id="r2"))  # DEBUG since the first run

        assert [(r.levelno, getattr(r, "stage", None)) for r in first] == [
            (logging.ERROR, "s"),  # at the run's end, once
            (logging.ERROR, None),
        ]
        assert [(r.levelno, getattr(r, "stage", None)) for r in captured.records] == [
            (logging.INFO, None),
            (logging.DEBUG, "s"),
            (logging.ERROR, "s"),  # by the stage's wrapper, once
            (logging.ERROR, None),
        ]

    def test_with_records_off_a_cancelled_run_logs_its_run_record_only(
        self, logger: logging.Logger, captured: Capture
    ) -> None:
        logger.setLevel(logging.WARNING)
        interceptor = LoggingInterceptor()
        engine = Engine(interceptors=[interceptor])
        graph = Pipeline("logged").with_stage("s", sleeper(10)).build()

        async def main() -> None:
            task = asyncio.create_task(engine.run(graph, run_id="r1"))
            await asyncio.sleep(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run_virtual(main())

        (end,) = captured.records
        assert end.getMessage() == "run r1 of logged cancelled: CancelledError"
        assert interceptor._unwrapped == {}  # nothing kept of the run
