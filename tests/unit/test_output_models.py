"""with_stage(output=Model): outputs checked against a declared model; storable before a run."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import socket
from typing import Any

import pydantic
import pytest

from stageflow import (
    CodecError,
    Engine,
    InvalidOptionError,
    InvalidOutputError,
    Pipeline,
    RetryPolicy,
    StageOutput,
    UnknownRunError,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import run_virtual


class Summary(pydantic.BaseModel):
    text: str
    words: int
    at: dt.datetime | None = None


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


@dataclasses.dataclass
class Located:
    where: Point
    tags: tuple[str, ...] = ()


class Conn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    sock: socket.socket


@dataclasses.dataclass
class ByNumber:
    names: dict[int, str]


@dataclasses.dataclass
class _Gone:
    v: int


Renamed = _Gone  # its recorded path, ...:_Gone, finds nothing once the name is gone
del _Gone


@dataclasses.dataclass
class Outer:
    inner: Renamed  # type: ignore[valid-type]


def returning(value: Any) -> Any:
    async def stage(ctx):
        await asyncio.sleep(1)
        return value

    return stage


def run_one(value: Any, model: type, **options: Any) -> Any:
    graph = Pipeline().with_stage("s", returning(value), output=model, **options).build()
    return run_virtual(Engine().run(graph))


class TestTheOption:
    @pytest.mark.parametrize(
        "bad", [42, "Summary", Summary(text="a", words=1), Point(1), dict, int, object]
    )
    def test_anything_but_a_model_or_dataclass_type_is_refused(self, bad):
        with pytest.raises(InvalidOptionError) as caught:
            Pipeline().with_stage("s", returning({}), output=bad)
        assert caught.value.option == "output"
        assert caught.value.stage == "s"
        assert "a pydantic model class or a dataclass type" in str(caught.value)

    def test_the_spec_keeps_it_and_none_is_the_default(self):
        graph = (
            Pipeline()
            .with_stage("a", returning({}), output=Summary)
            .with_stage("b", returning({}))
            .build()
        )
        assert graph["a"].output is Summary
        assert graph["b"].output is None

    def test_a_typo_is_suggested(self):
        with pytest.raises(InvalidOptionError, match="did you mean 'output'"):
            Pipeline().with_stage("s", returning({}), outptu=Summary)  # type: ignore[call-arg]


class TestAtRunTime:
    @pytest.mark.parametrize("model", [Summary, Point])
    def test_a_matching_output_passes_unchanged(self, model):
        value = {"text": "hi", "words": 1} if model is Summary else {"x": 1}
        result = run_one(value, model)
        assert result.ok
        assert result["s"].data == value

    @pytest.mark.parametrize(
        ("model", "value", "said"),
        [
            (Summary, {"text": "hi", "words": "1"}, "output['words'] is str '1'"),
            (Summary, {"text": "hi"}, "field 'words' missing"),
            (Summary, {"text": "hi", "words": 1, "extra": 2}, "no field 'extra'"),
            (Summary, {"text": "hi", "words": 1, "at": "2026-01-01"}, "output['at'] is str"),
            (Point, {"x": 1.5}, "output['x'] is float 1.5"),
            (Point, {}, "field 'x' missing"),
            (Located, {"where": Point(1), "tags": ["a"]}, "output['tags'] is list"),
            (Located, {"where": {"x": 1}}, "output['where'] is dict"),
        ],
    )
    def test_a_mismatch_fails_the_stage_naming_model_and_field(self, model, value, said):
        result = run_one(value, model, retry=RetryPolicy(attempts=3, backoff="fixed", base=0))
        assert not result.ok
        error = result["s"].error
        assert isinstance(error, InvalidOutputError)
        assert error.stage == "s"
        assert f"declared model {model.__qualname__}" in str(error)
        assert said in str(error)
        assert "errors.pydantic.dev" not in str(error)
        assert result["s"].attempts == 1  # a mismatch is never retried

    def test_an_instance_of_the_model_gives_its_fields(self):
        result = run_one(Located(Point(1, 2), ("a",)), Located)
        assert result.ok
        assert result["s"].data == {"where": Point(1, 2), "tags": ("a",)}

    def test_an_instance_of_another_model_is_no_output(self):
        result = run_one(Point(1), Summary)
        assert isinstance(result["s"].error, InvalidOutputError)

    def test_a_skip_or_a_failure_is_not_checked(self):
        assert run_one(StageOutput.skip("nothing"), Summary)["s"].status == "skipped"
        assert run_one(StageOutput.fail("no"), Summary)["s"].status == "failed"
        assert run_one(StageOutput(data={"text": "a", "words": 2}), Summary).ok

    def test_none_is_an_empty_output_checked_like_any(self):
        @dataclasses.dataclass
        class Nothing:
            pass

        assert run_one(None, Nothing).ok
        assert isinstance(run_one(None, Point)["s"].error, InvalidOutputError)

    def test_a_sync_stage_is_checked_too(self):
        def sync(ctx):
            return {"x": "1"}

        graph = Pipeline().with_stage("s", sync, output=Point).build()
        result = run_virtual(Engine().run(graph))
        assert isinstance(result["s"].error, InvalidOutputError)


class TestStorableBeforeADurableRun:
    @pytest.mark.parametrize(
        ("model", "field", "type_said"),
        [
            (Conn, "the output of stage 's'['sock']", "socket.socket"),
            (ByNumber, "the output of stage 's'['names']", "dict[int, str]"),
            (Outer, "the output of stage 's'['inner']", "cannot be imported back"),
        ],
    )
    def test_an_unstorable_field_is_refused_before_anything_is_written(
        self, model, field, type_said
    ):
        calls = []

        async def stage(ctx):
            calls.append(1)
            return {}

        graph = Pipeline().with_stage("ok", returning({})).with_stage("s", stage, output=model)
        store = MemoryStore()
        with pytest.raises(CodecError) as caught:
            run_virtual(Engine(store=store).run(graph.build(), run_id="r1"))
        error = caught.value
        assert error.stage == "s"
        assert error.field == field
        assert field in str(error)
        assert type_said in str(error)
        assert calls == []
        with pytest.raises(UnknownRunError):
            run_virtual(store.get_run("r1"))

    def test_a_resume_checks_too(self):
        store = MemoryStore()
        graph = Pipeline().with_stage("s", returning({"names": {}}), output=ByNumber).build()
        with pytest.raises(CodecError):
            run_virtual(Engine(store=store).resume("r1", graph))

    def test_without_a_store_nothing_is_stored_so_nothing_is_refused(self):
        result = run_one({"names": {1: "a"}}, ByNumber)
        assert result.ok

    def test_a_storable_model_is_stored_and_restored_faithfully(self):
        store = MemoryStore()
        when = dt.datetime(2026, 1, 1)
        value = {"text": "hi", "words": 1, "at": when}
        graph = Pipeline().with_stage("s", returning(value), output=Summary).build()
        located = Pipeline().with_stage("s", returning(Located(Point(1))), output=Located)

        async def main():
            first = await Engine(store=store).run(graph, run_id="r1")
            again = await Engine(store=store).resume("r1", graph)
            other = await Engine(store=store).run(located.build(), run_id="r2")
            return first, again, other

        first, again, other = run_virtual(main())
        assert first.ok
        assert again["s"].data == value
        assert other["s"].data == {"where": Point(1), "tags": ()}
