"""Exporting a pipeline built in Python as a file that loads back to an equal graph."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from stageflow import (
    Budget,
    CircuitBreakerPolicy,
    Engine,
    Estimate,
    Pipeline,
    RetryPolicy,
    RunResult,
    StageGraph,
    StageKind,
)
from stageflow._durable import fingerprint, structure
from stageflow.adapters.declarative import export_pipeline, load_pipeline, loads_pipeline
from stageflow.errors import ConfigurationError
from stageflow.testing import run_virtual
from stageflow.testing.strategies import DynamicGraph, dynamic_graphs

from . import exportable
from .exportable import publish

EXAMPLES = Path(__file__).parents[3] / "examples" / "declarative"


def _outcome(result: RunResult) -> dict[str, Any]:
    """What a user reads of a run: each stage's status, data, error type and items."""

    def one(stage: Any) -> Any:
        return (
            str(stage.status),
            dict(stage.data) if stage.ok else None,
            type(stage.error).__name__ if stage.error is not None else None,
            [one(item) for item in stage.items],
        )

    return {"status": str(result.status), "stages": {n: one(s) for n, s in result.stages.items()}}


def _same_specs(a: StageGraph, b: StageGraph) -> None:
    """Each stage has the same function, condition and options (bodies too)."""
    assert a.names == b.names
    for left, right in zip(a.stages, b.stages, strict=True):
        assert (left.kind, left.dependencies, left.optional, left.tags) == (
            right.kind, right.dependencies, right.optional, right.tags,
        )  # fmt: skip
        assert (left.timeout, left.retry, left.circuit_breaker, left.estimate) == (
            right.timeout, right.retry, right.circuit_breaker, right.estimate,
        )  # fmt: skip
        assert left.when is right.when
        assert left.routes == right.routes
        assert dict(left.metadata) == dict(right.metadata)
        assert left.placement == right.placement
        if left.dynamic is None:
            assert left.stage is right.stage
        elif hasattr(left.dynamic, "body"):
            _same_specs(left.dynamic.body, right.dynamic.body)  # type: ignore[union-attr]
            assert left.dynamic.until is right.dynamic.until  # type: ignore[union-attr]
        else:
            assert left.dynamic == right.dynamic


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=dynamic_graphs(max_duration=0), as_json=st.booleans())
def test_a_generated_dynamic_graph_round_trips_with_its_fingerprint_and_results(
    plan: DynamicGraph, as_json: bool
) -> None:
    graph = publish(plan.graph)
    text = export_pipeline(graph, format="json" if as_json else "yaml")
    loaded = loads_pipeline(text, name="exported.json" if as_json else "exported.yaml")

    assert fingerprint(structure(loaded.graph)) == fingerprint(structure(graph))
    _same_specs(graph, loaded.graph)
    engine = Engine(fail_fast=False)
    before = _outcome(run_virtual(engine.run(graph)))
    mark = plan.mark()
    after = _outcome(run_virtual(engine.run(loaded.graph)))
    assert after == before
    assert Counter(plan.log[mark:]) == Counter(plan.log[:mark])  # the same calls, again


async def work(ctx: Any) -> dict[str, Any]:
    return {"stage": ctx.stage, "inputs": sorted(ctx.inputs)}


_options = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(
            [StageKind.TRANSFORM, StageKind.ENRICH, StageKind.GUARD, StageKind.AGENT]
        ),
        "timeout": st.floats(0.5, 100),
        "retry": st.one_of(
            st.integers(1, 5).map(lambda n: RetryPolicy(attempts=n)),
            st.builds(
                RetryPolicy,
                attempts=st.integers(1, 5),
                backoff=st.sampled_from(["fixed", "linear", "exponential"]),
                base=st.floats(0.01, 2),
                jitter=st.booleans(),
                retry_on=st.sampled_from([(ConnectionError,), (TimeoutError, OSError)]),
            ),
        ),
        "circuit_breaker": st.builds(
            CircuitBreakerPolicy,
            failure_threshold=st.integers(1, 10),
            recovery_timeout=st.floats(1, 60),
            failure_on=st.sampled_from([(Exception,), (ConnectionError,)]),
        ),
        "budget": st.builds(
            Budget, max_tokens=st.integers(1, 10_000), policy=st.sampled_from(["block", "notify"])
        ),
        "estimate": st.builds(Estimate, tokens=st.integers(0, 1000), cost=st.floats(0, 5)),
        "tags": st.frozensets(st.sampled_from(["net", "llm", "slow"]), min_size=1),
        "runner": st.sampled_from(["ray", "gpu"]),
        "resources": st.dictionaries(
            st.sampled_from(["num_cpus", "num_gpus", "memory"]), st.integers(0, 4), min_size=1
        ),
        "metadata": st.dictionaries(
            st.sampled_from(["owner", "description", "n"]),
            st.one_of(st.text(max_size=8), st.integers()),
            min_size=1,
        ),
    },
)


@settings(max_examples=60, deadline=None)
@given(options=st.lists(_options, min_size=1, max_size=4))
def test_every_with_stage_option_round_trips(options: list[dict[str, Any]]) -> None:
    pipeline = Pipeline("options")
    for i, given_options in enumerate(options):
        kind = given_options.pop("kind", StageKind.WORK)
        deps = (f"s{i - 1}",) if i else ()
        pipeline = pipeline.with_stage(f"s{i}", work, kind, dependencies=deps, **given_options)
    graph = pipeline.build()

    loaded = loads_pipeline(export_pipeline(graph))

    _same_specs(graph, loaded.graph)
    for left, right in zip(graph.stages, loaded.graph.stages, strict=True):
        assert (left.budget is None) == (right.budget is None)
        if left.budget is not None and right.budget is not None:
            assert (left.budget.max_tokens, left.budget.policy) == (
                right.budget.max_tokens, right.budget.policy,
            )  # fmt: skip


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_a_loaded_file_exports_as_it_was_declared(example: str) -> None:
    """CEL conditions, with: references, routes by when:, inputs and outputs come back."""
    first = load_pipeline(EXAMPLES / example)
    again = loads_pipeline(export_pipeline(first))

    assert fingerprint(structure(again.graph)) == fingerprint(structure(first.graph))
    assert again.declaration.inputs == first.declaration.inputs
    assert again.declaration.outputs == first.declaration.outputs
    assert [s.id for s in again.declaration.stages] == [s.id for s in first.declaration.stages]
    assert (again.description, again.version, again.category) == (
        first.description, first.version, first.category,
    )  # fmt: skip


def test_the_ingest_example_runs_the_same_after_a_round_trip() -> None:
    first = load_pipeline(EXAMPLES / "ingest.yaml")
    again = loads_pipeline(export_pipeline(first))
    before = run_virtual(Engine().run(first.graph))
    after = run_virtual(Engine().run(again.graph))
    assert _outcome(after) == _outcome(before)
    assert again.outputs(after) == first.outputs(before)


def test_the_file_names_each_stage_function_by_its_dotted_path() -> None:
    graph = Pipeline("p").with_stage("fetch", work, timeout=5).build()
    document = json.loads(export_pipeline(graph, format="json", description="fetch it",
                                          version="2", category="etl"))  # fmt: skip
    assert document == {
        "name": "p",
        "version": "2",
        "description": "fetch it",
        "category": "etl",
        "stages": [{"id": "fetch", "handler": f"{__name__}.work", "timeout": 5.0}],
    }


def test_handlers_name_stages_that_have_no_dotted_path() -> None:
    async def local(ctx: Any) -> dict[str, Any]:
        return {"n": 1}

    graph = Pipeline("p").with_stage("a", local).build()
    text = export_pipeline(graph, handlers={"local": local})
    assert "handler: local" in text
    loaded = loads_pipeline(text, handlers={"local": local})
    assert loaded.graph["a"].stage is local


def test_a_module_level_instance_is_named_by_its_module_attribute() -> None:
    graph = Pipeline("p").with_stage("a", exportable.greeter).build()
    text = export_pipeline(graph)
    assert "handler: tests.unit.declarative.exportable.greeter" in text
    assert loads_pipeline(text).graph["a"].stage is exportable.greeter


# ----------------------------------------------------------------------------- bad input


def test_a_lambda_is_refused_naming_the_stage_and_the_field() -> None:
    graph = (
        Pipeline("p")
        .with_stage("a", work)
        .with_stage("b", work, dependencies=("a",), when=lambda ctx: True)
        .build()
    )
    with pytest.raises(ConfigurationError, match=r"stage 'b': its when .*no importable path") as e:
        export_pipeline(graph)
    assert e.value.field == "b.when"


def test_a_closure_stage_is_refused_with_the_handlers_hint() -> None:
    async def inner(ctx: Any) -> None:
        return None

    with pytest.raises(ConfigurationError, match="name it in handlers=") as e:
        export_pipeline(Pipeline("p").with_stage("a", inner).build())
    assert (e.value.field, e.value.value) == ("a.handler", inner)


def test_a_body_stage_is_named_with_its_loop() -> None:
    body = Pipeline("body").with_stage("t0", lambda ctx: {"x": 1}).build()
    graph = Pipeline("p").with_subgraph("sub", body).build()
    with pytest.raises(ConfigurationError, match=r"stage 'sub\.t0'") as e:
        export_pipeline(graph)
    assert e.value.field == "sub.t0.handler"


def test_metadata_that_is_not_json_is_refused() -> None:
    graph = Pipeline("p").with_stage("a", work, metadata={"when": object()}).build()
    with pytest.raises(ConfigurationError, match="its metadata is not JSON data") as e:
        export_pipeline(graph)
    assert e.value.field == "a.metadata"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda g: export_pipeline(g, format="toml"), "format"),  # type: ignore[arg-type]
        (lambda g: export_pipeline("a graph"), "pipeline"),  # type: ignore[arg-type]
        (lambda g: export_pipeline(g, handlers=["work"]), "handlers"),  # type: ignore[arg-type]
    ],
    ids=["format", "pipeline", "handlers"],
)
def test_bad_arguments_are_refused_naming_the_argument(call: Any, field: str) -> None:
    graph = Pipeline("p").with_stage("a", work).build()
    with pytest.raises(ConfigurationError) as e:
        call(graph)
    assert e.value.field == field


def test_a_pipeline_is_built_first_so_its_graph_errors_surface() -> None:
    from stageflow.errors import UnknownDependencyError

    with pytest.raises(UnknownDependencyError):
        export_pipeline(Pipeline("p").with_stage("a", work, dependencies=("zz",)))


class Approval(BaseModel):
    approved: bool
    note: str = ""


def ask(ctx: Any) -> str:
    return f"approve {ctx.stage}?"


def items(ctx: Any) -> list[str]:
    return ["a", "b"]


@pytest.mark.parametrize(
    "options",
    [
        {"schema": bool},
        {"schema": Approval, "prompt": ask, "timeout": 60.0, "on_timeout": {"approved": False}},
        {"schema": str, "prompt": "Your name?", "over": items, "max_parallel": 2},
        {"schema": Approval, "over": "a.items", "on_item_error": "skip"},
    ],
    ids=["type", "model", "per-item", "over-field"],
)
def test_an_input_stage_round_trips(options: dict[str, Any]) -> None:
    graph = Pipeline("p").with_stage("a", work).with_input("ok", dependencies=("a",),
                                                           **options).build()  # fmt: skip
    loaded = loads_pipeline(export_pipeline(graph))
    assert fingerprint(structure(loaded.graph)) == fingerprint(structure(graph))
    left, right = graph["ok"].dynamic, loaded.graph["ok"].dynamic
    assert (left.schema.schema, left.prompt, left.timeout, left.on_timeout, left.map) == (  # type: ignore[union-attr]
        right.schema.schema, right.prompt, right.timeout, right.on_timeout, right.map,  # type: ignore[union-attr]
    )  # fmt: skip


def test_a_runner_object_has_no_name_to_write() -> None:
    class Local:
        def bind(self, spec: Any, call: Any) -> Any:
            return call

    graph = Pipeline("p").with_stage("a", work, runner=Local()).build()
    with pytest.raises(ConfigurationError, match=r"its runner .* is an object") as e:
        export_pipeline(graph)
    assert e.value.field == "a.runner"


def test_a_prompt_holding_an_expression_marker_is_refused() -> None:
    graph = Pipeline("p").with_input("ok", schema=bool, prompt="cost ${{ 3 }}?").build()
    with pytest.raises(ConfigurationError, match="reads as an expression") as e:
        export_pipeline(graph)
    assert e.value.field == "ok.prompt"
