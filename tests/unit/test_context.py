"""StageContext and StageInputs: what a running stage sees."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from stageflow import (
    Engine,
    MissingInputError,
    Pipeline,
    StageContext,
    StageError,
    StageInputs,
    StageStatus,
)
from stageflow.interceptors import BaseInterceptor
from stageflow.testing import run_virtual

from ._helpers import noop, run, sleeper

_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def _capture(into: dict[str, Any]):
    async def stage(ctx: StageContext) -> None:
        into["ctx"] = ctx
        into["run_id"] = ctx.run_id
        into["pipeline"] = ctx.pipeline
        into["stage"] = ctx.stage
        into["attempt"] = ctx.attempt
        into["key"] = ctx.idempotency_key
        into["spec"] = ctx.spec
        into["repr"] = repr(ctx)

    return stage


class TestStageContext:
    def test_exposes_the_run_the_pipeline_the_stage_and_the_attempt(self):
        seen: dict[str, Any] = {}
        graph = Pipeline("research").with_stage("fetch", _capture(seen)).build()

        run(graph, run_id="run-42")

        assert seen["run_id"] == "run-42"
        assert seen["pipeline"] == "research"
        assert seen["stage"] == "fetch"
        assert seen["attempt"] == 1
        assert seen["spec"] is graph["fetch"]
        assert seen["repr"] == "<StageContext 'fetch' run='run-42' attempt=1>"

    def test_idempotency_key_is_run_id_and_stage_and_stable_across_attempts(self):
        seen: dict[str, Any] = {}
        run(Pipeline().with_stage("charge", _capture(seen)).build(), run_id="r-1")

        ctx = seen["ctx"]
        assert seen["key"] == "r-1:charge"
        assert ctx.with_attempt(2).idempotency_key == "r-1:charge"
        assert ctx.with_attempt(2).attempt == 2
        assert ctx.attempt == 1  # with_attempt returns a copy

    def test_idempotency_key_follows_the_run_id(self):
        seen: dict[str, Any] = {}
        graph = Pipeline().with_stage("charge", _capture(seen)).build()

        run(graph)

        assert seen["key"] == f"{seen['run_id']}:charge"

    def test_generated_run_ids_are_unique_26_char_ulids(self):
        seen: dict[str, Any] = {}
        graph = Pipeline().with_stage("a", _capture(seen)).build()
        engine = Engine()

        async def main():
            ids = []
            for _ in range(50):
                result = await engine.run(graph)
                assert seen["run_id"] == result.run_id
                ids.append(result.run_id)
            return ids

        ids = run_virtual(main())

        assert len(set(ids)) == 50
        assert all(_ULID.fullmatch(i) for i in ids)

    def test_an_explicit_run_id_is_used_as_is(self):
        result = run(Pipeline().with_stage("a", noop).build(), run_id="nightly:2024-06-01.v2")

        assert result.run_id == "nightly:2024-06-01.v2"


class TestStageContextData:
    def test_data_is_the_runs_initial_data(self):
        async def stage(ctx):
            return {"topic": ctx.data["topic"], "keys": sorted(ctx.data)}

        result = run(Pipeline().with_stage("a", stage).build(), data={"topic": "owls", "n": 3})

        assert result["a"].data == {"topic": "owls", "keys": ["n", "topic"]}

    def test_data_is_read_only(self):
        errors: list[BaseException] = []

        async def stage(ctx):
            try:
                ctx.data["topic"] = "cats"
            except TypeError as error:
                errors.append(error)
            return {"topic": ctx.data["topic"]}

        result = run(Pipeline().with_stage("a", stage).build(), data={"topic": "owls"})

        assert len(errors) == 1
        assert result["a"].data == {"topic": "owls"}

    def test_data_is_a_copy_made_when_the_run_starts(self):
        data = {"topic": "owls"}

        async def stage(ctx):
            await asyncio.sleep(5)
            return {"topic": ctx.data["topic"], "extra": "extra" in ctx.data}

        async def main():
            task = asyncio.create_task(
                Engine().run(Pipeline().with_stage("a", stage).build(), data=data)
            )
            await asyncio.sleep(1)
            data["topic"] = "cats"
            data["extra"] = True
            return await task

        result = run_virtual(main())

        assert result["a"].data == {"topic": "owls", "extra": False}

    def test_no_data_is_an_empty_mapping(self):
        async def stage(ctx):
            return {"n": len(ctx.data)}

        assert run(Pipeline().with_stage("a", stage).build())["a"].data == {"n": 0}

    def test_every_stage_sees_the_same_data(self):
        async def stage(ctx):
            return {"id": id(ctx.data)}

        result = run(Pipeline().with_stage("a", stage).with_stage("b", stage).build(), data={})

        assert result["a"].data == result["b"].data


class TestStageInputs:
    def _run_with(self, consumer, *, dependencies=("fetch",), optional=()):
        graph = (
            Pipeline()
            .with_stage("fetch", sleeper(1, pages=3, title="Owls"))
            .with_stage("other", noop)
            .with_stage("consume", consumer, dependencies=dependencies, optional=optional)
            .build()
        )
        return run(graph, Engine(fail_fast=False))

    def test_outputs_flow_through_get_from_and_item_access(self):
        async def consume(ctx):
            return {
                "pages": ctx.inputs.get_from("fetch", "pages"),
                "output": dict(ctx.inputs["fetch"]),
            }

        result = self._run_with(consume)

        assert result["consume"].data == {"pages": 3, "output": {"pages": 3, "title": "Owls"}}

    def test_inputs_is_a_mapping_of_completed_dependencies(self):
        seen: dict[str, Any] = {}

        async def consume(ctx):
            inputs = ctx.inputs
            seen.update(
                is_inputs=isinstance(inputs, StageInputs),
                keys=list(inputs),
                len=len(inputs),
                has_fetch="fetch" in inputs,
                has_other="other" in inputs,
                has_int=3 in inputs,
                repr=repr(inputs),
            )

        self._run_with(consume)

        assert seen == {
            "is_inputs": True,
            "keys": ["fetch"],
            "len": 1,
            "has_fetch": True,
            "has_other": False,
            "has_int": False,
            "repr": "<StageInputs of 'consume': ['fetch']>",
        }

    def test_asking_for_a_stage_that_is_not_a_dependency_fails_naming_both(self):
        async def consume(ctx):
            return ctx.inputs.get_from("other", "x", default=None)

        result = self._run_with(consume)

        error = result["consume"].error
        assert result["consume"].status is StageStatus.FAILED
        assert isinstance(error, MissingInputError)
        assert isinstance(error, KeyError)
        assert isinstance(error, StageError)
        assert error.stage == "consume"
        assert error.dependency == "other"
        assert error.key is None
        assert str(error) == (
            "stage 'consume' asked for the output of 'other', which is not one of its "
            "dependencies ('fetch')"
        )

    def test_item_access_to_a_non_dependency_fails_too(self):
        async def consume(ctx):
            return ctx.inputs["other"]

        error = self._run_with(consume)["consume"].error

        assert isinstance(error, MissingInputError)
        assert error.dependency == "other"

    def test_a_stage_without_dependencies_says_so(self):
        async def consume(ctx):
            return ctx.inputs["fetch"]

        error = self._run_with(consume, dependencies=())["consume"].error

        assert isinstance(error, MissingInputError)
        assert "dependencies (none)" in str(error)

    def test_a_missing_key_without_default_fails_listing_the_keys(self):
        async def consume(ctx):
            return {"x": ctx.inputs.get_from("fetch", "summary")}

        error = self._run_with(consume)["consume"].error

        assert isinstance(error, MissingInputError)
        assert error.dependency == "fetch"
        assert error.key == "summary"
        assert "no key 'summary'" in str(error)
        assert "'pages', 'title'" in str(error)

    def test_a_missing_key_returns_the_default(self):
        async def consume(ctx):
            return {
                "summary": ctx.inputs.get_from("fetch", "summary", default="none"),
                "explicit_none": ctx.inputs.get_from("fetch", "summary", default=None),
            }

        result = self._run_with(consume)

        assert result["consume"].data == {"summary": "none", "explicit_none": None}

    def test_a_stored_none_is_returned_rather_than_the_default(self):
        async def produce(ctx):
            return {"value": None}

        async def consume(ctx):
            return {"value": ctx.inputs.get_from("produce", "value", default="default")}

        graph = (
            Pipeline()
            .with_stage("produce", produce)
            .with_stage("consume", consume, dependencies=("produce",))
            .build()
        )

        assert run(graph)["consume"].data == {"value": None}

    def test_item_access_to_an_optional_dependency_that_did_not_complete_fails(self):
        async def failing(ctx):
            raise RuntimeError("down")

        async def consume(ctx):
            return ctx.inputs["flaky"]

        graph = (
            Pipeline()
            .with_stage("flaky", failing)
            .with_stage("consume", consume, dependencies=("flaky",), optional=("flaky",))
            .build()
        )

        error = run(graph, Engine(fail_fast=False))["consume"].error

        assert isinstance(error, MissingInputError)
        assert error.dependency == "flaky"
        assert "did not complete" in str(error)
        assert "default=" in str(error)

    def test_get_from_an_optional_dependency_that_did_not_complete_without_default_fails(self):
        async def failing(ctx):
            raise RuntimeError("down")

        async def consume(ctx):
            return {"x": ctx.inputs.get_from("flaky", "x")}

        graph = (
            Pipeline()
            .with_stage("flaky", failing)
            .with_stage("consume", consume, dependencies=("flaky",), optional=("flaky",))
            .build()
        )

        error = run(graph, Engine(fail_fast=False))["consume"].error

        assert isinstance(error, MissingInputError)
        assert error.key == "x"
        assert "optional dependency 'flaky' did not complete" in str(error)

    def test_an_interceptor_sees_the_same_context_fields(self):
        seen: list[tuple[str, str, int]] = []

        class Spy(BaseInterceptor):
            async def before(self, ctx):
                seen.append((ctx.stage, ctx.idempotency_key, ctx.attempt))

        run(Pipeline().with_stage("a", noop).build(), Engine(interceptors=[Spy()]), run_id="r")

        assert seen == [("a", "r:a", 1)]


class TestMissingInputError:
    def test_str_is_the_message_not_a_repr(self):
        error = MissingInputError("stage 'b': no key 'x'", stage="b", dependency="a", key="x")

        assert str(error) == "stage 'b': no key 'x'"
        assert (error.stage, error.dependency, error.key) == ("b", "a", "x")

    def test_can_be_caught_as_a_key_error(self):
        with pytest.raises(KeyError):
            raise MissingInputError("m", stage="b", dependency="a", key=None)


class TestStageInputsAreReadOnly:
    def test_a_stage_cannot_change_the_output_its_siblings_read(self):
        async def produce(ctx):
            return {"n": 1}

        async def vandal(ctx):
            with pytest.raises(TypeError):
                ctx.inputs["a"]["n"] = 99  # type: ignore[index]
            return {"n": ctx.inputs["a"]["n"]}

        graph = (
            Pipeline()
            .with_stage("a", produce)
            .with_stage("b", vandal, dependencies=("a",))
            .with_stage("c", vandal, dependencies=("a",))
            .build()
        )
        result = run(graph)

        assert result.ok
        assert result["a"].data == {"n": 1}
        assert result["c"].data == {"n": 1}
