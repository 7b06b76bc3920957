"""Stage runners: with_stage(runner=, resources=), Engine(runner=, runners=), and the
detached context a call sees where a runner runs it.

``PickleRunner`` is a real runner of the port: each call's context, what comes back and
what it raised cross a pickle boundary, and the call runs in a thread of its own, as a
Ray worker would run it (the stage object itself goes as it is: shipping functions is
the runner's business, cloudpickle's for Ray). The Ray runner's own tests are in
tests/ray.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from pydantic import BaseModel

from stageflow import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    DetachedContext,
    Engine,
    InvalidOptionError,
    MissingInputError,
    ModelChain,
    Pipeline,
    Placement,
    RemoteError,
    RetryPolicy,
    RunResult,
    RunStatus,
    StageContext,
    StageSpec,
    StageStatus,
    TracingInterceptor,
    attach,
    attach_error,
    detach,
    run_detached,
)
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import InvalidOutputError
from stageflow.ports import StageRunner
from stageflow.testing import RecordingSink, run_virtual

from ..ray import stages
from ..ray.stages import Pinned, Unpicklable
from ._otel import Traces


class PickleRunner:
    """Runs each call in a thread, everything crossing a pickle boundary both ways."""

    def __init__(self) -> None:
        self.bound: list[tuple[str, dict[str, Any]]] = []
        self.calls = 0

    def bind(self, spec: StageSpec, call: Any) -> Any:
        resources = dict(spec.placement.resources) if spec.placement is not None else {}
        self.bound.append((spec.name, resources))
        stage = spec.stage

        async def crossing(ctx: StageContext) -> Any:
            self.calls += 1
            detached = pickle.dumps(await detach(ctx))

            def there() -> bytes:
                try:
                    return pickle.dumps(("ok", run_detached(stage, pickle.loads(detached))))
                except Exception as error:
                    return pickle.dumps(("raised", error))

            how, value = pickle.loads(await asyncio.to_thread(there))
            if how == "raised":
                raise await attach_error(ctx, value)
            return await attach(ctx, value)

        return crossing


def test_pickle_runner_is_a_stage_runner() -> None:
    assert isinstance(PickleRunner(), StageRunner)


# ----------------------------------------------------------------------------- the option


async def fetch(ctx: Any) -> dict[str, Any]:
    return {"items": [1, 2, 3], "where": type(ctx).__name__}


async def total(ctx: Any) -> dict[str, Any]:
    return {"sum": sum(ctx.inputs.get_from("fetch", "items", type=list)),
            "where": type(ctx).__name__}  # fmt: skip


def test_runner_and_resources_are_the_stage_s_placement() -> None:
    resources = {"num_cpus": 2, "memory": 2**30}
    graph = Pipeline("p").with_stage("a", fetch, runner="ray", resources=resources).build()
    assert graph["a"].placement == Placement("ray", {"num_cpus": 2, "memory": 2**30})
    assert Pipeline("p").with_stage("b", fetch).build()["b"].placement is None


@pytest.mark.parametrize(
    ("options", "option", "said"),
    [
        ({"runner": 3}, "runner", "a runner's name"),
        ({"runner": ""}, "runner", "a runner's name"),
        ({"resources": ["num_cpus"]}, "resources", "a mapping of resource names"),
        ({"resources": {"num_cpus": -1}}, "resources", "must be a number >= 0"),
        ({"resources": {"num_gpus": True}}, "resources", "must be a number >= 0"),
        ({"runnr": "ray"}, "runnr", "did you mean 'runner'"),
    ],
    ids=["number", "empty", "list", "negative", "bool", "misspelt"],
)
def test_bad_placement_is_refused_naming_the_stage(options: dict[str, Any], option: str,
                                                   said: str) -> None:  # fmt: skip
    with pytest.raises(InvalidOptionError, match=said) as caught:
        Pipeline("p").with_stage("a", fetch, **options)
    assert caught.value.stage == "a"
    assert caught.value.option == option


@pytest.mark.parametrize("what", ["loop", "subgraph", "input"])
def test_a_stage_that_calls_no_code_takes_no_runner(what: str) -> None:
    body = Pipeline("b").with_stage("x", fetch).build()
    p = Pipeline("p")
    add = {
        "loop": lambda: p.with_loop("l", body, until=lambda out: True, max_iterations=2,
                                    runner="ray"),
        "subgraph": lambda: p.with_subgraph("l", body, runner="ray"),
        "input": lambda: p.with_input("l", schema=bool, runner="ray"),
    }[what]  # fmt: skip
    with pytest.raises(InvalidOptionError, match="runner") as caught:
        add()
    assert caught.value.option == "runner"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"runner": "ray"}, "runner"),
        ({"runners": ["ray"]}, "runners"),
        ({"runners": {"": PickleRunner()}}, "runners"),
        ({"runners": {"ray": object()}}, "runners.ray"),
    ],
    ids=["runner-str", "runners-list", "empty-name", "no-bind"],
)
def test_an_engine_refuses_what_is_no_runner(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Engine(**settings)
    assert caught.value.field == field


def test_an_unknown_runner_name_is_an_error_when_the_run_starts_naming_the_stage() -> None:
    graph = Pipeline("p").with_stage("a", fetch, runner="gpu").build()
    with pytest.raises(ConfigurationError, match="stage 'a': runner='gpu' is not one of") as e:
        run_virtual(Engine(runners={"ray": PickleRunner()}).run(graph))
    assert (e.value.field, e.value.value) == ("runner", "gpu")


def test_resources_without_any_runner_are_an_error() -> None:
    graph = Pipeline("p").with_stage("a", fetch, resources={"num_cpus": 1}).build()
    with pytest.raises(ConfigurationError, match="resources= needs a runner") as e:
        run_virtual(Engine().run(graph))
    assert e.value.field == "resources"


# ----------------------------------------------------------------------------- running


def test_a_stage_with_a_runner_runs_there_and_the_others_here() -> None:
    runner = PickleRunner()
    graph = (
        Pipeline("p")
        .with_stage("fetch", fetch, runner="far", resources={"num_cpus": 2})
        .with_stage("total", total, dependencies=("fetch",))
        .build()
    )
    result = run_virtual(Engine(runners={"far": runner}).run(graph))
    assert result["fetch"].data == {"items": [1, 2, 3], "where": "DetachedContext"}
    assert result["total"].data == {"sum": 6, "where": "StageContext"}
    assert runner.bound == [("fetch", {"num_cpus": 2})]


def test_the_engine_s_default_runner_runs_every_stage_that_calls_code() -> None:
    runner = PickleRunner()
    body = Pipeline("body").with_stage("inner", fetch).build()
    graph = (
        Pipeline("p")
        .with_stage("fetch", fetch)
        .with_stage("total", total, dependencies=("fetch",))
        .with_subgraph("sub", body, dependencies=("total",))
        .build()
    )
    result = run_virtual(Engine(runner=runner).run(graph))
    assert result["total"].data["where"] == "DetachedContext"
    assert result["sub.inner"].data["where"] == "DetachedContext"
    assert sorted(name for name, _ in runner.bound) == ["fetch", "inner", "total"]  # not sub


def _sees(ctx: Any) -> dict[str, Any]:
    return {"stage": ctx.stage, "run_id": ctx.run_id, "pipeline": ctx.pipeline,
            "attempt": ctx.attempt, "data": dict(ctx.data),
            "key": ctx.idempotency_key, "cancelled": ctx.cancelled}  # fmt: skip


def test_the_detached_context_reads_what_the_engine_s_reads() -> None:
    seen: dict[str, Any] = {}

    async def here(ctx: Any) -> dict[str, Any]:
        seen["here"] = _sees(ctx)
        return {}

    async def there(ctx: Any) -> dict[str, Any]:
        return {"seen": _sees(ctx)}

    graph = Pipeline("p").with_stage("a", here).with_stage("b", there, runner="x").build()
    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(graph, data={"n": 1},
                                                                   run_id="r1"))  # fmt: skip
    far = result["b"].data["seen"]
    near = seen["here"]
    assert far == {**near, "stage": "b", "key": "r1:b"}


def test_inputs_there_give_the_same_errors() -> None:
    async def asks(ctx: Any) -> dict[str, Any]:
        ctx.inputs.get_from("fetch", "nothing")
        return {}

    async def strays(ctx: Any) -> dict[str, Any]:
        ctx.inputs["other"]
        return {}

    graph = (
        Pipeline("p").with_stage("fetch", fetch)
        .with_stage("asks", asks, dependencies=("fetch",), runner="x")
        .with_stage("strays", strays, dependencies=("fetch",), runner="x")
        .build()
    )  # fmt: skip
    result = run_virtual(Engine(runners={"x": PickleRunner()}, fail_fast=False).run(graph))
    asked = result["asks"].error
    assert isinstance(asked, MissingInputError)
    assert (asked.stage, asked.dependency, asked.key) == ("asks", "fetch", "nothing")
    assert "has no key 'nothing' (keys: 'items', 'where')" in str(asked)
    strayed = result["strays"].error
    assert isinstance(strayed, MissingInputError)
    assert "which is not one of its dependencies ('fetch')" in str(strayed)


async def split(ctx: Any) -> dict[str, Any]:
    return {"items": ["a", "b", "c"]}


async def upper(ctx: Any) -> dict[str, Any]:
    return {"v": ctx.item.upper(), "i": ctx.item_index, "k": ctx.item_key}


def test_a_map_s_items_run_there_each_with_its_item() -> None:
    runner = PickleRunner()
    graph = (
        Pipeline("p").with_stage("split", split)
        .with_map("up", upper, over="split.items", dependencies=("split",), runner="x",
                  key=lambda item: f"k-{item}")
        .build()
    )  # fmt: skip
    result = run_virtual(Engine(runners={"x": runner}).run(graph))
    assert result["up"].data["results"] == [
        {"v": "A", "i": 0, "k": "k-a"},
        {"v": "B", "i": 1, "k": "k-b"},
        {"v": "C", "i": 2, "k": "k-c"},
    ]
    assert runner.calls == 3


def test_ctx_item_of_a_stage_that_is_no_map_is_the_same_error_there() -> None:
    async def wrong(ctx: Any) -> dict[str, Any]:
        return {"item": ctx.item}

    graph = Pipeline("p").with_stage("a", wrong, runner="x").build()
    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(graph))
    assert "is not a map stage" in str(result["a"].error)


def test_a_loop_body_stage_sees_its_iteration_there() -> None:
    async def step(ctx: Any) -> dict[str, Any]:
        previous = ctx.loop.previous
        return {"n": ctx.loop.iteration, "was": None if previous is None else previous["n"]}

    body = Pipeline("body").with_stage("step", step, runner="x").build()
    graph = Pipeline("p").with_loop("l", body, until=lambda out: out["n"] >= 3,
                                    max_iterations=5).build()  # fmt: skip
    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(graph))
    assert result["l"].data == {"n": 3, "was": 2}


# ----------------------------------------------------------------------------- what comes back


def test_usage_reported_there_reaches_the_ledger_and_the_budget() -> None:
    def spends(ctx: Any) -> dict[str, Any]:
        ctx.usage.report(model="m", input_tokens=600, output_tokens=100)
        return {"ok": True}

    graph = Pipeline("p").with_stage("a", spends, runner="x").build()
    runner = PickleRunner()
    done = run_virtual(Engine(runners={"x": runner}).run(graph))
    assert done.usage.tokens == 700
    over = run_virtual(Engine(runners={"x": runner}, budget=Budget(max_tokens=500)).run(graph))
    assert over.status is RunStatus.FAILED
    assert isinstance(over["a"].error, BudgetExceededError)


def downgrading(runner: str | None) -> tuple[RunResult, list[tuple[str, str, dict[str, Any]]]]:
    pipeline, before = Pipeline("downgrades"), ()
    for i in range(5):
        pipeline = pipeline.with_stage(f"s{i}", stages.on_the_model_given, dependencies=before,
                                       estimate=400, runner=runner)  # fmt: skip
        before = (f"s{i}",)
    sink = RecordingSink()
    engine = Engine(runners={"x": PickleRunner()}, sink=sink,
                    budget=Budget(max_tokens=1000, policy="downgrade"),
                    model_chains=[ModelChain("gpt-4o", "gpt-4o-mini", "local")])  # fmt: skip
    result = run_virtual(engine.run(pipeline.build()))
    told = [(e.type, e.stage, dict(e.data)) for e in sink.events if e.type.startswith("budget.")]
    return result, told


def test_ctx_model_there_downgrades_as_the_budget_says_and_is_told_here() -> None:
    result, told = downgrading("x")
    # 0 + 400 and 400 + 400 fit; 800 + 400 does not: mini, then local, then nothing.
    assert [result[f"s{i}"].data.get("model") for i in range(4)] == [
        "gpt-4o", "gpt-4o", "gpt-4o-mini", "local"]  # fmt: skip
    error = result["s4"].error
    assert isinstance(error, BudgetExceededError)
    assert error.scope == "run"
    assert "no model 3 step(s) below 'gpt-4o'" in str(error)
    downgraded = [(stage, data["to"]) for kind, stage, data in told if kind == "budget.downgraded"]
    assert downgraded == [("s2", "gpt-4o-mini"), ("s3", "local")]
    assert told[-1][:2] == ("budget.exceeded", "s4")
    assert told[-1][2]["model"] == "gpt-4o"
    assert result.usage.tokens == 4 * 400
    local, told_here = downgrading(None)  # the same run, every call in the engine
    assert told == told_here
    assert str(local["s4"].error) == str(error)


def test_ctx_model_there_refuses_what_is_no_model_name() -> None:
    def bad(ctx: Any) -> None:
        ctx.model("")

    graph = Pipeline("p").with_stage("bad", bad, runner="x").build()
    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(graph))
    error = result["bad"].error
    assert isinstance(error, ConfigurationError)
    assert error.field == "model"
    assert "stage 'bad': ctx.model() takes a model name" in str(error)


def test_usage_reported_before_a_failure_there_still_counts() -> None:
    def spends_then_fails(ctx: Any) -> dict[str, Any]:
        ctx.usage.report(input_tokens=40)
        raise ConnectionError("down")

    graph = Pipeline("p").with_stage("a", spends_then_fails, runner="x",
                                     retry=RetryPolicy(attempts=3, base=1.0)).build()  # fmt: skip
    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(graph))
    assert isinstance(result["a"].error, ConnectionError)
    assert result["a"].attempts == 3
    assert result.usage.tokens == 120  # all three attempts spent


def test_state_saved_there_reaches_the_store_and_a_resume_loads_it(tmp_path: Path) -> None:
    attempts: list[Any] = []

    async def halfway(ctx: Any) -> dict[str, Any]:
        seen = await ctx.state.load(0)
        attempts.append(seen)
        if seen == 0:
            await ctx.state.save(5)
            raise ConnectionError("lost half way")
        return {"resumed_from": seen}

    store = SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path}/runs.db")
    graph = Pipeline("p").with_stage("a", halfway, runner="x", retry=1).build()  # no retry
    engine = Engine(store=store, runners={"x": PickleRunner()})
    first = run_virtual(engine.run(graph, run_id="r"))
    assert first.status is RunStatus.FAILED
    again = run_virtual(engine.resume("r", graph))
    assert again["a"].data == {"resumed_from": 5}
    assert attempts == [0, 5]


def test_an_exception_raised_there_arrives_as_itself_with_its_fields() -> None:
    def raises(ctx: Any) -> None:
        raise Pinned("no luck", code=7)

    graph = Pipeline("p").with_stage("a", raises, runner="x",
                                     retry=RetryPolicy(attempts=2, retry_on=(Pinned,),
                                                       base=1.0)).build()  # fmt: skip
    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(graph))
    error = result["a"].error
    assert type(error) is Pinned
    assert (str(error), error.code) == ("no luck", 7)
    assert result["a"].attempts == 2  # retry_on saw the same type


def test_an_exception_that_does_not_pickle_arrives_as_a_remote_error_naming_it() -> None:
    def raises(ctx: Any) -> None:
        raise Unpicklable("bad", code=1)

    graph = Pipeline("p").with_stage("a", raises, runner="x").build()
    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(graph))
    error = result["a"].error
    assert isinstance(error, RemoteError)
    assert error.type_name == "tests.ray.stages.Unpicklable"
    assert (error.stage, error.text) == ("a", "bad")
    assert "raise Unpicklable" in error.traceback
    assert "does not pickle" in str(error)


class Score(BaseModel):
    score: float


def test_a_declared_output_model_is_checked_on_what_came_back() -> None:
    async def good(ctx: Any) -> dict[str, Any]:
        return {"score": 0.5}

    async def bad(ctx: Any) -> dict[str, Any]:
        return {"score": "high"}

    graph = (
        Pipeline("p").with_stage("good", good, output=Score, runner="x")
        .with_stage("bad", bad, output=Score, runner="x").build()
    )  # fmt: skip
    result = run_virtual(Engine(runners={"x": PickleRunner()}, fail_fast=False).run(graph))
    assert result["good"].data == {"score": 0.5}
    assert isinstance(result["bad"].error, InvalidOutputError)
    assert result["bad"].status is StageStatus.FAILED


def test_the_trace_context_travels_so_spans_there_nest_under_the_stage_span() -> None:
    traces = Traces()
    tracer = traces.provider.get_tracer("test")

    def traced(ctx: Any) -> dict[str, Any]:
        with tracer.start_as_current_span("inside"):
            return {"traceparent": ctx.traceparent}

    graph = Pipeline("p").with_stage("a", traced, runner="x").build()
    engine = Engine(runners={"x": PickleRunner()},
                    interceptors=[TracingInterceptor(tracer_provider=traces.provider)])  # fmt: skip
    result = run_virtual(engine.run(graph))
    stage = traces.stage("a")
    inside = traces.one("inside")
    assert inside.parent is not None
    assert inside.parent.span_id == stage.context.span_id
    assert inside.context.trace_id == stage.context.trace_id
    assert f"{stage.context.span_id:016x}" in result["a"].data["traceparent"]


def test_without_a_span_there_is_no_traceparent() -> None:
    def reads(ctx: Any) -> dict[str, Any]:
        return {"traceparent": ctx.traceparent}

    graph = Pipeline("p").with_stage("a", reads, runner="x").build()
    assert trace.get_current_span().get_span_context().is_valid is False
    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(graph))
    assert result["a"].data == {"traceparent": None}


def test_a_detached_context_pickles_and_says_what_it_is() -> None:
    async def keep(ctx: Any) -> dict[str, Any]:
        detached = await detach(ctx)
        again = pickle.loads(pickle.dumps(detached))
        assert isinstance(again, DetachedContext)
        wired = DetachedContext.from_wire(detached.wire())
        assert (wired.stage, wired.run_id, dict(wired.data)) == ("a", "r9", {"n": 2})
        again.usage.report(input_tokens=1)
        return {"repr": repr(again), "stage": again.stage, "reports": len(again.usage.reports)}

    result = run_virtual(Engine().run(Pipeline("p").with_stage("a", keep).build(),
                                      run_id="r9", data={"n": 2}))  # fmt: skip
    assert result["a"].data == {"repr": "<DetachedContext r9/a attempt 1>", "stage": "a",
                                "reports": 1}  # fmt: skip


def test_a_bad_usage_report_there_is_refused_there() -> None:
    def bad(ctx: Any) -> None:
        ctx.usage.report(input_tokens=-1)

    result = run_virtual(Engine(runners={"x": PickleRunner()}).run(
        Pipeline("p").with_stage("a", bad, runner="x").build()))  # fmt: skip
    error = result["a"].error
    assert isinstance(error, ConfigurationError)
    assert error.field == "input_tokens"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"address": 3}, "address"),
        ({"address": " "}, "address"),
        ({"namespace": 1}, "namespace"),
        ({"init": ["num_cpus"]}, "init"),
        ({"cancel_grace": -1}, "cancel_grace"),
        ({"put_above": -1}, "put_above"),
        ({"put_above": "1MB"}, "put_above"),
        ({"inline_below": -1}, "inline_below"),
        ({"inline_below": 1.5}, "inline_below"),
    ],
    ids=[
        "address-number",
        "address-blank",
        "namespace",
        "init",
        "grace",
        "put-negative",
        "put-text",
        "inline-negative",
        "inline-float",
    ],
)
def test_a_ray_runner_refuses_bad_settings_before_starting_ray(settings: dict[str, Any],
                                                               field: str) -> None:  # fmt: skip
    from stageflow.adapters.ray import RayRunner

    with pytest.raises(ConfigurationError) as caught:
        RayRunner(**settings)
    assert caught.value.field == field
    shown = "RayRunner(address='ray://head:10001', namespace=None)"
    assert repr(RayRunner("ray://head:10001")) == shown
