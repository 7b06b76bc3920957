"""The patterns: fan-out/fan-in, conditional and with_retry, as a user composes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stageflow import (
    Engine,
    Pipeline,
    RetryPolicy,
    RunStatus,
    StageGraph,
    StageKind,
    StageStatus,
)
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import ConfigurationError, GraphError
from stageflow.patterns import conditional, fan_out_fan_in, with_retry
from stageflow.testing import run_virtual


async def news(ctx: Any) -> dict[str, int]:
    return {"n": 2}


async def papers(ctx: Any) -> dict[str, int]:
    return {"n": 3}


async def total(ctx: Any) -> dict[str, int]:
    return {"n": sum(ctx.inputs.get_from(b, "n") for b in ctx.inputs)}


async def split(ctx: Any) -> dict[str, list[int]]:
    return {"items": [1, 2, 3], "other": [10]}


async def double(ctx: Any) -> dict[str, int]:
    if ctx.item == 2 and ctx.data.get("break"):
        raise ValueError("two is broken")
    return {"v": ctx.item * 2}


async def collect(ctx: Any) -> dict[str, Any]:
    results = ctx.inputs.get_from("each", "results")
    return {"values": [r["v"] if r else None for r in results]}


def statuses(result: Any) -> dict[str, str]:
    return {name: str(stage.status) for name, stage in result.stages.items()}


# ----------------------------------------------------------------------------- fan_out_fan_in


class TestFanOutFanIn:
    def test_static_branches_run_together_and_join_reads_them_all(self) -> None:
        graph = fan_out_fan_in("gather", branches={"news": news, "papers": papers},
                               join=total).build()  # fmt: skip
        assert graph["join"].dependencies == ("news", "papers")
        assert graph["news"].dependencies == graph["papers"].dependencies == ()
        assert run_virtual(Engine().run(graph))["join"].data == {"n": 5}

    def test_a_branch_may_be_a_pipeline_run_as_a_subgraph(self) -> None:
        inner = (
            Pipeline("inner")
            .with_stage("one", news)
            .with_stage("two", papers, dependencies=("one",))
        )
        graph = fan_out_fan_in("g", branches={"deep": inner, "papers": papers},
                               join=total).build()  # fmt: skip
        result = run_virtual(Engine().run(graph))
        assert result["deep.two"].ok
        assert result["join"].data == {"n": 6}  # the subgraph's output is its last stage's

    def test_items_fan_out_one_stage_per_item(self) -> None:
        graph = fan_out_fan_in("map", items=split, each=double, join=collect,
                               max_parallel=2).build()  # fmt: skip
        assert graph.names == ("split", "each", "join")
        assert graph["each"].dynamic.max_parallel == 2  # type: ignore[union-attr]
        result = run_virtual(Engine().run(graph))
        assert [item.stage for item in result["each"].items] == ["each[0]", "each[1]", "each[2]"]
        assert result["join"].data == {"values": [2, 4, 6]}

    def test_another_field_key_and_item_errors(self) -> None:
        graph = fan_out_fan_in("map", items=split, each=double, join=collect, field="other",
                               key=lambda item: f"k{item}").build()  # fmt: skip
        result = run_virtual(Engine().run(graph))
        assert [item.stage for item in result["each"].items] == ["each[k10]"]
        assert result["join"].data == {"values": [20]}

        collected = fan_out_fan_in("map", items=split, each=double, join=collect,
                                   on_item_error="collect").build()  # fmt: skip
        result = run_virtual(Engine().run(collected, data={"break": True}))
        assert result["join"].data == {"values": [2, None, 6]}

    def test_composed_after_other_stages(self) -> None:
        first = Pipeline("all").with_stage("seed", news)
        graph = first.compose(
            fan_out_fan_in("x", branches={"papers": papers}, join=total, dependencies=("seed",))
        ).build()
        assert graph["papers"].dependencies == ("seed",)
        assert run_virtual(Engine().run(graph))["join"].data == {"n": 3}

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({}, "items"),
            ({"items": split}, "each"),
            ({"each": double}, "items"),
            ({"branches": {"a": news}, "items": split, "each": double}, "branches"),
            ({"branches": {}}, "branches"),
            ({"branches": ["news"]}, "branches"),
        ],
        ids=["nothing", "no-each", "no-items", "both", "empty", "not-a-mapping"],
    )
    def test_a_fan_out_given_wrong_is_refused(self, options: dict[str, Any], field: str) -> None:
        with pytest.raises(ConfigurationError, match="fan_out_fan_in 'f'") as caught:
            fan_out_fan_in("f", join=total, **options)
        assert caught.value.field == field

    def test_a_branch_named_join_is_refused_by_build(self) -> None:
        with pytest.raises(GraphError, match="join"):
            fan_out_fan_in("f", branches={"join": news}, join=total).build()


# ----------------------------------------------------------------------------- conditional


async def publish(ctx: Any) -> dict[str, str]:
    return {"published": "yes"}


async def review(ctx: Any) -> dict[str, str]:
    return {"reviewed": "yes"}


class TestConditional:
    def test_then_when_it_holds_otherwise_when_not(self) -> None:
        graph = conditional("gate", lambda ctx: ctx.data["score"] >= 0.8, then=publish,
                            otherwise=review).build()  # fmt: skip
        high = run_virtual(Engine().run(graph, data={"score": 0.9}))
        low = run_virtual(Engine().run(graph, data={"score": 0.1}))
        assert statuses(high) == {"check": "completed", "then": "completed",
                                  "otherwise": "skipped"}  # fmt: skip
        assert statuses(low) == {"check": "completed", "then": "skipped",
                                 "otherwise": "completed"}  # fmt: skip
        assert high["check"].data == {"value": True}
        assert graph["check"].kind is StageKind.GUARD
        assert low["then"].reason == "condition false"

    def test_without_otherwise_only_then_is_a_branch(self) -> None:
        graph = conditional("gate", lambda ctx: False, then=publish).build()
        assert graph.names == ("check", "then")
        assert statuses(run_virtual(Engine().run(graph))) == {"check": "completed",
                                                              "then": "skipped"}  # fmt: skip

    def test_an_async_condition_reads_the_inputs_it_waits_for(self) -> None:
        async def big(ctx: Any) -> bool:
            return bool(ctx.inputs.get_from("papers", "n") > 2)

        graph = (
            Pipeline("p")
            .with_stage("papers", papers)
            .compose(conditional("c", big, then=publish, dependencies=("papers",)))
            .build()
        )
        assert run_virtual(Engine().run(graph))["then"].data == {"published": "yes"}

    def test_a_branch_may_be_a_pipeline(self) -> None:
        flow = (
            Pipeline("rv")
            .with_stage("read", review)
            .with_stage("sign", publish, dependencies=("read",))
        )
        graph = conditional("c", lambda ctx: True, then=flow).build()
        result = run_virtual(Engine().run(graph))
        assert result["then.sign"].ok

    def test_a_condition_that_gives_no_bool_fails_the_check_naming_it(self) -> None:
        graph = conditional("c", lambda ctx: "yes", then=publish).build()
        result = run_virtual(Engine().run(graph))
        assert result.status is RunStatus.FAILED
        assert result["check"].status is StageStatus.FAILED
        assert "its condition gave 'yes', not a bool" in str(result["check"].error)
        assert result["then"].status is StageStatus.SKIPPED

    def test_a_condition_that_is_not_callable_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="condition must be a callable") as e:
            conditional("c", True, then=publish)  # type: ignore[arg-type]
        assert (e.value.field, e.value.value) == ("condition", True)

    def test_a_resumed_run_does_not_ask_again(self, tmp_path: Path) -> None:
        """The decision is a stored stage output: a resume restores it."""
        asked: list[str] = []
        broken = {"then": True}

        def condition(ctx: Any) -> bool:
            asked.append(ctx.stage)
            return True

        async def flaky(ctx: Any) -> dict[str, str]:
            if broken["then"]:
                raise ConnectionError("down")
            return {"done": "yes"}

        graph = conditional("c", condition, then=flaky).build()
        store = SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path}/runs.db")
        engine = Engine(store=store)
        first = run_virtual(engine.run(graph, run_id="r1"))
        assert first.status is RunStatus.FAILED
        broken["then"] = False
        again = run_virtual(engine.resume("r1", graph))
        assert again.status is RunStatus.COMPLETED
        assert asked == ["check"]  # once, across both drives


# ----------------------------------------------------------------------------- with_retry


class TestWithRetry:
    def test_every_stage_without_its_own_gets_it(self) -> None:
        own = RetryPolicy(attempts=9)
        pipeline = (
            Pipeline("p")
            .with_stage("a", news)
            .with_stage("b", papers, retry=own)
            .with_map("m", double, over="s.items", dependencies=("s",))
            .with_stage("s", split)
            .with_input("ok", schema=bool)
        )
        retried = with_retry(pipeline, 4)
        assert isinstance(retried, Pipeline)
        by_name = {spec.name: spec.retry for spec in retried.stages}
        assert by_name["a"] == RetryPolicy(attempts=4)
        assert by_name["b"] is own  # said closer to the stage: it wins
        assert by_name["m"] == by_name["s"] == RetryPolicy(attempts=4)
        assert by_name["ok"] is None  # an input calls no code
        assert pipeline.stages[0].retry is None  # the original unchanged

    def test_a_graph_gives_a_graph_and_the_retries_happen(self) -> None:
        calls: list[int] = []

        async def flaky(ctx: Any) -> dict[str, int]:
            calls.append(ctx.attempts)
            if len(calls) < 3:
                raise ConnectionError("not yet")
            return {"ok": 1}

        graph = Pipeline("p").with_stage("f", flaky).build()
        retried = with_retry(graph, RetryPolicy(attempts=3, base=5.0))
        result = run_virtual(Engine().run(retried))  # the backoff on virtual time
        assert result["f"].ok
        assert result["f"].attempts == 3
        assert isinstance(retried, StageGraph)
        assert graph["f"].retry is None  # the original unchanged

    def test_only_the_stages_named(self) -> None:
        pipeline = Pipeline("p").with_stage("a", news).with_stage("b", papers)
        retried = with_retry(pipeline, 2, stages=["b"])
        assert [spec.retry for spec in retried.stages] == [None, RetryPolicy(attempts=2)]

    @pytest.mark.parametrize(
        ("call", "field", "said"),
        [
            (lambda p: with_retry(p, stages=["zz"]), "stages", "no stage 'zz' in pipeline 'p'"),
            (lambda p: with_retry(p, stages="a"), "stages", "a list of stage names"),
            (lambda p: with_retry(p, "3"), "retry", "a RetryPolicy or a number"),
            (lambda p: with_retry(p, True), "retry", "a RetryPolicy or a number"),
            (lambda p: with_retry("p"), "target", "a Pipeline or a StageGraph"),
            (lambda p: with_retry(p, 0), "attempts", "attempts"),
        ],
        ids=["unknown-stage", "str-stages", "str-retry", "bool-retry", "target", "zero"],
    )
    def test_bad_input_is_refused_naming_the_field(self, call: Any, field: str,
                                                   said: str) -> None:  # fmt: skip
        pipeline = Pipeline("p").with_stage("a", news)
        with pytest.raises(ConfigurationError, match=said) as caught:
            call(pipeline)
        assert caught.value.field == field
