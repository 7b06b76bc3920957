"""Laws of budgets: for any graph, any estimates, any reports within them and any limit on
parallelism, a ``block`` budget is never overspent, and what a run says it spent is exactly
what its stages reported."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stageflow import (
    Budget,
    BudgetExceededError,
    Engine,
    Estimate,
    Pipeline,
    PriceTable,
    RunResult,
    StageContext,
    StageStatus,
    Usage,
)
from stageflow.testing import DagShape, dag_shapes, run_virtual

from ._harness import HANG_GUARD, MAX_PARALLEL

EXAMPLES = settings(max_examples=max(50, settings.default.max_examples // 2))

PRICES = PriceTable.of(
    {
        "big": {"input": 5.0, "output": 15.0},
        "small": {"input": 0.5, "output": 1.5},
        "free": {"input": 0.0, "output": 0.0},
    }
)
MODELS = st.sampled_from([None, "big", "big", "small", "free"])
SLEEPS = st.integers(0, 8).map(lambda k: k / 4)
# Mostly not: fail_fast cancels every stage when the first is blocked, before it reports.
FAIL_FAST = st.sampled_from([False, False, False, True])


@dataclasses.dataclass(frozen=True)
class Report:
    after: float  # virtual seconds slept before it
    input_tokens: int
    output_tokens: int
    model: str | None

    @property
    def usage(self) -> Usage:
        """What it costs with PRICES."""
        return self.usage_with(priced=True)

    def usage_with(self, *, priced: bool) -> Usage:
        """What the run counts for it: with no price table, no cost."""
        cost = None
        if priced and self.model is not None:
            cost = PRICES.cost(self.model, self.input_tokens, self.output_tokens)
        return Usage(self.input_tokens, self.output_tokens, cost)


@dataclasses.dataclass(frozen=True)
class Spending:
    """A graph; per stage, its reports and an estimate that covers them."""

    shape: DagShape
    reports: Mapping[str, tuple[Report, ...]]
    estimates: Mapping[str, Estimate]
    tail: Mapping[str, float]  # virtual seconds after the last report


@st.composite
def spendings(draw: st.DrawFn) -> Spending:
    # without dependencies every stage asks at once: the hardest case for a budget
    most = draw(st.sampled_from([0, 0, 1, 2]), label="max dependencies")
    shape = draw(dag_shapes(max_stages=8, max_dependencies=most))
    reports: dict[str, tuple[Report, ...]] = {}
    estimates: dict[str, Estimate] = {}
    tail: dict[str, float] = {}
    for name in shape.names:
        made = draw(
            st.lists(
                st.builds(Report, SLEEPS, st.integers(0, 200), st.integers(0, 200), MODELS),
                min_size=draw(st.sampled_from([0, 1, 1, 1]), label=f"{name} reports"),
                max_size=3,
            ),
            label=f"reports of {name}",
        )
        reports[name] = tuple(made)
        spent = Usage()
        for report in made:
            spent = spent + report.usage
        slack = draw(st.sampled_from([0, 0, 10, 100]), label=f"token slack of {name}")
        extra_cost = draw(st.sampled_from([0.0, 0.0, 0.001]), label=f"cost slack of {name}")
        estimates[name] = Estimate(
            tokens=spent.tokens + slack, cost=(spent.cost or 0.0) + extra_cost
        )
        tail[name] = draw(SLEEPS, label=f"tail of {name}")
    return Spending(shape, reports, estimates, tail)


@st.composite
def limits(draw: st.DrawFn, spending: Spending, field: str) -> float:
    """A limit: a share of what all the stages expect, or exactly what some of them expect
    (a tight fit)."""
    of = [getattr(spending.estimates[n], field) for n in spending.shape.names]
    if draw(st.booleans(), label="tight limit"):
        chosen = draw(
            st.lists(st.sampled_from(range(len(of))), min_size=1, unique=True), label="covered"
        )
        return math.fsum(of[i] for i in chosen)
    # a share of what all the stages expect: the more run at once, the more are turned away
    share = draw(st.integers(1, 100), label="percent of all estimates") / 100
    if field == "tokens":
        return max(1, int(sum(of) * share))
    return math.fsum(of) * share


@dataclasses.dataclass
class Observed:
    result: RunResult
    priced: bool
    reported: dict[str, list[Report]]  # what each stage that ran reported, as it did
    called: set[str]


def run_spending(spending: Spending, **engine: Any) -> Observed:
    reported: dict[str, list[Report]] = {}
    called: set[str] = set()

    def stage(name: str) -> Any:
        async def spend(ctx: StageContext) -> dict[str, str]:
            called.add(name)
            for report in spending.reports[name]:
                await asyncio.sleep(report.after)
                # noted before the call: a report that raised is counted all the same
                reported.setdefault(name, []).append(report)
                ctx.usage.report(
                    model=report.model,
                    input_tokens=report.input_tokens,
                    output_tokens=report.output_tokens,
                )
            await asyncio.sleep(spending.tail[name])
            return {"stage": name}

        return spend

    p = Pipeline("spending")
    for name, dependencies in spending.shape.stages:
        p = p.with_stage(
            name, stage(name), dependencies=dependencies, estimate=spending.estimates[name]
        )
    graph = p.build()

    async def main() -> RunResult:
        async with asyncio.timeout(HANG_GUARD):
            return await Engine(**engine).run(graph)

    return Observed(run_virtual(main), "prices" in engine, reported, called)


def sums(reported: Mapping[str, list[Report]], *, priced: bool) -> dict[str, Usage]:
    totals: dict[str, Usage] = {}
    for name, reports in reported.items():
        for report in reports:
            totals[name] = totals.get(name, Usage()) + report.usage_with(priced=priced)
    return totals


def assert_usage_is_what_was_reported(observed: Observed) -> None:
    expected = sums(observed.reported, priced=observed.priced)
    usage = observed.result.usage
    assert dict(usage.by_stage) == expected
    assert usage.tokens == sum(u.tokens for u in expected.values())
    total = Usage()
    for u in expected.values():
        total = total + u
    assert usage.total == total


def assert_no_report_was_blocked(observed: Observed) -> None:
    # Every stage reports within its estimate: a stage is only ever blocked before it runs.
    for stage in observed.result:
        if isinstance(stage.error, BudgetExceededError):
            assert stage.stage not in observed.called, stage.error


class TestABlockBudgetIsNeverOverspent:
    @EXAMPLES
    @given(data=st.data(), max_parallel=MAX_PARALLEL, fail_fast=FAIL_FAST)
    def test_tokens(self, data: st.DataObject, max_parallel: int | None, fail_fast: bool) -> None:
        spending = data.draw(spendings(), label="spending")
        max_tokens = int(data.draw(limits(spending, "tokens")))

        observed = run_spending(
            spending,
            budget=Budget(max_tokens=max_tokens),
            max_parallel=max_parallel,
            fail_fast=fail_fast,
        )

        assert observed.result.usage.tokens <= max_tokens
        assert_usage_is_what_was_reported(observed)
        assert_no_report_was_blocked(observed)

    @EXAMPLES
    @given(data=st.data(), max_parallel=MAX_PARALLEL, fail_fast=FAIL_FAST)
    def test_cost(self, data: st.DataObject, max_parallel: int | None, fail_fast: bool) -> None:
        spending = data.draw(spendings(), label="spending")
        max_cost = data.draw(limits(spending, "cost"))

        observed = run_spending(
            spending,
            budget=Budget(max_cost=max_cost),
            prices=PRICES,
            max_parallel=max_parallel,
            fail_fast=fail_fast,
        )

        cost = observed.result.usage.cost or 0.0
        assert cost <= max_cost * (1 + 1e-9) + 1e-15
        assert_usage_is_what_was_reported(observed)
        assert_no_report_was_blocked(observed)

    @EXAMPLES
    @given(data=st.data(), max_parallel=MAX_PARALLEL)
    def test_nothing_is_blocked_by_a_budget_that_covers_every_estimate(
        self, data: st.DataObject, max_parallel: int | None
    ) -> None:
        # What a stage reports replaces as much of its reservation, and every stage reports
        # at most its estimate: a budget of the estimates' sum is enough, however many run
        # at once.
        spending = data.draw(spendings(), label="spending")
        needed = sum(e.tokens for e in spending.estimates.values())
        spare = data.draw(st.integers(1, 100), label="spare")

        observed = run_spending(
            spending, budget=Budget(max_tokens=needed + spare), max_parallel=max_parallel
        )

        assert observed.result.ok
        assert observed.called == set(spending.shape.names)
        assert_usage_is_what_was_reported(observed)


@st.composite
def crowds(draw: st.DrawFn) -> Spending:
    """Independent stages that all ask at once, each reporting once exactly its estimate."""
    names = [f"s{k}" for k in range(draw(st.integers(2, 8), label="stages"))]
    reports = {
        n: (Report(0.0, *draw(st.tuples(st.integers(0, 300), st.integers(0, 300))), "big"),)
        for n in names
    }
    estimates = {
        n: Estimate(tokens=r[0].usage.tokens, cost=r[0].usage.cost or 0.0)
        for n, r in reports.items()
    }
    tail = {n: draw(SLEEPS, label=f"tail of {n}") for n in names}
    return Spending(DagShape(tuple((n, ()) for n in names)), reports, estimates, tail)


class TestStagesAskingAtOnce:
    """Every stage asks before any has reported: only reservations keep them in budget."""

    @EXAMPLES
    @given(data=st.data())
    @pytest.mark.parametrize("field", ["tokens", "cost"])
    def test_together_they_never_overspend(self, field: str, data: st.DataObject) -> None:
        spending = data.draw(crowds(), label="crowd")
        limit = data.draw(limits(spending, field))
        budget = Budget(max_tokens=int(limit)) if field == "tokens" else Budget(max_cost=limit)

        observed = run_spending(spending, budget=budget, prices=PRICES, fail_fast=False)

        usage = observed.result.usage
        if field == "tokens":
            assert usage.tokens <= limit
        else:
            assert (usage.cost or 0.0) <= limit * (1 + 1e-9) + 1e-15
        assert_usage_is_what_was_reported(observed)
        assert_no_report_was_blocked(observed)


class TestWithoutBudget:
    @EXAMPLES
    @given(spending=spendings(), max_parallel=MAX_PARALLEL, priced=st.booleans())
    def test_usage_is_the_sum_of_the_reports(
        self, spending: Spending, max_parallel: int | None, priced: bool
    ) -> None:
        engine: dict[str, Any] = {"max_parallel": max_parallel}
        if priced:
            engine["prices"] = PRICES

        observed = run_spending(spending, **engine)

        assert observed.result.ok
        assert all(s.status is StageStatus.COMPLETED for s in observed.result)
        expected = sums(
            {n: list(r) for n, r in spending.reports.items() if r}, priced=priced
        )  # every stage ran and made all its reports
        assert dict(observed.result.usage.by_stage) == expected
        assert_usage_is_what_was_reported(observed)
        assert observed.result.usage.tokens == sum(u.tokens for u in expected.values())
        by_model: dict[str, Usage] = {}
        for name in spending.shape.names:
            for report in spending.reports[name]:
                key = report.model or ""
                by_model[key] = by_model.get(key, Usage()) + report.usage_with(priced=priced)
        assert dict(observed.result.usage.by_model) == by_model
