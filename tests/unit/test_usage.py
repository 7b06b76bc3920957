"""Usage: arithmetic, reports, result.usage, and usage kept by a store across resumes."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

import stageflow._services
from stageflow import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Engine,
    LoopClock,
    Pipeline,
    PriceTable,
    RetryPolicy,
    RunResult,
    StageContext,
    StageGraph,
    StageStatus,
    UnknownModelError,
    Usage,
    UsageRecord,
    UsageSummary,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import RecordingSink, run_virtual

PRICES = {"gpt-4o": {"input": 2.5, "output": 10.0}, "mini": {"input": 0.15, "output": 0.6}}


def one_stage(stage: Callable[..., Any], **options: Any) -> StageGraph:
    return Pipeline("one").with_stage("s", stage, **options).build()


def run(graph: StageGraph, **engine: Any) -> RunResult:
    return run_virtual(Engine(**engine).run(graph))


class TestUsage:
    def test_adding_sums_tokens_and_known_costs(self):
        total = Usage(100, 20, 0.5) + Usage(10, 2)

        assert (total.input_tokens, total.output_tokens, total.cost) == (110, 22, 0.5)
        assert total.tokens == 132
        assert (Usage(1, 1, 0.25) + Usage(2, 2, 0.5)).cost == 0.75
        assert (Usage(1, 2) + Usage(3, 4)).cost is None
        assert (Usage() + Usage(0, 0, 0.25)).cost == 0.25
        assert Usage().tokens == 0
        assert Usage().cost is None

    def test_only_usages_add(self):
        with pytest.raises(TypeError):
            Usage(1, 2) + 3  # type: ignore[operator]
        with pytest.raises(TypeError):
            3 + Usage(1, 2)  # type: ignore[operator]

    def test_equality_compares_tokens_and_costs_to_rounding(self):
        assert Usage(1, 2, 0.1) + Usage(3, 4, 0.2) == Usage(4, 6, 0.3)
        assert Usage(1, 2) == Usage(1, 2)
        assert Usage(1, 2) != Usage(2, 1)
        assert Usage(1, 2, None) != Usage(1, 2, 0.0)  # unknown is not free
        assert Usage(1, 2, 0.1) != Usage(1, 2, 0.2)
        assert Usage(1, 2) != (1, 2)
        assert hash(Usage(1, 2, 0.1) + Usage(3, 4, 0.2)) == hash(Usage(4, 6, 0.3))
        assert len({Usage(1, 2, 0.5), Usage(1, 2, 0.5)}) == 1

    @pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "cost", "tokens_x"])
    def test_a_usage_cannot_be_changed(self, field):
        usage = Usage(1, 2, 0.5)

        with pytest.raises(AttributeError, match="immutable"):
            setattr(usage, field, 9)
        assert usage == Usage(1, 2, 0.5)

    def test_a_usage_field_cannot_be_deleted(self):
        usage = Usage(1, 2, 0.5)

        with pytest.raises(AttributeError):
            del usage.cost
        assert usage.cost == 0.5

    def test_repr_shows_tokens_and_cost(self):
        assert repr(Usage(3, 4)) == "<Usage in=3 out=4>"
        assert repr(Usage(3, 4, 0.5)) == "<Usage in=3 out=4 cost=0.5>"


class TestUsageSummary:
    ROWS = (
        ("p", "a", "gpt-4o", Usage(100, 10, 0.5)),
        ("p", "a", None, Usage(5, 0)),
        ("p", "b", "gpt-4o", Usage(50, 5, 0.25)),
        ("q", "b", "mini", Usage(1, 1, 0.125)),
    )

    def test_of_sums_in_all_by_stage_model_and_pipeline(self):
        summary = UsageSummary.of(self.ROWS)

        assert summary.total == Usage(156, 16, 0.875)
        assert (summary.tokens, summary.input_tokens, summary.output_tokens) == (172, 156, 16)
        assert summary.cost == 0.875
        assert dict(summary.by_stage) == {"a": Usage(105, 10, 0.5), "b": Usage(51, 6, 0.375)}
        assert dict(summary.by_model) == {
            "gpt-4o": Usage(150, 15, 0.75),
            "": Usage(5, 0),
            "mini": Usage(1, 1, 0.125),
        }
        assert dict(summary.by_pipeline) == {"p": Usage(155, 15, 0.75), "q": Usage(1, 1, 0.125)}

    def test_a_summary_of_nothing_is_empty_and_costs_nothing_known(self):
        summary = UsageSummary.of([])

        assert summary == UsageSummary()
        assert summary.tokens == 0
        assert summary.cost is None
        assert dict(summary.by_stage) == dict(summary.by_model) == {}

    def test_cost_is_none_when_no_row_had_a_cost(self):
        summary = UsageSummary.of([("p", "a", "m", Usage(1, 2)), ("p", "b", None, Usage(3, 4))])

        assert summary.cost is None
        assert summary.tokens == 10

    def test_its_mappings_are_read_only_and_it_is_unhashable(self):
        summary = UsageSummary.of(self.ROWS)

        with pytest.raises(TypeError):
            summary.by_stage["c"] = Usage()  # type: ignore[index]
        with pytest.raises(TypeError):
            hash(summary)

    def test_equality(self):
        assert UsageSummary.of(self.ROWS) == UsageSummary.of(reversed(self.ROWS))
        assert UsageSummary.of(self.ROWS) != UsageSummary.of(self.ROWS[:3])
        assert UsageSummary.of(self.ROWS) != "summary"
        assert "tokens=172" in repr(UsageSummary.of(self.ROWS))


class TestReports:
    def test_a_report_returns_the_usage_recorded_cost_included(self):
        returned: list[Usage] = []

        async def stage(ctx: StageContext) -> None:
            returned.append(ctx.usage.report(model="gpt-4o", input_tokens=1000, output_tokens=100))
            returned.append(ctx.usage.report(model="gpt-4o", input_tokens=1000, cost=7.0))
            returned.append(ctx.usage.report(input_tokens=10))  # no model: no price
            returned.append(ctx.usage.report(model="unpriced-but-fallback", output_tokens=10**6))

        table = PriceTable(models=PRICES, fallback={"input": 1, "output": 2})

        result = run(one_stage(stage), prices=table)

        assert result.ok
        assert returned == [
            Usage(1000, 100, (1000 * 2.5 + 100 * 10) / 1e6),
            Usage(1000, 0, 7.0),  # an explicit cost is taken as it is
            Usage(10, 0, None),
            Usage(0, 10**6, 2.0),
        ]
        assert result.usage.cost == pytest.approx(0.0035 + 7.0 + 2.0)

    def test_without_a_price_table_costs_are_unknown_unless_given(self):
        async def stage(ctx: StageContext) -> None:
            ctx.usage.report(model="gpt-4o", input_tokens=10, output_tokens=5)
            ctx.usage.report(model="gpt-4o", input_tokens=1, cost=0)

        result = run(one_stage(stage))

        assert result.ok
        assert result.usage.total == Usage(11, 5, 0.0)
        assert result.usage.by_model["gpt-4o"] == Usage(11, 5, 0.0)

    def test_a_stage_sees_what_it_spent_across_attempts(self):
        spent: list[Usage] = []

        async def stage(ctx: StageContext) -> None:
            ctx.usage.report(input_tokens=10, output_tokens=1, cost=0.5)
            spent.append(ctx.usage.spent)
            if ctx.attempt == 1:
                raise ConnectionError("again")

        result = run(one_stage(stage, retry=RetryPolicy(attempts=2, base=0)))

        assert result.ok
        assert spent == [Usage(10, 1, 0.5), Usage(20, 2, 1.0)]
        assert result.usage.by_stage["s"] == Usage(20, 2, 1.0)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"input_tokens": -1}, "input_tokens"),
            ({"input_tokens": 1.5}, "input_tokens"),
            ({"input_tokens": True}, "input_tokens"),
            ({"input_tokens": "3"}, "input_tokens"),
            ({"output_tokens": -5}, "output_tokens"),
            ({"output_tokens": None}, "output_tokens"),
            ({"cost": -0.01}, "cost"),
            ({"cost": math.nan}, "cost"),
            ({"cost": math.inf}, "cost"),
            ({"cost": True}, "cost"),
            ({"cost": "1"}, "cost"),
            ({"model": ""}, "model"),
            ({"model": 42}, "model"),
        ],
    )
    def test_a_bad_report_fails_the_stage_naming_the_field(self, kwargs, field):
        async def stage(ctx: StageContext) -> None:
            ctx.usage.report(**kwargs)

        result = run(one_stage(stage), budget=Budget(max_tokens=100), prices=PRICES)

        error = result["s"].error
        assert type(error) is ConfigurationError
        assert error.field == field
        assert field in str(error)
        assert "stage 's'" in str(error)
        assert result.usage.tokens == 0

    def test_an_unknown_model_with_a_price_table_fails_the_stage_listing_known_models(self):
        async def stage(ctx: StageContext) -> None:
            ctx.usage.report(model="gpt-5", input_tokens=10)

        result = run(one_stage(stage), prices=PRICES)

        error = result["s"].error
        assert isinstance(error, UnknownModelError)
        assert error.model == "gpt-5"
        assert "'gpt-4o', 'mini'" in str(error)
        assert result["s"].status is StageStatus.FAILED
        # the tokens were spent all the same: counted, at no known cost
        assert dict(result.usage.by_model) == {"gpt-5": Usage(10, 0)}

    def test_an_unknown_model_without_a_price_table_is_fine(self):
        async def stage(ctx: StageContext) -> None:
            ctx.usage.report(model="gpt-5", input_tokens=10)

        assert run(one_stage(stage)).usage.by_model["gpt-5"] == Usage(10, 0)


class TestResultUsage:
    def test_by_stage_by_model_and_cost(self):
        async def a(ctx: StageContext) -> None:
            ctx.usage.report(model="gpt-4o", input_tokens=1_000_000)
            await asyncio.sleep(1)
            ctx.usage.report(input_tokens=3, output_tokens=4)

        async def b(ctx: StageContext) -> None:
            ctx.usage.report(model="mini", output_tokens=1_000_000)
            ctx.usage.report(model="gpt-4o", output_tokens=100_000)

        async def quiet(ctx: StageContext) -> None:
            await asyncio.sleep(2)

        graph = (
            Pipeline("mix")
            .with_stage("a", a)
            .with_stage("b", b, dependencies=("a",))
            .with_stage("quiet", quiet)
            .build()
        )

        result = run(graph, prices=PRICES)

        assert result.ok
        assert dict(result.usage.by_stage) == {
            "a": Usage(1_000_003, 4, 2.5),
            "b": Usage(0, 1_100_000, 0.6 + 1.0),
        }
        assert dict(result.usage.by_model) == {
            "gpt-4o": Usage(1_000_000, 100_000, 3.5),
            "": Usage(3, 4),
            "mini": Usage(0, 1_000_000, 0.6),
        }
        assert dict(result.usage.by_pipeline) == {"mix": result.usage.total}
        assert result.usage.cost == pytest.approx(4.1)
        assert result.usage.tokens == 2_100_007

    def test_a_run_that_reports_nothing_has_empty_usage(self):
        async def stage(ctx: StageContext) -> None:
            await asyncio.sleep(1)

        for engine in ({}, {"budget": Budget(max_tokens=5), "prices": PRICES}):
            result = run(one_stage(stage, estimate=1), **engine)
            assert result.ok
            assert result.usage == UsageSummary()
            assert result.usage.cost is None

    def test_reports_of_a_stage_cancelled_by_fail_fast_count(self):
        async def long(ctx: StageContext) -> None:
            ctx.usage.report(input_tokens=70)
            await asyncio.sleep(10)
            ctx.usage.report(input_tokens=1000)

        async def boom(ctx: StageContext) -> None:
            await asyncio.sleep(1)
            raise ValueError("boom")

        graph = Pipeline().with_stage("long", long).with_stage("boom", boom).build()

        result = run(graph)

        assert result["long"].status is StageStatus.CANCELLED
        assert dict(result.usage.by_stage) == {"long": Usage(70, 0)}

    def test_sync_stages_reporting_at_once_lose_nothing(self, monkeypatch):
        # Two threads enter the ledger's constructor together when nothing serializes them.
        both = threading.Barrier(2, timeout=0.5)

        class Meeting(stageflow._services.UsageLedger):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                # serialized (fixed): the other never comes, and the barrier breaks
                with contextlib.suppress(threading.BrokenBarrierError):
                    both.wait()
                super().__init__(*args, **kwargs)

        monkeypatch.setattr(stageflow._services, "UsageLedger", Meeting)

        def sync(ctx: StageContext) -> None:
            ctx.usage.report(input_tokens=10)

        graph = Pipeline().with_stage("a", sync).with_stage("b", sync).build()

        result = run(graph)

        assert result.ok
        assert result.usage.tokens == 20


# --------------------------------------------------------------------------- persistence


class Stages:
    """Stages that report usage, count their calls and fail the first time when told."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def make(
        self, name: str, tokens: int, *, fail_first: bool = False, model: str = "gpt-4o"
    ) -> Callable[[StageContext], Any]:
        async def stage(ctx: StageContext) -> dict[str, str]:
            self.calls[name] = self.calls.get(name, 0) + 1
            await asyncio.sleep(1)
            ctx.usage.report(model=model, input_tokens=tokens)
            if fail_first and self.calls[name] == 1:
                raise ConnectionError("down")
            return {"name": name}

        return stage


def chain(stages: Stages, *tokens: int, fail: str = "b", **options: Any) -> StageGraph:
    """a -> b -> c, reporting ``tokens`` each; ``fail`` raises the first time."""
    p = Pipeline("durable")
    before: tuple[str, ...] = ()
    for name, n in zip("abc", tokens, strict=True):
        stage = stages.make(name, n, fail_first=name == fail)
        p = p.with_stage(name, stage, dependencies=before, **options.get(name, {}))
        before = (name,)
    return p.build()


def by_stage(records: list[UsageRecord]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for r in records:
        totals[r.stage] = totals.get(r.stage, 0) + r.input_tokens + r.output_tokens
    return totals


class WallClock(LoopClock):
    """The loop's clock for durations; a wall clock set by hand, for report times."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TestStoredUsage:
    def test_a_stages_usage_is_stored_before_any_dependent_starts(self):
        store = MemoryStore()
        seen: list[list[UsageRecord]] = []

        async def a(ctx: StageContext) -> None:
            ctx.usage.report(model="gpt-4o", input_tokens=5, output_tokens=6)

        async def b(ctx: StageContext) -> None:
            seen.append(await store.load_usage(ctx.run_id))

        graph = Pipeline().with_stage("a", a).with_stage("b", b, dependencies=("a",)).build()

        result = run(graph, store=store, prices=PRICES, clock=WallClock(1234.5))

        assert result.ok
        assert seen == [
            [UsageRecord(result.run_id, "a", 1, "gpt-4o", 5, 6, (5 * 2.5 + 6 * 10) / 1e6, 1234.5)]
        ]

    def test_failed_and_cancelled_stages_usage_is_stored(self):
        store = MemoryStore()

        async def fails(ctx: StageContext) -> None:
            await asyncio.sleep(1)
            ctx.usage.report(input_tokens=10)
            raise ValueError("boom")

        async def long(ctx: StageContext) -> None:
            ctx.usage.report(input_tokens=20)
            await asyncio.sleep(10)

        graph = Pipeline().with_stage("fails", fails).with_stage("long", long).build()

        async def main() -> tuple[RunResult, list[UsageRecord]]:
            result = await Engine(store=store).run(graph, run_id="r1")
            return result, await store.load_usage("r1")

        result, stored = run_virtual(main())

        assert result["long"].status is StageStatus.CANCELLED
        assert by_stage(stored) == {"fails": 10, "long": 20}

    def test_a_resume_counts_stored_usage_once_and_adds_the_new(self):
        stages = Stages()
        graph = chain(stages, 300, 200, 100)
        store = MemoryStore()

        async def main() -> tuple[RunResult, RunResult, list[UsageRecord]]:
            first = await Engine(store=store, prices=PRICES).run(graph, run_id="r1")
            second = await Engine(store=store, prices=PRICES).resume("r1", graph)
            return first, second, await store.load_usage("r1")

        first, second, stored = run_virtual(main())

        assert (first.status, second.status) == ("failed", "completed")
        assert stages.calls == {"a": 1, "b": 2, "c": 1}  # a was restored, not run
        assert first.usage.tokens == 500
        assert dict(first.usage.by_stage) == {
            "a": Usage(300, 0, 0.00075),
            "b": Usage(200, 0, 0.0005),
        }
        new = UsageSummary.of(
            [
                ("durable", "b", "gpt-4o", Usage(200, 0, 0.0005)),
                ("durable", "c", "gpt-4o", Usage(100, 0, 0.00025)),
            ]
        )
        assert second.usage.total == first.usage.total + new.total
        assert dict(second.usage.by_stage) == {
            "a": Usage(300, 0, 0.00075),  # restored: not doubled
            "b": Usage(400, 0, 0.001),  # both attempts were spent
            "c": Usage(100, 0, 0.00025),
        }
        assert by_stage(stored) == {"a": 300, "b": 400, "c": 100}
        assert len(stored) == 4

    def test_what_a_cancelled_run_spent_is_stored_and_counted_by_the_resume(self):
        calls: list[str] = []

        async def slow(ctx: StageContext) -> None:
            calls.append(ctx.stage)
            ctx.usage.report(input_tokens=100)
            await asyncio.sleep(10)

        graph = Pipeline("cancelled").with_stage("slow", slow).build()
        store = MemoryStore()

        async def main() -> tuple[list[UsageRecord], RunResult]:
            task = asyncio.create_task(Engine(store=store).run(graph, run_id="r1"))
            await asyncio.sleep(3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stored = await store.load_usage("r1")
            return stored, await Engine(store=store).resume("r1", graph)

        stored, result = run_virtual(main())

        assert by_stage(stored) == {"slow": 100}
        assert calls == ["slow", "slow"]
        assert result.ok
        assert dict(result.usage.by_stage) == {"slow": Usage(200, 0)}

    def test_resuming_a_completed_run_gives_its_usage(self):
        stages = Stages()
        graph = chain(stages, 1, 2, 3, fail="")
        store = MemoryStore()

        async def main() -> tuple[RunResult, RunResult]:
            first = await Engine(store=store).run(graph, run_id="r1")
            return first, await Engine(store=store).resume("r1", graph)

        first, again = run_virtual(main())

        assert stages.calls == {"a": 1, "b": 1, "c": 1}
        assert again.usage == first.usage
        assert again.usage.tokens == 6

    def test_the_run_budget_goes_on_from_what_was_spent(self):
        stages = Stages()
        options = {"a": {"estimate": 900}, "b": {"estimate": 50}, "c": {"estimate": 40}}
        graph = chain(stages, 900, 50, 40, **options)
        store = MemoryStore()
        sinks = RecordingSink(), RecordingSink()

        def engine(sink: RecordingSink) -> Engine:
            return Engine(store=store, sink=sink, budget=Budget(max_tokens=1000, warn_at=0.5))

        async def main() -> tuple[RunResult, RunResult]:
            first = await engine(sinks[0]).run(graph, run_id="r1")
            return first, await engine(sinks[1]).resume("r1", graph)

        first, second = run_virtual(main())

        assert first["b"].status is StageStatus.FAILED
        # resumed: 900 + 50 spent; b's 50 fits (1000); then nothing is left for c
        assert second["b"].ok
        error = second["c"].error
        assert isinstance(error, BudgetExceededError)
        assert (error.scope, error.spent, error.requested) == ("run", 1000, 40)
        assert stages.calls == {"a": 1, "b": 2}
        assert second.usage.tokens == 1000
        # warned once, by the first driver; the resume does not warn again
        assert [e.stage for e in sinks[0].of_type("budget.warning")] == ["a"]
        assert sinks[1].of_type("budget.warning") == []

    def test_a_stage_budget_goes_on_from_what_the_stage_spent(self):
        stages = Stages()
        options = {"b": {"estimate": 50, "budget": Budget(max_tokens=80)}}
        graph = chain(stages, 10, 50, 5, **options)
        store = MemoryStore()

        async def main() -> tuple[RunResult, RunResult]:
            first = await Engine(store=store).run(graph, run_id="r1")
            return first, await Engine(store=store).resume("r1", graph)

        first, second = run_virtual(main())

        assert first["b"].status is StageStatus.FAILED
        error = second["b"].error
        assert isinstance(error, BudgetExceededError)  # 50 spent + 50 > 80
        assert (error.scope, error.spent, error.requested) == ("stage", 50, 50)
        assert stages.calls == {"a": 1, "b": 1}

    def test_a_resume_does_not_tell_again_that_a_notify_budget_was_exceeded(self):
        stages = Stages()
        graph = chain(stages, 900, 200, 0)
        store = MemoryStore()
        sinks = RecordingSink(), RecordingSink()

        def engine(sink: RecordingSink) -> Engine:
            return Engine(store=store, sink=sink, budget=Budget(max_tokens=1000, policy="notify"))

        async def main() -> None:
            await engine(sinks[0]).run(graph, run_id="r1")
            await engine(sinks[1]).resume("r1", graph)

        run_virtual(main())

        told = [
            e
            for sink in sinks
            for e in sink.of_type("budget.exceeded")
            if "requested" not in e.data  # told at a report, not at an admission
        ]
        assert len(told) == 1

    def test_the_store_sums_usage_of_many_runs_with_filters(self):
        store = MemoryStore()

        async def x(ctx: StageContext) -> None:
            model = "gpt-4o" if ctx.pipeline == "alpha" else "mini"
            ctx.usage.report(model=model, input_tokens=1_000_000)

        async def y(ctx: StageContext) -> None:
            ctx.usage.report(input_tokens=10, cost=0.5)

        alpha = Pipeline("alpha").with_stage("x", x).with_stage("y", y).build()
        beta = Pipeline("beta").with_stage("x", x).build()

        async def main() -> None:
            await Engine(store=store, prices=PRICES, clock=WallClock(1000.0)).run(alpha)
            await Engine(store=store, prices=PRICES, clock=WallClock(2000.0)).run(beta)

        run_virtual(main())

        def usage(**filters: Any) -> UsageSummary:
            return run_virtual(store.usage(**filters))

        alpha_x, alpha_y, beta_x = Usage(10**6, 0, 2.5), Usage(10, 0, 0.5), Usage(10**6, 0, 0.15)
        everything = usage()
        assert everything.total == alpha_x + alpha_y + beta_x
        assert dict(everything.by_pipeline) == {"alpha": alpha_x + alpha_y, "beta": beta_x}
        assert dict(everything.by_stage) == {"x": alpha_x + beta_x, "y": alpha_y}
        assert dict(everything.by_model) == {"gpt-4o": alpha_x, "": alpha_y, "mini": beta_x}
        assert usage(pipeline="alpha").total == alpha_x + alpha_y
        assert usage(pipeline="nope") == UsageSummary()
        assert usage(stage="x").total == alpha_x + beta_x
        assert usage(model="").total == alpha_y
        assert usage(model="mini").total == beta_x
        assert usage(pipeline="alpha", stage="x").total == alpha_x
        assert usage(since=1500).total == beta_x
        assert usage(until=1500).total == alpha_x + alpha_y
        assert usage(since=1000.0, until=2000.0).total == alpha_x + alpha_y  # [since, until)
        assert usage(since=2000.0).total == beta_x
        assert usage(since=1000.0, until=1000.0) == UsageSummary()
