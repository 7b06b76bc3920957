"""Outputs left where a runner ran the call (``OutputRef``): handed on between stages of
the same runner without the engine fetching them, and fetched by the engine exactly where
it reads them — a stage elsewhere, a ``when=``, a map, an ``output=`` model, a checkpoint,
a stage nothing depends on.

``HoldingRunner`` is a real runner of the port: each call's context crosses a pickle
boundary, the call runs in a thread of its own, and what the stage returned stays in the
runner's own store; the engine gets a reference (``Held``). A call given references the
same runner holds reads them from that store, as a Ray task reads its arguments from the
object store. ``fetches`` counts what the engine fetched (awaited), ``blocking`` what was
read before being fetched (a blocking read), per stage.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from stageflow import (
    Engine,
    OutputRef,
    Pipeline,
    RunStatus,
    StageContext,
    StageOutput,
    StageSpec,
    StageStatus,
    detach,
    run_detached,
)
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import InvalidOutputError
from stageflow.testing import run_virtual


class Held(OutputRef):
    __slots__ = ("key",)

    def __init__(self, runner: HoldingRunner, key: int) -> None:
        super().__init__(runner)
        self.key = key

    def _runner(self) -> HoldingRunner:
        assert isinstance(self.runner, HoldingRunner)
        return self.runner

    async def load(self) -> Mapping[str, Any]:
        runner = self._runner()
        runner.fetches[runner.stage_of[self.key]] += 1
        await asyncio.sleep(0)
        return runner.store[self.key]

    def load_blocking(self) -> Mapping[str, Any]:
        runner = self._runner()
        runner.blocking[runner.stage_of[self.key]] += 1
        return runner.store[self.key]


class HoldingRunner:
    """Keeps what its calls return; the engine gets references."""

    def __init__(self) -> None:
        self.store: dict[int, dict[str, Any]] = {}
        self.stage_of: dict[int, str] = {}
        self.fetches: Counter[str] = Counter()
        self.blocking: Counter[str] = Counter()
        self.handed: list[tuple[str, str]] = []  # (from, to): read from the store there

    def bind(self, spec: StageSpec, call: Any) -> Any:
        stage = spec.stage

        async def holding(ctx: StageContext) -> Any:
            detached = await detach(ctx)
            outputs = detached.inputs._outputs
            for dependency, output in list(outputs.items()):  # type: ignore[attr-defined]
                if isinstance(output, Held) and output.runner is self:
                    self.handed.append((dependency, ctx.stage))
                    outputs[dependency] = self.store[output.key]  # type: ignore[index]
            crossed = pickle.dumps(detached)
            result = await asyncio.to_thread(lambda: run_detached(stage, pickle.loads(crossed)))
            out = result.output
            status, reason = StageStatus.COMPLETED, None
            if isinstance(out, StageOutput):
                status, reason, out = out.status, out.reason, out.data
            key = len(self.store)
            self.store[key] = dict(out or {})
            self.stage_of[key] = ctx.stage
            return StageOutput(status, Held(self, key), reason)

        return holding


def one_more(ctx: Any) -> dict[str, Any]:
    return {"n": sum(ctx.inputs.get_from(d, "n") for d in ctx.inputs) + 1}


def start(ctx: Any) -> dict[str, Any]:
    return {"n": 1, "items": [1, 2, 3]}


def chain(*names: str, runner: object = "held", **options: Any) -> Pipeline:
    pipeline = Pipeline("held").with_stage(names[0], start, runner="held")
    for before, name in itertools.pairwise(names):
        pipeline = pipeline.with_stage(name, one_more, dependencies=(before,), runner=runner,
                                       **options)  # fmt: skip
        runner, options = "held", {}
    return pipeline


def test_outputs_are_handed_on_between_stages_of_one_runner_never_fetched() -> None:
    held = HoldingRunner()
    result = run_virtual(Engine(runners={"held": held}).run(chain("a", "b", "c").build()))
    assert result.ok, result
    assert held.handed == [("a", "b"), ("b", "c")]
    assert held.fetches == Counter({"c": 1})  # the result's stage: nothing depends on it
    assert held.blocking == Counter()
    assert result["c"].data == {"n": 3}


def test_a_handed_output_in_the_result_is_fetched_when_read() -> None:
    held = HoldingRunner()
    result = run_virtual(Engine(runners={"held": held}).run(chain("a", "b").build()))
    data = result["a"].data
    assert isinstance(data, OutputRef)
    assert not data.fetched
    assert data["n"] == 1
    assert dict(data) == {"n": 1, "items": [1, 2, 3]}
    assert held.blocking == Counter({"a": 1})  # once: kept
    assert data.fetched
    assert "n" in data
    assert len(data) == 2
    assert "not fetched" not in repr(data)


def test_a_dependent_in_the_engine_gets_the_output_fetched_before_its_call() -> None:
    held = HoldingRunner()
    graph = chain("a", "b", runner=None).build()
    result = run_virtual(Engine(runners={"held": held}).run(graph))
    assert result["b"].data == {"n": 2}
    assert held.fetches == Counter({"a": 1})
    assert held.blocking == Counter()


def test_a_dependent_on_another_runner_gets_it_fetched() -> None:
    held, other = HoldingRunner(), HoldingRunner()
    graph = chain("a", "b", runner="other").build()
    result = run_virtual(Engine(runners={"held": held, "other": other}).run(graph))
    assert result["b"].data["n"] == 2
    assert held.fetches == Counter({"a": 1})
    assert held.handed == []


def test_a_dependent_with_a_condition_gets_it_fetched_for_the_condition() -> None:
    held = HoldingRunner()
    graph = chain("a", "b", when=lambda ctx: ctx.inputs.get_from("a", "n") == 1).build()
    result = run_virtual(Engine(runners={"held": held}).run(graph))
    assert result["b"].status is StageStatus.COMPLETED
    assert held.fetches["a"] == 1
    assert held.blocking == Counter()


def item_double(ctx: Any) -> dict[str, Any]:
    return {"double": ctx.item * 2}


def test_a_map_over_the_output_gets_it_fetched() -> None:
    held = HoldingRunner()
    graph = (
        Pipeline("held")
        .with_stage("a", start, runner="held")
        .with_map("doubled", item_double, over="a.items", dependencies=("a",), runner="held")
        .build()
    )
    result = run_virtual(Engine(runners={"held": held}).run(graph))
    assert result.ok, result
    assert [r["double"] for r in result["doubled"].data["results"]] == [2, 4, 6]
    assert held.fetches["a"] == 1
    assert held.blocking == Counter()


class Counted(BaseModel):
    n: int
    items: list[int]


def test_a_declared_output_model_gets_the_output_fetched_and_checked() -> None:
    held = HoldingRunner()
    graph = Pipeline("checked").with_stage("a", start, runner="held", output=Counted)
    graph = graph.with_stage("b", one_more, dependencies=("a",), runner="held").build()
    result = run_virtual(Engine(runners={"held": held}).run(graph))
    assert result.ok
    assert held.fetches["a"] == 1
    assert held.blocking == Counter()

    def wrong(ctx: Any) -> dict[str, Any]:
        return {"n": "three", "items": []}

    bad = Pipeline("checked").with_stage("a", wrong, runner="held", output=Counted).build()
    result = run_virtual(Engine(runners={"held": HoldingRunner()}).run(bad))
    assert isinstance(result["a"].error, InvalidOutputError)


def test_a_checkpoint_fetches_the_output_to_store_it_and_a_resume_restores_it(
    tmp_path: Path,
) -> None:
    held = HoldingRunner()
    store = SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    engine = Engine(store=store, runners={"held": held})
    graph = chain("a", "b", "c").build()

    async def main() -> tuple[Any, Any]:
        first = await engine.run(graph, run_id="r1")
        records = await store.stage_records("r1")
        return first, records

    first, records = asyncio.run(main())
    assert first.ok, first
    assert held.fetches == Counter({"a": 1, "b": 1, "c": 1})
    assert held.blocking == Counter()
    assert held.handed == [("a", "b"), ("b", "c")]  # fetched to be stored, still handed on
    assert '"items"' in records["a"].output
    assert records["c"].status is StageStatus.COMPLETED


def test_a_stage_s_status_and_reason_come_with_the_reference() -> None:
    def skips(ctx: Any) -> StageOutput:
        return StageOutput.skip("nothing to do")

    held = HoldingRunner()
    graph = Pipeline("held").with_stage("a", skips, runner="held").build()
    result = run_virtual(Engine(runners={"held": held}).run(graph))
    assert result.status is RunStatus.COMPLETED
    assert result["a"].status is StageStatus.SKIPPED
    assert result["a"].reason == "nothing to do"


def test_a_pickled_reference_is_its_data() -> None:
    held = HoldingRunner()
    result = run_virtual(Engine(runners={"held": held}).run(chain("a", "b").build()))
    assert pickle.loads(pickle.dumps(result["a"].data)) == {"n": 1, "items": [1, 2, 3]}


def test_an_output_ref_needs_both_loads() -> None:
    with pytest.raises(TypeError, match="abstract"):
        OutputRef(None)  # type: ignore[abstract]


def test_an_analysis_of_a_handed_output_fetches_it_without_blocking() -> None:
    from stageflow import AssistanceInterceptor
    from stageflow.testing import ScriptedAssistant

    held, assistant = HoldingRunner(), ScriptedAssistant()
    engine = Engine(runners={"held": held}, interceptors=[AssistanceInterceptor(assistant)])
    graph = Pipeline("held").with_stage("a", start, runner="held", assist="analyze")
    graph = graph.with_stage("b", one_more, dependencies=("a",), runner="held").build()
    result = run_virtual(engine.run(graph))
    assert result.ok, result
    ((mode, _, sent),) = assistant.calls
    assert (mode, sent["output"]) == ("analyze", {"n": 1, "items": [1, 2, 3]})
    assert held.fetches["a"] == 1
    assert held.blocking == Counter()
    assert held.handed == [("a", "b")]  # still handed on
