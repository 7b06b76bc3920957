"""The typed API at run time: get_from(type=), the stage types, with_stage's two signatures.

What a type checker says about user code is tested in tests/typing; this file tests
what the same API does when it runs.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any, TypedDict

import pytest

import stageflow
from stageflow import (
    ConfigurationError,
    Engine,
    InputTypeError,
    Interceptor,
    MissingInputError,
    Pipeline,
    Priority,
    Stage,
    StageContext,
    StageSpec,
    StageStatus,
)
from stageflow._spec import OPTIONS

from ._helpers import run

ROOT = Path(__file__).resolve().parents[2]


class Page(TypedDict):
    url: str
    words: int


async def fetch(ctx: StageContext) -> dict[str, Any]:
    return {"pages": 3, "ratio": 2, "title": "Owls", "page": {"url": "u", "words": 9}, "flag": True}


def _consume(asked: dict[str, Any]) -> dict[str, Any]:
    """Run ``consume`` (depending on fetch) that calls get_from with ``asked``; its result."""
    seen: dict[str, Any] = {}

    async def consume(ctx: StageContext) -> None:
        seen["value"] = ctx.inputs.get_from("fetch", **asked)

    graph = (
        Pipeline()
        .with_stage("fetch", fetch)
        .with_stage("consume", consume, dependencies=("fetch",))
        .build()
    )
    result = run(graph, Engine(fail_fast=False))
    return {"result": result["consume"], **seen}


class TestGetFromWithAType:
    @pytest.mark.parametrize(
        ("key", "type_", "expected"),
        [
            ("pages", int, 3),
            ("title", str, "Owls"),
            ("ratio", float, 2),  # an int passes for a float, as type checkers allow
            ("flag", bool, True),
            ("flag", int, True),  # bool is an int, for isinstance and type checkers alike
            ("page", dict, {"url": "u", "words": 9}),
            ("page", dict[str, Any], {"url": "u", "words": 9}),  # the outer class
            ("page", Page, {"url": "u", "words": 9}),  # a TypedDict: its required keys
            ("title", int | str, "Owls"),
        ],
    )
    def test_a_value_of_the_type_is_returned_as_it_is(
        self, key: str, type_: Any, expected: object
    ) -> None:
        out = _consume({"key": key, "type": type_})
        assert out["result"].status is StageStatus.COMPLETED
        assert out["value"] == expected

    def test_a_value_of_another_type_fails_naming_stage_key_and_both_types(self) -> None:
        out = _consume({"key": "title", "type": int})

        error = out["result"].error
        assert isinstance(error, InputTypeError)
        assert isinstance(error, MissingInputError)
        assert isinstance(error, TypeError)
        assert (error.stage, error.dependency, error.key) == ("consume", "fetch", "title")
        assert (error.expected, error.actual) == ("int", "str")
        assert str(error) == (
            "stage 'consume': the output of 'fetch' has 'title' = 'Owls', a str, not the int "
            "asked for by get_from(..., type=int)"
        )

    def test_a_bool_is_no_float_and_a_float_no_int(self) -> None:
        assert isinstance(_consume({"key": "flag", "type": float})["result"].error, InputTypeError)
        assert isinstance(_consume({"key": "ratio", "type": str})["result"].error, InputTypeError)

    def test_a_typed_dict_without_its_required_keys_fails(self) -> None:
        class Other(TypedDict):
            url: str
            lines: int

        error = _consume({"key": "page", "type": Other})["result"].error
        assert isinstance(error, InputTypeError)
        assert error.expected.endswith("Other")
        assert error.actual == "dict"

    def test_a_parameterized_type_is_named_as_written(self) -> None:
        error = _consume({"key": "title", "type": list[int]})["result"].error
        assert isinstance(error, InputTypeError)
        assert error.expected == "list[int]"
        assert "type=list[int])" in str(error)

    def test_a_long_value_is_shortened_in_the_message(self) -> None:
        seen: dict[str, Any] = {}

        async def long(ctx: StageContext) -> dict[str, str]:
            return {"text": "x" * 500}

        async def consume(ctx: StageContext) -> None:
            try:
                ctx.inputs.get_from("long", "text", type=int)
            except InputTypeError as error:
                seen["message"] = str(error)

        graph = Pipeline().with_stage("long", long).with_stage("c", consume, dependencies=("long",))
        run(graph.build())
        assert "'xxx" in seen["message"]
        assert "..., a str" in seen["message"]
        assert len(seen["message"]) < 200

    def test_a_missing_value_is_still_a_missing_input_error(self) -> None:
        error = _consume({"key": "nope", "type": int})["result"].error
        assert type(error) is MissingInputError
        assert error.key == "nope"

    def test_a_default_is_returned_unchecked(self) -> None:
        out = _consume({"key": "nope", "default": "none", "type": int})
        assert out["value"] == "none"

    @pytest.mark.parametrize("bad", ["int", 3, stageflow.Stage.__call__])
    def test_a_type_that_isinstance_cannot_check_is_refused(self, bad: object) -> None:
        for key in ("pages", "nope"):  # whether or not the value is there
            error = _consume({"key": key, "default": 0, "type": bad})["result"].error
            assert isinstance(error, ConfigurationError)
            assert error.field == "type"
            assert "type must be a class that isinstance() can check" in str(error)


class TestStageTypes:
    def test_the_stage_forms_are_public_and_documented(self) -> None:
        for name in ("StageFunction", "SyncStageFunction", "StageLike", "StageReturn"):
            assert name in stageflow.__all__

    def test_an_object_with_execute_is_a_stage(self) -> None:
        class Shout:
            def execute(self, ctx: StageContext) -> dict[str, str]:
                return {"text": "HI"}

        assert isinstance(Shout(), Stage)
        assert not isinstance(fetch, Stage)


class TestInterceptorProtocol:
    def test_a_class_with_a_priority_class_attribute_is_an_interceptor(self) -> None:
        class Audit:
            name = "audit"
            priority = Priority.USER

            def wrap(self, spec: StageSpec, call: Any) -> Any:
                return call

        assert isinstance(Audit(), Interceptor)
        run(Pipeline().with_stage("a", fetch).build(), Engine(interceptors=[Audit()]))

    def test_name_and_priority_stay_required(self) -> None:
        class NoPriority:
            name = "x"

            def wrap(self, spec: StageSpec, call: Any) -> Any:
                return call

        assert not isinstance(NoPriority(), Interceptor)


def _with_stage_definitions() -> dict[str, ast.FunctionDef]:
    """with_stage's two definitions in _pipeline.py: "typed" (TYPE_CHECKING) and "runtime"."""
    tree = ast.parse((ROOT / "stageflow" / "_pipeline.py").read_text(encoding="utf-8"))
    found: dict[str, ast.FunctionDef] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for branch, body in (("typed", node.body), ("runtime", node.orelse)):
                for item in body:
                    if isinstance(item, ast.FunctionDef) and item.name == "with_stage":
                        found[branch] = item
    return found


class TestWithStageSignatures:
    def test_the_typed_and_the_runtime_signatures_take_the_same_arguments(self) -> None:
        found = _with_stage_definitions()
        assert set(found) == {"typed", "runtime"}
        typed, runtime = found["typed"].args, found["runtime"].args
        assert [a.arg for a in typed.args] == [a.arg for a in runtime.args]
        assert [a.arg for a in typed.kwonlyargs] == [a.arg for a in runtime.kwonlyargs]
        dump = [ast.unparse(d) for d in typed.defaults] + [
            ast.unparse(d) for d in typed.kw_defaults if d is not None
        ]
        assert dump == [ast.unparse(d) for d in runtime.defaults] + [
            ast.unparse(d) for d in runtime.kw_defaults if d is not None
        ]
        assert typed.kwarg is None  # an unknown option is a type error
        assert runtime.kwarg is not None
        assert runtime.kwarg.arg == "unknown"

    def test_the_options_are_those_the_did_you_mean_knows(self) -> None:
        runtime = inspect.signature(Pipeline.with_stage).parameters
        keyword_only = [n for n, p in runtime.items() if p.kind is p.KEYWORD_ONLY]
        assert tuple(keyword_only) == OPTIONS

    def test_an_unknown_option_still_gets_a_did_you_mean_at_run_time(self) -> None:
        with pytest.raises(stageflow.InvalidOptionError, match="did you mean 'timeout'"):
            Pipeline().with_stage("a", fetch, timout=5)  # type: ignore[call-arg]

    def test_help_shows_the_whole_docstring(self) -> None:
        doc = Pipeline.with_stage.__doc__ or ""
        assert "Args:" in doc
        assert "dependencies:" in doc
