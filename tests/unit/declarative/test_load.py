"""Loading pipeline files: what each construct of the format builds and how it runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from stageflow import (
    Engine,
    ExpressionError,
    MissingInputError,
    Pipeline,
    RetryPolicy,
    StageContext,
    StageKind,
    StageStatus,
)
from stageflow._durable import fingerprint, structure
from stageflow.adapters.declarative import load_pipeline, loads_pipeline, pipeline_schema
from stageflow.adapters.memory import MemoryStore
from stageflow.errors import ConfigurationError, PipelineFileError
from stageflow.testing import run_virtual

H = "examples.declarative.handlers"


def run(graph: Any, data: dict[str, Any] | None = None, **engine: Any) -> Any:
    return asyncio.run(Engine(**engine).run(graph, data=data or {}))


class TestHandlersAndArguments:
    def test_with_arguments_are_keyword_arguments_of_a_plain_function(self) -> None:
        loaded = loads_pipeline(f"""
name: greet
inputs: {{who: {{type: string, default: world}}}}
stages:
  - id: hello
    handler: {H}.greet
    with: {{name: $inputs.who}}
""")
        assert run(loaded.graph)["hello"].data == {"greeting": "hello world"}
        assert run(loaded.graph, {"who": "ada"})["hello"].data == {"greeting": "hello ada"}

    def test_a_handler_taking_ctx_gets_it_first(self) -> None:
        loaded = loads_pipeline(f"""
name: words
stages:
  - id: split
    handler: {H}.split
    with: {{text: "a b c"}}
""")
        assert run(loaded.graph)["split"].data == {"words": ["a", "b", "c"]}

    def test_a_handler_without_with_is_the_stage_itself(self) -> None:
        loaded = loads_pipeline(f"""
name: t
stages:
  - id: triage
    handler: {H}.triage
    routes: [fast, slow]
  - {{id: fast, handler: {H}.echo, dependencies: [triage], with: {{x: 1}}}}
  - {{id: slow, handler: {H}.echo, dependencies: [triage], with: {{x: 2}}}}
""")
        from examples.declarative.handlers import triage

        assert loaded.graph.stages[0].stage is triage  # no wrapper: nothing added per call
        assert loaded.graph.stages[0].kind == StageKind.ROUTE
        result = run(loaded.graph, {"text": "short"})
        assert result["fast"].data == {"x": 1}
        assert result["slow"].status == StageStatus.SKIPPED

    def test_a_plain_value_returned_is_the_value_field(self) -> None:
        loaded = loads_pipeline(f"""
name: t
stages:
  - {{id: up, handler: {H}.upper, with: {{word: abc}}}}
""")
        assert run(loaded.graph)["up"].data == {"value": "ABC"}

    def test_registered_handlers_by_name(self) -> None:
        async def hello(ctx: StageContext) -> dict[str, int]:
            return {"n": 1}

        loaded = loads_pipeline("name: t\nstages:\n  - {id: a, handler: hello}\n",
                                handlers={"hello": hello})  # fmt: skip
        assert loaded.graph.stages[0].stage is hello

    def test_nested_arguments_constants_and_escaped_dollars(self) -> None:
        loaded = loads_pipeline(f"""
name: t
inputs: {{n: integer}}
stages:
  - id: e
    handler: {H}.echo
    with:
      config: {{n: $inputs.n, list: [$inputs.n, 2], price: "$$5"}}
      text: "n is ${{{{ $inputs.n }}}} today"
      doubled: "${{{{ $inputs.n * 2 }}}}"
""")
        assert run(loaded.graph, {"n": 4})["e"].data == {
            "config": {"n": 4, "list": [4, 2], "price": "$5"},
            "text": "n is 4 today",
            "doubled": 8,
        }


class TestReferences:
    def test_a_reference_adds_the_dependency_it_reads(self) -> None:
        loaded = loads_pipeline(f"""
name: t
stages:
  - {{id: fetch-docs, handler: {H}.split, with: {{text: "x y"}}}}
  - {{id: first, handler: {H}.upper, with: {{word: "$fetch-docs.words[0]"}}}}
""")
        assert loaded.graph.stages[1].dependencies == ("fetch-docs",)
        assert run(loaded.graph)["first"].data == {"value": "X"}

    def test_a_reference_to_a_stage_that_did_not_complete_fails_the_stage_clearly(self) -> None:
        loaded = loads_pipeline(f"""
name: t
stages:
  - {{id: a, handler: {H}.fail, with: {{message: down}}}}
  - {{id: b, handler: {H}.echo, dependencies: [a], optional: [a], with: {{y: $a.x}}}}
""")
        result = run(loaded.graph, fail_fast=False)
        error = result["b"].error
        assert isinstance(error, MissingInputError)
        assert "$a.x" in str(error)
        assert "did not complete" in str(error)

    def test_a_missing_key_names_the_reference_and_what_is_there(self) -> None:
        loaded = loads_pipeline(f"""
name: t
stages:
  - {{id: a, handler: {H}.echo, with: {{x: 1}}}}
  - {{id: b, handler: {H}.echo, with: {{y: $a.z}}}}
""")
        error = run(loaded.graph, fail_fast=False)["b"].error
        assert isinstance(error, MissingInputError)
        assert error.key == "z"
        assert "$a.z" in str(error)
        assert "{'x': 1}" in str(error)

    def test_a_required_input_missing_from_the_data(self) -> None:
        loaded = loads_pipeline(f"""
name: t
inputs: {{who: string}}
stages:
  - {{id: a, handler: {H}.greet, with: {{name: $inputs.who}}}}
""")
        error = run(loaded.graph, fail_fast=False)["a"].error
        assert isinstance(error, MissingInputError)
        assert "'who'" in str(error)
        with pytest.raises(ConfigurationError) as caught:
            loaded.validate_data({})
        assert caught.value.field == "data.who"
        assert loaded.validate_data({"who": "x"}) == {"who": "x"}


class TestConditionsAndRoutes:
    FILE = f"""
name: triage
inputs: {{text: string, threshold: {{type: number, default: 5}}}}
stages:
  - {{id: classify, handler: {H}.classify, with: {{text: $inputs.text}}}}
  - id: decide
    routes:
      - {{to: long-path, when: "$classify.size > $inputs.threshold"}}
      - {{to: short-path}}
  - {{id: long-path, handler: {H}.split, dependencies: [decide], with: {{text: $inputs.text}}}}
  - {{id: short-path, handler: {H}.upper, dependencies: [decide], with: {{word: $inputs.text}}}}
"""

    def test_a_route_by_expressions_chooses_the_first_that_holds(self) -> None:
        graph = loads_pipeline(self.FILE).graph
        assert graph.stages[1].kind == StageKind.ROUTE
        assert graph.stages[1].dependencies == ("classify",)  # added by the reference
        long = run(graph, {"text": "hello there world"})
        assert long["decide"].reason == "routed to long-path"
        assert long["short-path"].reason == "not routed by 'decide'"
        short = run(graph, {"text": "hi"})
        assert short["decide"].reason == "routed to short-path"
        assert short["short-path"].data == {"value": "HI"}

    def test_an_int_given_for_a_number_input_compares_as_a_number(self) -> None:
        graph = loads_pipeline(self.FILE).graph
        assert run(graph, {"text": "abcdefgh", "threshold": 3})["decide"].reason == (
            "routed to long-path"
        )

    def test_a_route_after_a_handler_reads_its_output(self) -> None:
        graph = loads_pipeline(f"""
name: t
stages:
  - id: classify
    handler: {H}.classify
    with: {{text: $inputs.text}}
    routes:
      - {{to: big, when: "$output.label == 'long'"}}
      - small
  - {{id: big, handler: {H}.echo, dependencies: [classify], with: {{x: big}}}}
  - {{id: small, handler: {H}.echo, dependencies: [classify], with: {{x: small}}}}
inputs: {{text: string}}
""").graph
        result = run(graph, {"text": "a long text indeed"})
        assert result["classify"].data == {"label": "long", "size": 18}
        assert result["big"].ok
        assert result["small"].status == StageStatus.SKIPPED

    def test_no_route_holding_is_a_route_error(self) -> None:
        graph = loads_pipeline(f"""
name: t
stages:
  - id: decide
    routes: [{{to: a, when: "false"}}]
  - {{id: a, handler: {H}.echo, dependencies: [decide], with: {{x: 1}}}}
""").graph
        from stageflow import RouteError

        assert isinstance(run(graph, fail_fast=False)["decide"].error, RouteError)

    def test_when_false_skips_as_a_condition(self) -> None:
        graph = loads_pipeline(f"""
name: t
inputs: {{mode: {{type: string, enum: [full, quick]}}}}
stages:
  - {{id: a, handler: {H}.echo, with: {{x: 1}}, when: "$inputs.mode == 'full'"}}
""").graph
        assert run(graph, {"mode": "quick"})["a"].reason == "condition false"
        assert run(graph, {"mode": "full"})["a"].ok

    def test_a_condition_evaluation_error_fails_the_stage_naming_it(self) -> None:
        graph = loads_pipeline(f"""
name: t
inputs: {{n: integer}}
stages:
  - {{id: a, handler: {H}.echo, with: {{x: 1}}, when: "10 / $inputs.n > 1"}}
""").graph
        error = run(graph, {"n": 0}, fail_fast=False)["a"].error
        assert isinstance(error, ExpressionError)
        assert (error.stage, error.field, error.expression) == ("a", "when", "10 / $inputs.n > 1")
        assert "divide by zero" in str(error)

    def test_the_memo_keeps_types_apart(self) -> None:
        graph = loads_pipeline(f"""
name: t
inputs: {{v: any}}
stages:
  - {{id: a, handler: {H}.echo, with: {{x: 1}}, when: "type($inputs.v) == int"}}
""").graph
        assert run(graph, {"v": 1})["a"].ok
        assert run(graph, {"v": True})["a"].reason == "condition false"  # 1 == True in Python
        assert run(graph, {"v": 1})["a"].ok


class TestMapsLoopsSubgraphsInputs:
    def test_a_map_over_a_field_is_with_map_over_stage_field(self) -> None:
        loaded = loads_pipeline(f"""
name: t
stages:
  - {{id: split, handler: {H}.split, with: {{text: "a b"}}}}
  - {{id: shout, handler: {H}.upper, over: $split.words, with: {{word: $item}}, key: "$item"}}
""")
        spec = loaded.graph.stages[1]
        assert spec.dependencies == ("split",)
        assert spec.dynamic.over == "split.words"
        result = run(loaded.graph)
        assert result["shout"].data == {"results": [{"value": "A"}, {"value": "B"}]}
        assert spec.dynamic.key("b") == "b"

    def test_a_map_over_an_expression(self) -> None:
        loaded = loads_pipeline(f"""
name: t
inputs: {{n: integer}}
stages:
  - {{id: e, handler: {H}.echo, over: "${{{{ [1, 2, 3].filter(x, x <= $inputs.n) }}}}",
     with: {{v: $item}}}}
""")
        assert run(loaded.graph, {"n": 2})["e"].data == {"results": [{"v": 1}, {"v": 2}]}

    def test_a_loop_with_an_inline_body_until_an_expression(self) -> None:
        loaded = loads_pipeline(f"""
name: t
inputs: {{text: string}}
stages:
  - id: refine
    loop:
      body:
        stages:
          - id: step
            handler: {H}.score
            with: {{draft: $inputs.text, iteration: $loop.iteration}}
      until: "$output.score >= 6"
      max_iterations: 5
""")
        result = run(loaded.graph, {"text": "d"})
        assert result["refine"].data == {"draft": "d v2", "score": 6}
        assert "refine[3].step" not in result.stages

    def test_a_subgraph_file_with_template_parameters(self, tmp_path: Path) -> None:
        (tmp_path / "inner.yaml").write_text(f"""
name: inner
parameters: {{greeting: {{type: string, default: hi}}}}
stages:
  - {{id: say, handler: {H}.echo, with: {{text: $params.greeting}}}}
""")
        (tmp_path / "outer.yml").write_text("""
name: outer
stages:
  - {id: sub, subgraph: {file: inner.yaml, parameters: {greeting: hello}}}
""")
        loaded = load_pipeline(tmp_path / "outer.yml")
        assert loaded.file == str(tmp_path / "outer.yml")
        assert run(loaded.graph)["sub"].data == {"text": "hello"}

    def test_an_input_stage_waits_for_a_value(self) -> None:
        loaded = loads_pipeline(f"""
name: t
stages:
  - id: approve
    input:
      schema: {{approved: boolean, note: {{type: string, default: ""}}}}
      prompt: "Approve?"
  - {{id: after, handler: {H}.echo, with: {{ok: $approve.approved}}}}
""")
        graph = loaded.graph
        assert graph.stages[0].kind == StageKind.INPUT
        assert graph.stages[1].dependencies == ("approve",)

        async def flow() -> Any:
            engine = Engine(store=MemoryStore())
            first = await engine.run(graph, data={})
            assert first.status == "waiting"
            assert first.waiting_for[0].prompt == "Approve?"
            await engine.send(first.run_id, "approve", {"approved": True})
            return await engine.resume(first.run_id, graph)

        result = asyncio.run(flow())
        assert result["approve"].data == {"approved": True, "note": ""}
        assert result["after"].data == {"ok": True}


class TestOptions:
    def test_every_with_stage_option(self) -> None:
        loaded = loads_pipeline(f"""
name: t
stages:
  - id: a
    handler: {H}.echo
    kind: agent
    with: {{x: 1}}
    timeout: 2.5
    retry: {{attempts: 4, backoff: fixed, base: 0.5, retry_on: [builtins.ValueError]}}
    circuit_breaker: {{failure_threshold: 2}}
    budget: {{max_tokens: 100}}
    estimate: 10
    tags: [llm]
    metadata: {{owner: me}}
    description: does a
    output: {H}.Summary
""")
        spec = loaded.graph.stages[0]
        assert spec.kind == StageKind.AGENT
        assert spec.timeout == 2.5
        assert spec.retry == RetryPolicy(attempts=4, backoff="fixed", base=0.5,
                                         retry_on=(ValueError,))  # fmt: skip
        assert spec.circuit_breaker is not None
        assert spec.circuit_breaker.failure_threshold == 2
        assert spec.budget is not None
        assert spec.budget.max_tokens == 100
        assert spec.estimate is not None
        assert spec.estimate.tokens == 10
        assert spec.tags == {"llm"}
        assert dict(spec.metadata) == {"owner": "me", "description": "does a"}
        assert spec.output.__name__ == "Summary"

    def test_a_file_builds_the_same_graph_as_code(self) -> None:
        from examples.declarative import handlers

        code = (
            Pipeline("same")
            .with_stage("triage", handlers.triage, StageKind.ROUTE, routes=("fast", "slow"))
            .with_stage("fast", handlers.triage, dependencies=("triage",))
            .with_stage("slow", handlers.triage, dependencies=("triage",))
            .build()
        )
        loaded = loads_pipeline(f"""
name: same
stages:
  - {{id: triage, handler: {H}.triage, routes: [fast, slow]}}
  - {{id: fast, handler: {H}.triage, dependencies: [triage]}}
  - {{id: slow, handler: {H}.triage, dependencies: [triage]}}
""")
        assert fingerprint(structure(loaded.graph)) == fingerprint(structure(code))


class TestFormatsAndSchema:
    def test_json_and_toml_files(self, tmp_path: Path) -> None:
        doc = {"name": "j", "stages": [{"id": "a", "handler": f"{H}.echo", "with": {"x": 1}}]}
        (tmp_path / "p.json").write_text(json.dumps(doc, indent=2))
        (tmp_path / "p.toml").write_text(
            f'name = "t"\n[[stages]]\nid = "a"\nhandler = "{H}.echo"\nwith = {{ x = 1 }}\n'
        )
        assert run(load_pipeline(tmp_path / "p.json").graph)["a"].data == {"x": 1}
        assert run(load_pipeline(tmp_path / "p.toml").graph)["a"].data == {"x": 1}

    def test_the_json_schema_describes_the_format(self) -> None:
        schema = pipeline_schema()
        assert schema["title"] == "stageflow pipeline"
        assert {"name", "stages", "inputs", "outputs", "parameters"} <= set(schema["properties"])
        stage = schema["$defs"]["StageDecl"]["properties"]
        assert {"id", "handler", "with", "when", "routes", "over", "loop", "input"} <= set(stage)

    def test_outputs_read_from_the_result(self) -> None:
        loaded = loads_pipeline(f"""
name: t
inputs: {{who: string}}
stages:
  - {{id: hello, handler: {H}.greet, with: {{name: $inputs.who}}}}
outputs: {{greeting: $hello.greeting, who: $inputs.who}}
""")
        result = run(loaded.graph, {"who": "ada"})
        assert loaded.outputs(result, {"who": "ada"}) == {"greeting": "hello ada", "who": "ada"}

    def test_bad_arguments_to_the_loaders(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            loads_pipeline("name: t", format="xml")
        assert (caught.value.field, caught.value.value) == ("format", "xml")
        with pytest.raises(ConfigurationError) as caught:
            loads_pipeline(f"name: t\nstages: [{{id: a, handler: {H}.echo}}]", handlers=[1])  # type: ignore[arg-type]
        assert caught.value.field == "handlers"
        with pytest.raises(PipelineFileError) as error:
            load_pipeline("/nonexistent/p.yaml")
        assert error.value.line == 1
        assert "cannot read" in str(error.value)


def test_virtual_time_timeouts_apply_to_file_stages() -> None:
    loaded = loads_pipeline(f"""
name: t
stages:
  - {{id: a, handler: {H}.echo, with: {{x: 1}}, timeout: 5}}
""")
    assert run_virtual(Engine().run(loaded.graph))["a"].data == {"x": 1}


def test_a_body_reading_an_outer_stage_makes_it_a_dependency_of_the_loop() -> None:
    loaded = loads_pipeline(f"""
name: t
stages:
  - {{id: seed, handler: {H}.echo, with: {{base: 10}}}}
  - id: refine
    loop:
      body:
        stages:
          - id: step
            handler: {H}.score
            with: {{draft: x, iteration: "${{{{ $seed.base + $loop.iteration }}}}"}}
      until: "$output.score >= 33"
      max_iterations: 3
""")
    assert loaded.graph.stages[1].dependencies == ("seed",)
    assert run(loaded.graph)["refine"].data == {"draft": "x v11", "score": 33}
