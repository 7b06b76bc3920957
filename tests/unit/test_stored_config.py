"""A durable run's governing configuration: stored with the run, restored and checked by resume."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from stageflow import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Engine,
    ModelChain,
    Pipeline,
    PriceTable,
    RunResult,
    RunStatus,
    StageContext,
    StageGraph,
    StageStatus,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import run_virtual

PRICES = {"big": {"input": 10.0, "output": 10.0}, "small": {"input": 1.0, "output": 1.0}}
BUDGET = Budget(max_tokens=1000, warn_at=0.5, policy="block")


class Flaky:
    """a -> b -> c; each reports ``tokens`` on its model; b fails its first call."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.models: dict[str, str] = {}

    def graph(self, *tokens: int, **options: dict[str, Any]) -> StageGraph:
        p = Pipeline("flaky")
        before: tuple[str, ...] = ()
        for name, n in zip("abc", tokens, strict=True):
            p = p.with_stage(
                name, self.stage(name, n), dependencies=before, **options.get(name, {})
            )
            before = (name,)
        return p.build()

    def stage(self, name: str, tokens: int) -> Any:
        async def stage(ctx: StageContext) -> dict[str, str]:
            self.calls[name] = self.calls.get(name, 0) + 1
            model = self.models[name] = ctx.model("big")
            await asyncio.sleep(1)
            ctx.usage.report(model=model, input_tokens=tokens)
            if name == "b" and self.calls[name] == 1:
                raise ConnectionError("down")
            return {"name": name}

        return stage


def first_then(store: MemoryStore, graph: StageGraph, first: Engine, then: Engine, **resume: Any):
    async def main() -> tuple[RunResult, RunResult]:
        ran = await first.run(graph, run_id="r1")
        return ran, await then.resume("r1", graph, **resume)

    return run_virtual(main())


class TestTheStoredConfiguration:
    def test_the_record_keeps_every_governing_setting(self):
        store = MemoryStore()
        flaky = Flaky()
        graph = flaky.graph(1, 1, 1, b={"budget": Budget(max_cost=2.0), "estimate": 40})
        engine = Engine(
            store=store, budget=BUDGET, prices=PRICES, model_chains=[ModelChain("big", "small")],
            max_parallel=2, fail_fast=False,
        )  # fmt: skip

        async def main() -> str:
            await engine.run(graph, run_id="r1", timeout=60)
            return (await store.get_run("r1")).config

        config = json.loads(run_virtual(main()))

        assert config == {
            "version": 1,
            "budget": {"max_tokens": 1000, "max_cost": None, "warn_at": 0.5, "policy": "block"},
            "prices": {
                "models": {
                    "big": {"input": 10.0, "output": 10.0},
                    "small": {"input": 1.0, "output": 1.0},
                },
                "fallback": None,
                "currency": "USD",
            },
            "model_chains": [["big", "small"]],
            "stages": {
                "b": {
                    "budget": {
                        "max_tokens": None,
                        "max_cost": 2.0,
                        "warn_at": None,
                        "policy": "block",
                    },
                    "estimate": {"tokens": 40, "cost": 0.0},
                }
            },
            "timeout": 60,
            "max_parallel": 2,
            "fail_fast": False,
        }

    def test_a_run_without_settings_stores_the_defaults(self):
        store = MemoryStore()

        async def main() -> str:
            await Engine(store=store).run(Flaky().graph(1, 1, 1), run_id="r1")
            return (await store.get_run("r1")).config

        config = json.loads(run_virtual(main()))
        assert (config["budget"], config["prices"], config["model_chains"]) == (None, None, [])
        assert (config["timeout"], config["max_parallel"], config["fail_fast"]) == (
            None,
            None,
            True,
        )


class TestResumeRestoresIt:
    def test_an_engine_without_a_budget_resumes_with_the_stored_one_and_what_was_spent(self):
        store = MemoryStore()
        flaky = Flaky()
        graph = flaky.graph(900, 50, 40, c={"estimate": 40})

        first, second = first_then(
            store, graph, Engine(store=store, budget=Budget(max_tokens=1000)), Engine(store=store)
        )

        assert first["b"].status is StageStatus.FAILED
        assert second["b"].ok  # 900 + 50 spent
        error = second["c"].error
        assert isinstance(error, BudgetExceededError), "the stored budget must block c"
        assert (error.scope, error.spent, error.requested) == ("run", 1000, 40)
        assert flaky.calls == {"a": 1, "b": 2}
        assert second.usage.tokens == 1000

    def test_without_a_stored_budget_the_same_resume_runs_everything(self):
        # the counterpart of the test above: the budget, not something else, blocked c
        store = MemoryStore()
        flaky = Flaky()
        graph = flaky.graph(900, 50, 40, c={"estimate": 40})

        _, second = first_then(store, graph, Engine(store=store), Engine(store=store))

        assert second.ok

    def test_the_same_budget_given_again_is_no_conflict(self):
        store = MemoryStore()
        graph = Flaky().graph(900, 50, 40, c={"estimate": 40})
        engine = Engine(store=store, budget=Budget(max_tokens=1000))

        _, second = first_then(store, graph, engine, engine)

        assert isinstance(second["c"].error, BudgetExceededError)

    def test_prices_and_model_chains_are_restored(self):
        store = MemoryStore()
        flaky = Flaky()
        graph = flaky.graph(100, 100, 100, c={"estimate": 100})
        first = Engine(
            store=store, prices=PRICES, model_chains=[ModelChain("big", "small")],
            budget=Budget(max_tokens=250, policy="downgrade"),
        )  # fmt: skip

        _, second = first_then(store, graph, first, Engine(store=store))

        assert second.ok
        assert flaky.models["c"] == "small", "the stored chain and budget must downgrade c"
        assert second.usage.by_stage["c"].cost == pytest.approx(100 / 1e6)

    def test_the_stored_timeout_bounds_each_drive_unless_a_resume_gives_its_own(self):
        store = MemoryStore()

        async def slow(ctx: StageContext) -> None:
            await asyncio.sleep(15)

        graph = Pipeline("slow").with_stage("s", slow).build()

        async def main() -> tuple[RunResult, float, RunResult, float, RunResult]:
            loop = asyncio.get_running_loop()
            first = await Engine(store=store).run(graph, run_id="r1", timeout=10)
            start = loop.time()
            second = await Engine(store=store).resume("r1", graph)  # the stored 10 s
            took_second = loop.time() - start
            start = loop.time()
            third = await Engine(store=store).resume("r1", graph, timeout=20)
            return first, took_second, second, loop.time() - start, third

        first, took_second, second, took_third, third = run_virtual(main())

        assert first.status is RunStatus.CANCELLED
        assert json.loads(store._runs["r1"].record.config)["timeout"] == 10
        assert second.status is RunStatus.CANCELLED
        assert took_second == pytest.approx(10), "without one, the run's own timeout holds"
        assert third.ok, "a resume's own timeout wins"
        assert took_third == pytest.approx(15)

    def test_math_inf_is_no_limit_for_a_run_and_for_a_resume(self):
        store = MemoryStore()

        async def slow(ctx: StageContext) -> None:
            await asyncio.sleep(1000)

        graph = Pipeline("slow").with_stage("s", slow).build()

        async def main() -> tuple[RunResult, RunResult, RunResult]:
            unlimited = await Engine(store=store).run(graph, run_id="r0", timeout=math.inf)
            first = await Engine(store=store).run(graph, run_id="r1", timeout=10)
            resumed = await Engine(store=store).resume("r1", graph, timeout=math.inf)
            return unlimited, first, resumed

        unlimited, first, resumed = run_virtual(main())

        assert unlimited.ok
        assert json.loads(store._runs["r0"].record.config)["timeout"] is None
        assert first.status is RunStatus.CANCELLED
        assert resumed.ok, "math.inf lifts the run's own timeout for this drive"

    def test_the_stored_max_parallel_and_fail_fast_apply(self):
        store = MemoryStore()
        running = peak = 0
        failed = [False]

        async def work(ctx: StageContext) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(1)
            running -= 1
            if ctx.stage == "w0" and not failed[0]:
                failed[0] = True
                raise ConnectionError("down")

        p = Pipeline("wide")
        for i in range(4):
            p = p.with_stage(f"w{i}", work)
        graph = p.build()

        async def main() -> tuple[RunResult, RunResult, int]:
            nonlocal peak
            first = await Engine(store=store, max_parallel=1, fail_fast=False).run(
                graph, run_id="r1"
            )
            # complete nothing but w0's failure: forget the others' outcomes
            store._runs["r1"].stages.clear()
            failed[0] = False
            peak = 0
            second = await Engine(store=store).resume("r1", graph)
            return first, second, peak

        first, second, resumed_peak = run_virtual(main())

        assert first.status is RunStatus.FAILED
        assert resumed_peak == 1, "the stored max_parallel=1 must hold"
        assert [r.status for r in second] == ["failed", "completed", "completed", "completed"], (
            "the stored fail_fast=False must let the other branches go on"
        )

    def test_a_run_recorded_without_a_configuration_takes_the_engines(self):
        store = MemoryStore()
        graph = Flaky().graph(900, 50, 40, c={"estimate": 40})

        async def main() -> RunResult:
            await Engine(store=store).run(graph, run_id="r1")
            run = store._runs["r1"]
            run.record = type(run.record)(**{**_fields(run.record), "config": ""})
            return await Engine(store=store, budget=Budget(max_tokens=5000)).resume("r1", graph)

        assert run_virtual(main()).ok


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


class TestAChangeIsRefusedUnlessOverridden:
    def test_another_budget_is_refused_naming_both_and_takes_nothing(self):
        store = MemoryStore()
        graph = Flaky().graph(900, 50, 40, c={"estimate": 40})

        async def main() -> tuple[ConfigurationError, Any]:
            await Engine(store=store, budget=Budget(max_tokens=1000)).run(graph, run_id="r1")
            with pytest.raises(ConfigurationError) as caught:
                await Engine(store=store, budget=Budget(max_tokens=5000)).resume("r1", graph)
            return caught.value, await store.get_run("r1")

        error, record = run_virtual(main())

        message = str(error)
        assert "budget Budget(max_tokens=5000" in message
        assert "stored Budget(max_tokens=1000" in message
        assert "override" in message
        assert error.field == "override"
        assert record.status is RunStatus.FAILED, "a refused resume changes nothing"
        assert store._runs["r1"].lease is None, "a refused resume takes no lease"

    def test_an_override_lets_the_given_budget_govern(self):
        store = MemoryStore()
        graph = Flaky().graph(900, 50, 40, c={"estimate": 40})

        _, second = first_then(
            store, graph, Engine(store=store, budget=Budget(max_tokens=1000)),
            Engine(store=store, budget=Budget(max_tokens=5000)), override=True,
        )  # fmt: skip

        assert second.ok
        assert json.loads(store._runs["r1"].record.config)["budget"]["max_tokens"] == 1000, (
            "an override governs its drive; the stored configuration stays"
        )

    @pytest.mark.parametrize(
        "changed",
        [
            {"c": {"estimate": 41}},
            {"c": {"estimate": 40, "budget": Budget(max_tokens=100)}},
            {},
        ],
    )
    def test_a_stage_whose_declared_budget_or_estimate_changed_is_refused(self, changed):
        store = MemoryStore()
        flaky = Flaky()
        before = flaky.graph(900, 50, 40, c={"estimate": 40})
        after = flaky.graph(900, 50, 40, **changed)

        async def main() -> tuple[str, RunResult]:
            await Engine(store=store).run(before, run_id="r1")
            with pytest.raises(ConfigurationError) as caught:
                await Engine(store=store).resume("r1", after)
            return str(caught.value), await Engine(store=store).resume("r1", after, override=True)

        message, resumed = run_virtual(main())

        assert "stage 'c' declares" in message
        assert "instead of the stored estimate=40 tokens" in message
        assert resumed.ok

    def test_other_prices_and_chains_are_refused(self):
        store = MemoryStore()
        graph = Flaky().graph(1, 1, 1)
        other = PriceTable.of({"big": {"input": 1.0, "output": 1.0}})

        async def main() -> list[str]:
            await Engine(store=store, prices=PRICES).run(graph, run_id="r1")
            said = []
            for engine in (
                Engine(store=store, prices=other),
                Engine(store=store, prices=PRICES, model_chains=[ModelChain("big", "small")]),
            ):
                with pytest.raises(ConfigurationError) as caught:
                    await engine.resume("r1", graph)
                said.append(str(caught.value))
            return said

        prices, chains = run_virtual(main())

        assert "prices prices of ['big'] instead of the stored prices of ['big', 'small']" in prices
        assert "model_chains [big > small] instead of the stored none" in chains

    def test_a_given_timeout_max_parallel_or_fail_fast_wins_without_override(self):
        store = MemoryStore()
        graph = Flaky().graph(1, 1, 1)

        async def main() -> RunResult:
            await Engine(store=store, max_parallel=1).run(graph, run_id="r1", timeout=60)
            return await Engine(store=store, max_parallel=4, fail_fast=False).resume(
                "r1", graph, timeout=30
            )

        assert run_virtual(main()).ok

    @pytest.mark.parametrize("override", [1, "yes", None])
    def test_override_must_be_a_bool(self, override):
        store = MemoryStore()
        graph = Flaky().graph(1, 1, 1)
        with pytest.raises(ConfigurationError, match="override"):
            run_virtual(Engine(store=store).resume("r1", graph, override=override))
