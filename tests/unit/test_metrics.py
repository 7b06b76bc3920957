"""MetricsInterceptor on the real OpenTelemetry SDK: instruments, values, attributes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import metrics

from stageflow import (
    ConfigurationError,
    Engine,
    MetricsInterceptor,
    Pipeline,
    RunStatus,
    StageContext,
    StageGraph,
    StageOutput,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.interceptors._metrics import BUCKETS
from stageflow.testing import run_virtual

from ._helpers import ExplodingRun, failing, noop, sleeper
from ._otel import Metrics, by, points, values

STAGE_INSTRUMENTS = (
    "stageflow.stage.duration",
    "stageflow.stage.outcomes",
    "stageflow.stage.attempts",
    "stageflow.stage.active",
)
INSTRUMENTS = (*STAGE_INSTRUMENTS, "stageflow.run.duration")


def flaky(seconds: float) -> Any:
    """A stage whose first attempt fails after ``seconds``; the second completes after it."""

    async def stage(ctx: StageContext) -> dict[str, int]:
        await asyncio.sleep(seconds)
        if ctx.attempt == 1:
            raise ConnectionError("down")
        return {"attempt": ctx.attempt}

    return stage


def skipper(seconds: float) -> Any:
    async def stage(ctx: StageContext) -> StageOutput:
        await asyncio.sleep(seconds)
        return StageOutput.skip("nothing to do")

    return stage


def mixed() -> StageGraph:
    """Two stages complete, one raises, one skips itself, one is retried once and one is
    skipped because its dependency failed (with fail_fast=False)."""
    return (
        Pipeline("metered")
        .with_stage("ok1", sleeper(1))
        .with_stage("ok2", sleeper(2), dependencies=["ok1"])
        .with_stage("boom", failing(3))
        .with_stage("skipper", skipper(0.5))
        .with_stage("flaky", flaky(1), retry=3)  # 1 s, 0.1 s backoff, 1 s
        .with_stage("orphan", noop, dependencies=["boom"])
        .build()
    )


def metered(meter: Metrics, **options: Any) -> tuple[Engine, MetricsInterceptor]:
    interceptor = MetricsInterceptor(meter_provider=meter.provider)
    return Engine(interceptors=[interceptor], **options), interceptor


def run_mixed(meter: Metrics, runs: int = 1) -> tuple[Any, MetricsInterceptor]:
    engine, interceptor = metered(meter, fail_fast=False)
    graph = mixed()
    result = None
    for n in range(runs):
        result = run_virtual(engine.run(graph, run_id=f"run-{n}-of-a-kind"))
    assert result is not None
    assert {r.stage: r.status.value for r in result} == {
        "ok1": "completed",
        "ok2": "completed",
        "boom": "failed",
        "skipper": "skipped",
        "flaky": "completed",
        "orphan": "skipped",
    }
    assert result["flaky"].attempts == 2
    assert result["orphan"].attempts == 0
    return result, interceptor


EXECUTED = {
    ("ok1", "completed"): 1.0,
    ("ok2", "completed"): 2.0,
    ("boom", "failed"): 3.0,
    ("skipper", "skipped"): 0.5,
    ("flaky", "completed"): 2.1,
}
# Every stage that ended, by outcome: those that ran, and the one skipped for its dependency.
ENDED = {**dict.fromkeys(EXECUTED, 1), ("orphan", "skipped"): 1}
STAGES = [("ok1",), ("ok2",), ("boom",), ("skipper",), ("flaky",), ("orphan",)]


class TestOneRun:
    def test_every_instrument_is_reported_under_the_stageflow_meter(self) -> None:
        meter = Metrics()
        run_mixed(meter)

        data = meter.reader.get_metrics_data()
        assert data is not None
        scopes = [s for r in data.resource_metrics for s in r.scope_metrics]
        assert [s.scope.name for s in scopes] == ["stageflow"]
        found = meter.collect()
        assert sorted(found) == sorted(INSTRUMENTS)
        assert {n: m.unit for n, m in found.items()} == {
            "stageflow.stage.duration": "s",
            "stageflow.stage.outcomes": "{stage}",
            "stageflow.stage.attempts": "{attempt}",
            "stageflow.stage.active": "{stage}",
            "stageflow.run.duration": "s",
        }

    def test_stage_durations_one_point_per_stage_and_outcome_on_virtual_time(self) -> None:
        meter = Metrics()
        run_mixed(meter)

        durations = by(
            meter.collect()["stageflow.stage.duration"], "stageflow.stage", "stageflow.outcome"
        )

        assert set(durations) == set(EXECUTED)
        for k, seconds in EXECUTED.items():
            assert durations[k].count == 1, k
            assert durations[k].sum == pytest.approx(seconds), k
            assert durations[k].min == durations[k].max == pytest.approx(seconds), k
            assert tuple(durations[k].explicit_bounds) == BUCKETS
            assert sum(durations[k].bucket_counts) == 1

    def test_outcomes_count_each_stage_that_ended_by_its_outcome(self) -> None:
        meter = Metrics()
        run_mixed(meter)

        outcomes = values(
            meter.collect()["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome"
        )

        # the dependency-skipped stage was never called: it is counted when the run ends
        assert outcomes == ENDED

    def test_attempts_count_every_attempt_retries_included(self) -> None:
        meter = Metrics()
        run_mixed(meter)

        attempts = values(meter.collect()["stageflow.stage.attempts"], "stageflow.stage")

        assert attempts == {
            ("ok1",): 1,
            ("ok2",): 1,
            ("boom",): 1,
            ("skipper",): 1,
            ("flaky",): 2,
            ("orphan",): 0,
        }

    def test_no_stage_is_active_after_the_run(self) -> None:
        meter = Metrics()
        run_mixed(meter)

        active = values(meter.collect()["stageflow.stage.active"], "stageflow.stage")

        assert active == dict.fromkeys(STAGES, 0)

    def test_the_run_duration_is_one_point_by_pipeline_and_outcome(self) -> None:
        meter = Metrics()
        result, _ = run_mixed(meter)

        (point,) = points(meter.collect()["stageflow.run.duration"])

        assert dict(point.attributes) == {
            "stageflow.pipeline": "metered",
            "stageflow.outcome": "failed",
        }
        assert point.count == 1
        assert point.sum == pytest.approx(3.0)  # ok1 + ok2, and boom: the longest paths
        assert point.sum == pytest.approx(result.duration)

    def test_no_attribute_anywhere_holds_the_run_id(self) -> None:
        meter = Metrics()
        run_mixed(meter)

        found = meter.collect()
        keys: set[str] = set()
        for name in INSTRUMENTS:
            for point in points(found[name]):
                attributes = dict(point.attributes)
                keys |= set(attributes)
                assert not any("of-a-kind" in str(v) for v in attributes.values()), name
        assert keys == {"stageflow.pipeline", "stageflow.stage", "stageflow.outcome"}
        stage_keys = {
            frozenset(p.attributes) for n in STAGE_INSTRUMENTS[2:] for p in points(found[n])
        }
        assert stage_keys == {frozenset({"stageflow.pipeline", "stageflow.stage"})}
        for point in points(found["stageflow.stage.duration"]):
            assert point.attributes["stageflow.pipeline"] == "metered"


class TestAcrossRuns:
    def test_two_runs_accumulate(self) -> None:
        meter = Metrics()
        run_mixed(meter, runs=2)

        found = meter.collect()
        durations = by(found["stageflow.stage.duration"], "stageflow.stage", "stageflow.outcome")
        assert {k: p.count for k, p in durations.items()} == dict.fromkeys(EXECUTED, 2)
        assert {k: p.sum for k, p in durations.items()} == pytest.approx(
            {k: 2 * s for k, s in EXECUTED.items()}
        )
        outcomes = found["stageflow.stage.outcomes"]
        assert values(outcomes, "stageflow.stage", "stageflow.outcome") == {
            k: 2 * n for k, n in ENDED.items()
        }
        attempts = values(found["stageflow.stage.attempts"], "stageflow.stage")
        assert attempts[("flaky",)] == 4
        assert attempts[("ok1",)] == 2
        (run,) = points(found["stageflow.run.duration"])
        assert (run.count, run.sum) == (2, pytest.approx(6.0))

    def test_active_counts_the_stages_running_when_collected(self) -> None:
        meter = Metrics()
        seen: list[dict[tuple[Any, ...], Any]] = []

        async def look(ctx: StageContext) -> None:
            await asyncio.sleep(1)  # now b (2 s) is still running, and so is this stage
            seen.append(values(meter.collect()["stageflow.stage.active"], "stageflow.stage"))

        graph = (
            Pipeline("live")
            .with_stage("a", sleeper(1))
            .with_stage("b", sleeper(2), dependencies=["a"])
            .with_stage("c", look, dependencies=["a"])
            .with_stage("d", noop, dependencies=["b", "c"])
            .build()
        )
        engine, _ = metered(meter)

        assert run_virtual(engine.run(graph)).ok

        assert seen == [{("a",): 0, ("b",): 1, ("c",): 1}]  # d has not run yet
        after = values(meter.collect()["stageflow.stage.active"], "stageflow.stage")
        assert after == {("a",): 0, ("b",): 0, ("c",): 0, ("d",): 0}

    def test_a_cancelled_run_records_cancelled_durations_and_leaves_nothing_active(
        self,
    ) -> None:
        meter = Metrics()
        engine, _ = metered(meter)
        graph = Pipeline("stopped").with_stage("a", sleeper(10)).build()

        async def main() -> None:
            task = asyncio.create_task(engine.run(graph))
            await asyncio.sleep(1.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run_virtual(main())

        found = meter.collect()
        (stage,) = points(found["stageflow.stage.duration"])
        assert dict(stage.attributes)["stageflow.outcome"] == "cancelled"
        assert stage.sum == pytest.approx(1.5)
        (run,) = points(found["stageflow.run.duration"])
        assert dict(run.attributes) == {
            "stageflow.pipeline": "stopped",
            "stageflow.outcome": "cancelled",
        }
        assert run.sum == pytest.approx(1.5)
        assert values(found["stageflow.stage.active"], "stageflow.stage") == {("a",): 0}

    def test_a_run_that_raises_is_recorded_as_failed(self) -> None:
        meter = Metrics()
        interceptor = MetricsInterceptor(meter_provider=meter.provider)
        engine = Engine(interceptors=[interceptor, ExplodingRun(0.75)])

        with pytest.raises(RuntimeError, match="store down"):
            run_virtual(engine.run(Pipeline("exploded").with_stage("a", noop).build()))

        (run,) = points(meter.collect()["stageflow.run.duration"])
        assert dict(run.attributes) == {
            "stageflow.pipeline": "exploded",
            "stageflow.outcome": "failed",
        }
        assert run.sum == pytest.approx(0.75)
        assert interceptor.errors == 0

    def test_with_fail_fast_stages_that_never_started_count_as_skipped(self) -> None:
        meter = Metrics()
        graph = (
            Pipeline("fast")
            .with_stage("boom", failing(1))
            .with_stage("slow", sleeper(5))
            .with_stage("after", noop, dependencies=["slow"])
            .build()
        )
        engine, _ = metered(meter)

        result = run_virtual(engine.run(graph))

        assert result.status is RunStatus.FAILED
        found = meter.collect()
        outcomes = values(found["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome")
        assert outcomes == {
            ("boom", "failed"): 1,
            ("slow", "cancelled"): 1,
            ("after", "skipped"): 1,
        }
        durations = values(found["stageflow.stage.duration"], "stageflow.stage")
        assert durations == {("boom",): 1, ("slow",): 1}  # counts: none for "after"

    def test_a_stage_returning_what_no_stage_may_return_counts_as_failed(self) -> None:
        meter = Metrics()

        async def odd(ctx: StageContext) -> Any:
            await asyncio.sleep(1)
            return 42

        engine, _ = metered(meter)

        result = run_virtual(engine.run(Pipeline("odd").with_stage("s", odd).build()))

        assert result["s"].status.value == "failed"
        found = meter.collect()
        assert values(found["stageflow.stage.outcomes"], "stageflow.outcome") == {("failed",): 1}
        (point,) = points(found["stageflow.stage.duration"])
        assert (point.attributes["stageflow.outcome"], point.sum) == ("failed", pytest.approx(1.0))

    def test_a_restored_self_skip_counts_as_restored_only(self) -> None:
        store = MemoryStore()
        calls = {"flaky": 0}

        async def flaky(ctx: StageContext) -> None:
            calls["flaky"] += 1
            if calls["flaky"] == 1:
                raise ConnectionError("down")

        graph = (
            Pipeline("durable")
            .with_stage("skipper", skipper(1))
            .with_stage("after", noop, dependencies=["skipper"])
            .with_stage("flaky", flaky)
            .build()
        )
        meter = Metrics()

        async def main() -> Any:
            await Engine(store=store, fail_fast=False).run(graph, run_id="r1")
            return await metered(meter, store=store)[0].resume("r1", graph)

        result = run_virtual(main())

        assert result.ok
        assert result["skipper"].status.value == "skipped"
        outcomes = values(
            meter.collect()["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome"
        )
        assert outcomes == {
            ("skipper", "restored"): 1,
            ("after", "skipped"): 1,
            ("flaky", "completed"): 1,
        }

    def test_restored_stages_are_counted_as_restored_with_no_duration(self) -> None:
        store = MemoryStore()
        calls = {"b": 0}

        async def b(ctx: StageContext) -> dict[str, int]:
            calls["b"] += 1
            await asyncio.sleep(2)
            if calls["b"] == 1:
                raise ConnectionError("down")
            return {"b": 1}

        graph = (
            Pipeline("durable")
            .with_stage("a", sleeper(1, a=1))
            .with_stage("b", b, dependencies=["a"])
            .build()
        )
        first, second = Metrics(), Metrics()

        async def main() -> Any:
            failed = await metered(first, store=store)[0].run(graph, run_id="r1")
            assert failed.status is RunStatus.FAILED
            return await metered(second, store=store)[0].resume("r1", graph)

        result = run_virtual(main())

        assert result.ok
        found = second.collect()
        assert values(
            found["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome"
        ) == {
            ("a", "restored"): 1,
            ("b", "completed"): 1,
        }
        durations = by(found["stageflow.stage.duration"], "stageflow.stage", "stageflow.outcome")
        assert set(durations) == {("b", "completed")}
        assert durations["b", "completed"].sum == pytest.approx(2.0)
        assert values(found["stageflow.stage.attempts"], "stageflow.stage") == {
            ("a",): 0,
            ("b",): 1,
        }
        (run,) = points(found["stageflow.run.duration"])
        assert dict(run.attributes)["stageflow.outcome"] == "completed"
        assert run.sum == pytest.approx(2.0)  # a was restored: no time spent on it


class _RaisingHistogram:
    def __init__(self) -> None:
        self.calls = 0

    def record(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        raise RuntimeError("exporter down")


class _Meter:
    """A real SDK meter whose histograms raise when they record."""

    def __init__(self, inner: Any, histogram: _RaisingHistogram) -> None:
        self._inner = inner
        self._histogram = histogram

    def create_histogram(self, *args: Any, **kwargs: Any) -> _RaisingHistogram:
        return self._histogram

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _MeterProvider:
    def __init__(self, inner: Any, histogram: _RaisingHistogram) -> None:
        self._inner = inner
        self._histogram = histogram

    def get_meter(self, *args: Any, **kwargs: Any) -> _Meter:
        return _Meter(self._inner.get_meter(*args, **kwargs), self._histogram)


class TestTelemetryNeverBreaksARun:
    def test_a_histogram_that_raises_leaves_the_run_as_it_was_and_is_counted(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        meter = Metrics()
        histogram = _RaisingHistogram()
        interceptor = MetricsInterceptor(
            meter_provider=_MeterProvider(meter.provider, histogram)  # type: ignore[arg-type]
        )
        plain = run_virtual(Engine(fail_fast=False).run(mixed()))

        with caplog.at_level("ERROR", logger="stageflow"):
            result = run_virtual(Engine(interceptors=[interceptor], fail_fast=False).run(mixed()))

        def outcome(r: Any) -> Any:
            return r.status, r.duration, {s.stage: (s.status, s.attempts, dict(s.data)) for s in r}

        assert outcome(result) == outcome(plain)
        assert histogram.calls == 6  # five stages that ran, and the run
        assert interceptor.errors == 6
        logged = [r for r in caplog.records if r.name == "stageflow"]
        assert len(logged) == 1
        assert "metrics failed while recording the duration" in logged[0].getMessage()
        # the counters do not go through the histogram: they are still right
        found = meter.collect()
        assert "stageflow.stage.duration" not in found
        outcomes = values(found["stageflow.stage.outcomes"], "stageflow.stage", "stageflow.outcome")
        assert outcomes == ENDED


class TestConfiguration:
    @pytest.mark.parametrize("bad", ["x", 42, object()])
    def test_a_meter_provider_that_is_no_provider_is_refused_naming_the_argument(
        self, bad: object
    ) -> None:
        with pytest.raises(ConfigurationError, match="meter_provider") as info:
            MetricsInterceptor(meter_provider=bad)  # type: ignore[arg-type]

        assert info.value.field == "meter_provider"
        assert info.value.value is bad

    def test_without_a_provider_or_a_global_sdk_it_wraps_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # No test sets the global meter provider, so the API's proxy is still in place.
        monkeypatch.delenv("OTEL_PYTHON_METER_PROVIDER", raising=False)
        assert type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider", (
            "some test set the global meter provider: tests must pass providers explicitly"
        )
        graph = Pipeline("plain").with_stage("a", noop).build()
        interceptor = MetricsInterceptor()

        async def call(ctx: StageContext) -> None:
            return None

        async def run_call(run: Any) -> Any:
            return None

        assert interceptor.wrap(graph["a"], call) is call
        assert interceptor.wrap_run(graph, run_call) is run_call
        engine = Engine(interceptors=[interceptor])
        assert engine.calls(graph)[0] is graph["a"].call
        assert run_virtual(engine.run(graph)).ok
        assert interceptor.errors == 0

    def test_it_sits_after_tracing_by_default(self) -> None:
        assert MetricsInterceptor(meter_provider=Metrics().provider).priority == 200
