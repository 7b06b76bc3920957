"""Budgets: admission before each attempt, reservations, policies, downgrades, warnings."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from stageflow import (
    Budget,
    BudgetExceededError,
    BudgetInterceptor,
    ConfigurationError,
    CostPolicy,
    Engine,
    Estimate,
    ModelChain,
    Pipeline,
    Priority,
    RetryPolicy,
    RunResult,
    StageContext,
    StageError,
    StageGraph,
    StageStatus,
)
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import noop

PRICES = {
    "gpt-4o": {"input": 2.5, "output": 10.0},
    "gpt-4o-mini": {"input": 0.15, "output": 0.6},
    "local": {"input": 0.0, "output": 0.0},
}
CHAIN = ModelChain("gpt-4o", "gpt-4o-mini", "local")


class Spender:
    """Stages that report usage; record who was called, on which attempt, with which model."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.models: dict[str, str] = {}
        self.after_report: list[str] = []

    def make(
        self,
        *reports: tuple[int, int],
        model: str | None = None,
        seconds: float = 1.0,
        fail_first: bool = False,
        preferred: str | None = None,
    ) -> Callable[[StageContext], Any]:
        """A stage that sleeps, then makes ``reports`` of (input, output) tokens."""

        async def stage(ctx: StageContext) -> dict[str, Any]:
            self.calls.append((ctx.stage, ctx.attempt))
            used = model
            if preferred is not None:
                used = self.models[ctx.stage] = ctx.model(preferred)
            await asyncio.sleep(seconds)
            for tokens_in, tokens_out in reports:
                ctx.usage.report(model=used, input_tokens=tokens_in, output_tokens=tokens_out)
            self.after_report.append(ctx.stage)
            if fail_first and ctx.attempt == 1:
                raise ConnectionError("down")
            return {"model": used}

        return stage

    def called(self) -> list[str]:
        return [name for name, _ in self.calls]


def run_with(graph: StageGraph, **engine: Any) -> tuple[RunResult, RecordingSink]:
    sink = RecordingSink()
    result = run_virtual(Engine(sink=sink, **engine).run(graph))
    return result, sink


def budget_events(sink: RecordingSink, type_: str | None = None) -> list[tuple[str, str, dict]]:
    return [
        (e.type, e.stage, dict(e.data))
        for e in sink.events
        if e.type.startswith("budget.") and (type_ is None or e.type == type_)
    ]


class TestTheIssuesCase:
    """Run budget 1000 tokens; two parallel stages each expecting 600."""

    def graph(self, spender: Spender, **estimate: Any) -> StageGraph:
        options: dict[str, Any] = {"estimate": 600, **estimate}
        return (
            Pipeline("issue")
            .with_stage("a", spender.make((400, 200), preferred="gpt-4o"), **options)
            .with_stage("b", spender.make((400, 200), preferred="gpt-4o"), **options)
            .with_stage("after_a", noop, dependencies=("a",))
            .with_stage("after_b", noop, dependencies=("b",))
            .build()
        )

    def test_under_block_the_second_to_ask_is_blocked_and_its_dependents_skipped(self):
        spender = Spender()

        result, sink = run_with(
            self.graph(spender), budget=Budget(max_tokens=1000), fail_fast=False
        )

        assert len(spender.called()) == 1  # the blocked stage never ran
        first = spender.called()[0]
        second = "b" if first == "a" else "a"
        assert result[first].status is StageStatus.COMPLETED
        assert result[f"after_{first}"].status is StageStatus.COMPLETED
        assert result[second].status is StageStatus.FAILED
        assert result[f"after_{second}"].status is StageStatus.SKIPPED
        error = result[second].error
        assert isinstance(error, BudgetExceededError)
        assert isinstance(error, StageError)
        assert (error.stage, error.scope, error.limit) == (second, "run", "tokens")
        assert (error.maximum, error.spent, error.requested) == (1000, 600, 600)
        assert budget_events(sink) == [
            (
                "budget.exceeded",
                second,
                {
                    "scope": "run",
                    "limit": "tokens",
                    "maximum": 1000,
                    "spent": 600,
                    "requested": 600,
                    "policy": "block",
                },
            )
        ]
        assert result.status == "failed"
        assert result.usage.tokens == 600
        assert dict(result.usage.by_stage) == {first: result.usage.total}

    def test_under_downgrade_the_second_to_ask_runs_on_the_next_model_of_the_chain(self):
        spender = Spender()
        graph = self.graph(spender, estimate=Estimate(tokens=600, cost=0.003))

        result, sink = run_with(
            graph,
            budget=Budget(max_cost=0.005, policy="downgrade"),
            prices=PRICES,
            model_chains=[CHAIN],
        )

        assert result.ok
        assert sorted(spender.models.values()) == ["gpt-4o", "gpt-4o-mini"]
        second = next(name for name, model in spender.models.items() if model == "gpt-4o-mini")
        assert result[second].data == {"model": "gpt-4o-mini"}
        # (after_a and after_b ask when the budget is used up: they step the level too)
        exceeded, downgraded = [e for e in budget_events(sink) if e[1] in ("a", "b")]
        assert exceeded == (
            "budget.exceeded",
            second,
            {
                "scope": "run",
                "limit": "cost",
                "maximum": 0.005,
                "spent": pytest.approx(0.003),
                "requested": pytest.approx(0.003),
                "policy": "downgrade",
            },
        )
        assert downgraded == (
            "budget.downgraded",
            second,
            {"model": "gpt-4o", "to": "gpt-4o-mini", "steps": 1},
        )
        # 400 in and 200 out: 0.003 on gpt-4o, 0.00018 on gpt-4o-mini
        assert result.usage.cost == pytest.approx(0.00318)
        assert result.usage.by_model["gpt-4o"].cost == pytest.approx(0.003)
        assert result.usage.by_model["gpt-4o-mini"].cost == pytest.approx(0.00018)
        assert result.usage.tokens == 1200

    def test_the_same_graph_without_a_budget_runs_both_on_the_preferred_model(self):
        spender = Spender()

        result, sink = run_with(self.graph(spender), prices=PRICES, model_chains=[CHAIN])

        assert result.ok
        assert spender.models == {"a": "gpt-4o", "b": "gpt-4o"}
        assert budget_events(sink) == []


class TestDowngrades:
    def sequence(self, spender: Spender, n: int) -> StageGraph:
        p = Pipeline("chain")
        before: tuple[str, ...] = ()
        for i in range(n):
            stage = spender.make((300, 100), preferred="gpt-4o")
            p = p.with_stage(f"s{i}", stage, dependencies=before, estimate=400)
            before = (f"s{i}",)
        return p.build()

    def test_each_stage_not_covered_steps_one_further_down_until_the_chain_ends(self):
        spender = Spender()
        engine = {
            "budget": Budget(max_tokens=1000, policy=CostPolicy.DOWNGRADE),
            "prices": PRICES,
            "model_chains": [CHAIN],
        }

        result, sink = run_with(self.sequence(spender, 5), **engine)

        # 0 + 400 and 400 + 400 fit; 800 + 400 does not: mini, then local, then nothing.
        assert spender.models == {
            "s0": "gpt-4o",
            "s1": "gpt-4o",
            "s2": "gpt-4o-mini",
            "s3": "local",
        }
        assert [result[f"s{i}"].status for i in range(4)] == [StageStatus.COMPLETED] * 4
        error = result["s4"].error
        assert isinstance(error, BudgetExceededError)
        assert error.scope == "run"
        assert "no model 3 step(s) below 'gpt-4o'" in str(error)
        downgrades = budget_events(sink, "budget.downgraded")
        assert [(stage, data["to"], data["steps"]) for _, stage, data in downgrades] == [
            ("s2", "gpt-4o-mini", 1),
            ("s3", "local", 2),
        ]
        last = budget_events(sink)[-1]
        assert last[:2] == ("budget.exceeded", "s4")
        assert last[2]["model"] == "gpt-4o"
        assert last[2]["policy"] == "downgrade"
        assert "s4" not in spender.after_report  # blocked at ctx.model, before any report
        assert result.usage.tokens == 4 * 400

    def test_a_model_in_no_chain_is_blocked_once_a_downgrade_is_due(self):
        seen: list[str] = []

        async def other(ctx: StageContext) -> None:
            seen.append(ctx.model("claude"))  # not in any chain: fine while no step is due
            await asyncio.sleep(1)
            ctx.usage.report(input_tokens=100)

        async def late(ctx: StageContext) -> None:
            ctx.model("claude")

        graph = (
            Pipeline()
            .with_stage("first", other, estimate=100)
            .with_stage("late", late, dependencies=("first",), estimate=100)
            .build()
        )

        result, _ = run_with(
            graph, budget=Budget(max_tokens=150, policy="downgrade"), model_chains=[CHAIN]
        )

        assert seen == ["claude"]
        error = result["late"].error
        assert isinstance(error, BudgetExceededError)
        assert "'claude' is in no model chain" in str(error)

    def test_a_stage_budget_downgrades_only_that_stage(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage(
                "tight",
                spender.make((10, 0), preferred="gpt-4o"),
                budget=Budget(max_tokens=100, policy="downgrade"),
                estimate=200,
            )
            .with_stage("free", spender.make((10, 0), preferred="gpt-4o"), estimate=200)
            .build()
        )

        result, sink = run_with(graph, model_chains=[CHAIN])

        assert result.ok
        assert spender.models == {"tight": "gpt-4o-mini", "free": "gpt-4o"}
        exceeded = budget_events(sink, "budget.exceeded")
        assert [(stage, data["scope"]) for _, stage, data in exceeded] == [("tight", "stage")]

    def test_the_runs_level_and_the_stages_depth_add_up(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("first", spender.make((500, 0)), estimate=500)
            .with_stage(
                "both",
                spender.make((1, 0), preferred="gpt-4o"),
                dependencies=("first",),
                budget=Budget(max_tokens=100, policy="downgrade"),
                estimate=600,
            )
            .build()
        )

        result, sink = run_with(
            graph, budget=Budget(max_tokens=1000, policy="downgrade"), model_chains=[CHAIN]
        )

        # 600 > its own 100: one step; 500 + 600 > the run's 1000: one more
        assert result.ok
        assert spender.models == {"both": "local"}
        exceeded = budget_events(sink, "budget.exceeded")
        assert [(stage, data["scope"]) for _, stage, data in exceeded] == [
            ("both", "stage"),
            ("both", "run"),
        ]
        assert budget_events(sink, "budget.downgraded")[0][2]["steps"] == 2

    def test_without_a_due_downgrade_a_model_is_itself_even_with_no_chains(self):
        spender = Spender()
        graph = Pipeline().with_stage("s", spender.make((1, 1), preferred="anything")).build()

        result, sink = run_with(graph, budget=Budget(max_tokens=10, policy="downgrade"))

        assert result.ok
        assert spender.models == {"s": "anything"}
        assert budget_events(sink) == []


class TestWarnings:
    def test_the_warning_is_given_once_per_run_however_many_reports_pass_it(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("a", spender.make(*[(50, 50)] * 10))
            .with_stage("b", spender.make(*[(50, 50)] * 10, seconds=1.5))
            .with_stage("c", spender.make(*[(50, 50)] * 5), dependencies=("a", "b"))
            .build()
        )
        sink = RecordingSink()
        engine = Engine(sink=sink, budget=Budget(max_tokens=100_000, warn_at=0.005))

        async def twice() -> list[RunResult]:
            return [await engine.run(graph), await engine.run(graph)]

        results = run_virtual(twice())

        assert all(r.ok for r in results)
        warnings = sink.of_type("budget.warning")
        assert [w.run_id for w in warnings] == [r.run_id for r in results]  # once per run
        assert [(w.stage, dict(w.data)) for w in warnings] == [
            (
                "a",
                {
                    "scope": "run",
                    "limit": "tokens",
                    "maximum": 100_000,
                    "spent": 500,
                    "warn_at": 0.005,
                },
            )
        ] * 2
        assert sink.of_type("budget.exceeded") == []

    def test_a_stage_budget_warns_for_itself_and_the_run_for_the_run(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage(
                "own", spender.make(*[(30, 0)] * 3), budget=Budget(max_tokens=100, warn_at=0.5)
            )
            .with_stage("other", spender.make(*[(30, 0)] * 4), dependencies=("own",))
            .build()
        )

        result, sink = run_with(graph, budget=Budget(max_tokens=1000, warn_at=0.2))

        assert result.ok
        warnings = [(s, d["scope"], d["spent"]) for _, s, d in budget_events(sink)]
        assert warnings == [("own", "stage", 60), ("other", "run", 210)]

    def test_a_cost_warning_counts_explicit_costs(self):
        async def stage(ctx: StageContext) -> None:
            for _ in range(4):
                ctx.usage.report(cost=0.25)

        result, sink = run_with(
            Pipeline().with_stage("s", stage).build(),
            budget=Budget(max_cost=2.0, warn_at=0.4),
        )

        assert result.ok
        assert budget_events(sink) == [
            (
                "budget.warning",
                "s",
                {"scope": "run", "limit": "cost", "maximum": 2.0, "spent": 1.0, "warn_at": 0.4},
            )
        ]

    def test_no_warning_below_the_threshold(self):
        spender = Spender()

        result, sink = run_with(
            Pipeline().with_stage("s", spender.make((10, 10))).build(),
            budget=Budget(max_tokens=100, warn_at=0.5),
        )

        assert result.ok
        assert budget_events(sink) == []


class TestStageBudgets:
    def test_a_stage_is_blocked_by_its_own_budget_while_the_run_budget_has_room(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("small", spender.make((10, 10)), budget=Budget(max_tokens=40), estimate=50)
            .with_stage("after", noop, dependencies=("small",))
            .with_stage("other", spender.make((10, 10)), estimate=50)
            .build()
        )

        result, sink = run_with(graph, budget=Budget(max_tokens=1000), fail_fast=False)

        assert spender.called() == ["other"]
        error = result["small"].error
        assert isinstance(error, BudgetExceededError)
        assert (error.scope, error.maximum, error.spent, error.requested) == ("stage", 40, 0, 50)
        assert "its own tokens budget of 40" in str(error)
        assert result["after"].status is StageStatus.SKIPPED
        assert result["other"].ok
        assert budget_events(sink) == [
            (
                "budget.exceeded",
                "small",
                {
                    "scope": "stage",
                    "limit": "tokens",
                    "maximum": 40,
                    "spent": 0,
                    "requested": 50,
                    "policy": "block",
                },
            )
        ]

    def test_a_stage_budget_counts_only_that_stages_reports(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("big", spender.make((900, 0)))
            .with_stage(
                "own",
                spender.make((250, 0)),
                dependencies=("big",),
                budget=Budget(max_tokens=300),
                estimate=300,
            )
            .build()
        )

        result, _ = run_with(graph, budget=Budget(max_tokens=10_000))

        assert result.ok
        assert result.usage.by_stage["own"].tokens == 250

    def test_a_stage_budget_applies_without_a_run_budget(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage(
                "s",
                spender.make((60, 0), fail_first=True),
                budget=Budget(max_tokens=100),
                estimate=50,
                retry=RetryPolicy(attempts=2, base=0),
            )
            .build()
        )

        result, _ = run_with(graph)

        # attempt 1 reported 60 and failed: 60 + 50 > 100 blocks attempt 2
        assert spender.calls == [("s", 1)]
        assert isinstance(result["s"].error, BudgetExceededError)
        assert result["s"].error.scope == "stage"
        assert result["s"].attempts == 2


class TestPolicies:
    def graph(self, spender: Spender) -> StageGraph:
        return (
            Pipeline()
            .with_stage("a", spender.make((600, 0), (600, 0)), estimate=5000)
            .with_stage("b", spender.make((600, 0)), estimate=5000, dependencies=("a",))
            .build()
        )

    def test_notify_tells_at_each_admission_and_once_per_run_at_report_and_runs(self):
        spender = Spender()

        result, sink = run_with(
            self.graph(spender), budget=Budget(max_tokens=1000, policy="notify")
        )

        assert result.ok
        assert spender.called() == ["a", "b"]
        events = budget_events(sink)
        assert [(t, s, "requested" in d) for t, s, d in events] == [
            ("budget.exceeded", "a", True),  # admission: 0 + 5000 > 1000
            ("budget.exceeded", "a", False),  # report: 1200 > 1000, told once
            ("budget.exceeded", "b", True),  # admission of b
        ]
        assert events[1][2] == {
            "scope": "run",
            "limit": "tokens",
            "maximum": 1000,
            "spent": 1200,
            "policy": "notify",
        }
        assert result.usage.tokens == 1800

    def test_continue_runs_silently(self):
        spender = Spender()

        result, sink = run_with(
            self.graph(spender), budget=Budget(max_tokens=1000, policy="continue")
        )

        assert result.ok
        assert spender.called() == ["a", "b"]
        assert budget_events(sink) == []
        assert result.usage.tokens == 1800

    def test_continue_still_warns(self):
        spender = Spender()

        result, sink = run_with(
            self.graph(spender), budget=Budget(max_tokens=1000, policy="continue", warn_at=0.5)
        )

        assert result.ok
        assert [(t, s) for t, s, _ in budget_events(sink)] == [("budget.warning", "a")]

    def test_a_report_over_a_block_budget_fails_that_stage_and_is_counted(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("a", spender.make((600, 0), (500, 100), model="m"))
            .with_stage("b", noop, dependencies=("a",))
            .build()
        )

        result, sink = run_with(graph, budget=Budget(max_tokens=1000))

        assert spender.after_report == []  # the second report raised
        error = result["a"].error
        assert isinstance(error, BudgetExceededError)
        assert (error.scope, error.limit, error.maximum) == ("run", "tokens", 1000)
        assert (error.spent, error.requested) == (600, 600)
        assert "it was spent and is counted" in str(error)
        assert result["b"].status is StageStatus.SKIPPED
        assert result.usage.tokens == 1200
        assert result.usage.by_stage["a"].tokens == 1200
        assert result.usage.by_model["m"].input_tokens == 1100
        assert budget_events(sink) == [
            (
                "budget.exceeded",
                "a",
                {
                    "scope": "run",
                    "limit": "tokens",
                    "maximum": 1000,
                    "spent": 1200,
                    "policy": "block",
                },
            )
        ]

    def test_a_report_that_exactly_reaches_a_block_budget_is_fine(self):
        spender = Spender()

        result, _ = run_with(
            Pipeline().with_stage("a", spender.make((600, 400))).build(),
            budget=Budget(max_tokens=1000),
        )

        assert result.ok

    def test_with_no_estimate_a_stage_needs_something_left(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("a", spender.make((999, 0)))
            .with_stage("b", spender.make((1, 0)), dependencies=("a",))
            .with_stage("c", spender.make((0, 0)), dependencies=("b",))
            .build()
        )

        result, _ = run_with(graph, budget=Budget(max_tokens=1000))

        assert spender.called() == ["a", "b"]  # 1 left for b; nothing left for c
        error = result["c"].error
        assert isinstance(error, BudgetExceededError)
        assert (error.spent, error.requested) == (1000, 0)
        assert result.usage.tokens == 1000

    def test_a_cost_budget_with_no_cost_estimate_needs_some_cost_left(self):
        async def pay(ctx: StageContext) -> None:
            ctx.usage.report(cost=2.0)

        graph = (
            Pipeline()
            .with_stage("a", pay)
            .with_stage("b", pay, dependencies=("a",))
            .with_stage("c", pay, dependencies=("b",))
            .build()
        )

        result, _ = run_with(graph, budget=Budget(max_cost=4.0))

        assert [result[n].status for n in "abc"] == [
            StageStatus.COMPLETED,
            StageStatus.COMPLETED,
            StageStatus.FAILED,
        ]
        assert result["c"].error.limit == "cost"
        assert result.usage.cost == 4.0


class TestReservations:
    def test_running_stages_reserve_their_estimates(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("a", spender.make((10, 0), seconds=5), estimate=600)
            .with_stage("b", spender.make((10, 0), seconds=5), estimate=500)
            .build()
        )

        result, _ = run_with(graph, budget=Budget(max_tokens=1000), fail_fast=False)

        # nothing reported yet when b asks: a's reservation alone leaves too little
        assert spender.called() == ["a"]
        assert (result["b"].error.spent, result["b"].error.requested) == (600, 500)

    def test_a_reservation_is_released_when_the_stage_ends_and_its_reports_count_instead(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("a", spender.make((100, 0)), estimate=600)
            .with_stage("b", spender.make((100, 0)), estimate=900, dependencies=("a",))
            .with_stage("c", spender.make((100, 0)), estimate=801, dependencies=("b",))
            .build()
        )

        result, _ = run_with(graph, budget=Budget(max_tokens=1000), fail_fast=False)

        assert spender.called() == ["a", "b"]  # 100 + 900 fits; 200 + 801 does not
        assert (result["c"].error.spent, result["c"].error.requested) == (200, 801)

    def test_each_attempt_is_admitted_again(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage(
                "s",
                spender.make((500, 0), fail_first=True),
                estimate=600,
                retry=RetryPolicy(attempts=2, base=0),
            )
            .build()
        )

        result, sink = run_with(graph, budget=Budget(max_tokens=1000))

        assert spender.calls == [("s", 1)]  # attempt 2: 500 spent + 600 > 1000
        assert result["s"].attempts == 2
        assert isinstance(result["s"].error, BudgetExceededError)
        (exceeded,) = sink.of_type("budget.exceeded")
        assert exceeded.attempt == 2
        assert (exceeded.data["spent"], exceeded.data["requested"]) == (500, 600)
        assert result.usage.tokens == 500

    def test_a_blocked_stage_is_not_retried(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage(
                "asks", spender.make((1, 0)), estimate=2000, retry=RetryPolicy(attempts=3, base=0)
            )
            .with_stage("spends", spender.make((2000, 0)), retry=RetryPolicy(attempts=3, base=0))
            .build()
        )

        result, sink = run_with(graph, budget=Budget(max_tokens=1000), fail_fast=False)

        assert spender.calls == [("spends", 1)]  # its report went over: not called again
        assert (result["asks"].attempts, result["spends"].attempts) == (1, 1)
        assert isinstance(result["asks"].error, BudgetExceededError)
        assert isinstance(result["spends"].error, BudgetExceededError)
        assert len(sink.of_type("budget.exceeded")) == 2
        assert sink.of_type("stage.retrying") == []

    def test_a_failed_attempts_reservation_is_released_before_the_next(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage(
                "s",
                spender.make(fail_first=True),
                estimate=600,
                retry=RetryPolicy(attempts=2, base=0),
            )
            .build()
        )

        result, sink = run_with(graph, budget=Budget(max_tokens=1000))

        assert result.ok
        assert spender.calls == [("s", 1), ("s", 2)]
        assert budget_events(sink) == []

    def test_a_cancelled_stage_releases_its_reservation(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("slow", spender.make((10, 0), seconds=10), estimate=600, timeout=1)
            .with_stage("next", spender.make((10, 0)), estimate=900, dependencies=("gate",))
            .with_stage("gate", spender.make(seconds=2))
            .build()
        )

        result, _ = run_with(graph, budget=Budget(max_tokens=1000), fail_fast=False)

        assert result["slow"].status is StageStatus.FAILED  # timed out at 1
        assert result["next"].ok  # asked at 2: slow's 600 no longer reserved

    def test_max_parallel_lets_stages_ask_one_after_another(self):
        def graph(spender: Spender) -> StageGraph:
            p = Pipeline()
            for name in "abc":
                p = p.with_stage(name, spender.make((300, 0)), estimate=600)
            return p.build()

        parallel, serial = Spender(), Spender()
        budget = Budget(max_tokens=1000)

        all_at_once, _ = run_with(graph(parallel), budget=budget, fail_fast=False)
        one_by_one, _ = run_with(graph(serial), budget=budget, fail_fast=False, max_parallel=1)

        # at once: 600 reserved leaves no room for another 600
        assert len(parallel.called()) == 1
        assert all_at_once.usage.tokens == 300
        # one by one: 0 + 600 and 300 + 600 fit, 600 + 600 does not
        assert serial.called() == ["a", "b"]
        assert isinstance(one_by_one["c"].error, BudgetExceededError)
        assert one_by_one.usage.tokens == 600


class TestSyncStages:
    def test_a_sync_stage_reports_from_its_thread(self):
        threads: list[int] = []

        def sync(ctx: StageContext) -> dict[str, str]:
            threads.append(threading.get_ident())
            for _ in range(3):
                ctx.usage.report(model="gpt-4o", input_tokens=100, output_tokens=100)
            return {"model": ctx.model("gpt-4o")}

        graph = Pipeline().with_stage("sync", sync, estimate=100).build()

        result, sink = run_with(graph, budget=Budget(max_tokens=1000, warn_at=0.5), prices=PRICES)

        assert len(threads) == 1
        assert threads[0] != threading.get_ident()
        assert result.ok
        assert result["sync"].data == {"model": "gpt-4o"}
        assert result.usage.tokens == 600
        assert result.usage.cost == pytest.approx(3 * (100 * 2.5 + 100 * 10) / 1e6)
        assert [(e.type, e.stage, e.data["spent"]) for e in sink.of_type("budget.warning")] == [
            ("budget.warning", "sync", 600)
        ]

    def test_a_sync_stage_over_a_block_budget_fails(self):
        def sync(ctx: StageContext) -> None:
            ctx.usage.report(input_tokens=2000)

        result, sink = run_with(
            Pipeline().with_stage("sync", sync).build(), budget=Budget(max_tokens=1000)
        )

        assert isinstance(result["sync"].error, BudgetExceededError)
        assert result.usage.tokens == 2000
        assert len(sink.of_type("budget.exceeded")) == 1


class TestWrapping:
    def test_without_any_budget_no_stage_is_wrapped(self):
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop).build()

        for engine in (Engine(), Engine(prices=PRICES, model_chains=[CHAIN])):
            calls = engine.calls(graph)
            assert all(c is spec.call for c, spec in zip(calls, graph.stages, strict=True))

    def test_a_stage_budget_wraps_that_stage_only(self):
        graph = (
            Pipeline()
            .with_stage("plain", noop, estimate=10)
            .with_stage("own", noop, budget=Budget(max_tokens=5))
            .build()
        )

        calls = Engine().calls(graph)

        assert calls[0] is graph.stages[0].call
        assert calls[1] is not graph.stages[1].call

    def test_a_run_budget_wraps_every_stage(self):
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop).build()

        calls = Engine(budget=Budget(max_tokens=5)).calls(graph)

        assert all(c is not spec.call for c, spec in zip(calls, graph.stages, strict=True))

    def test_a_budget_in_two_places_is_refused(self):
        with pytest.raises(
            ConfigurationError, match="conflicts with the BudgetInterceptor"
        ) as info:
            Engine(
                budget=Budget(max_tokens=1),
                interceptors=[BudgetInterceptor(Budget(max_tokens=2))],
            )
        assert info.value.field == "budget"

    def test_a_budget_interceptor_given_alone_holds_the_run_budget(self):
        spender = Spender()
        graph = (
            Pipeline()
            .with_stage("a", spender.make((10, 0)), estimate=600)
            .with_stage("b", spender.make((10, 0)), estimate=600)
            .build()
        )
        interceptor = BudgetInterceptor(Budget(max_tokens=1000))

        result, _ = run_with(graph, interceptors=[interceptor], fail_fast=False)

        assert len(spender.called()) == 1
        assert sum(isinstance(r.error, BudgetExceededError) for r in result) == 1

    def test_the_interceptor_sits_inside_retry_and_outside_timeout(self):
        interceptor = BudgetInterceptor()

        assert interceptor.priority == Priority.BUDGET == 700
        assert Priority.RETRY < interceptor.priority < Priority.TIMEOUT
        assert interceptor.name == "budget"
        assert "BudgetInterceptor" in repr(interceptor)

    @pytest.mark.parametrize("bad", ["x", 1000, {"max_tokens": 5}])
    def test_a_budget_that_is_no_budget_is_refused(self, bad):
        with pytest.raises(ConfigurationError, match="budget must be a Budget") as info:
            BudgetInterceptor(bad)
        assert info.value.field == "budget"
        with pytest.raises(ConfigurationError, match="budget"):
            Engine(budget=bad)
