"""Run labels: Engine.run(labels=), kept with a durable run's record, read back on resume."""

from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import Any

import pytest

from stageflow import (
    ConfigurationError,
    Engine,
    Pipeline,
    RunContext,
    RunRecord,
    RunResult,
    RunStatus,
    StageCall,
    StageGraph,
    StageSpec,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import run_virtual

from ._helpers import noop

TARGET = {"stageflow.target": "examples/research.py:pipeline", "owner": "ünï ✓"}


class SeenRuns:
    """A run-level hook that keeps the RunContext of every run it wraps."""

    name = "seen-runs"
    priority = 100

    def __init__(self) -> None:
        self.runs: list[RunContext] = []

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        return call

    def wrap_run(self, graph: StageGraph, call: Any) -> Any:
        async def seen(run: RunContext) -> RunResult:
            self.runs.append(run)
            result: RunResult = await call(run)
            return result

        return seen


async def slow(ctx: Any) -> dict[str, int]:
    await asyncio.sleep(10)
    return {"n": 1}


GRAPH = (
    Pipeline("labelled").with_stage("a", noop).with_stage("b", slow, dependencies=("a",)).build()
)


class TestDurableRuns:
    def test_the_store_keeps_the_labels_of_a_run(self) -> None:
        store = MemoryStore()
        seen = SeenRuns()
        result = run_virtual(
            Engine(store=store, interceptors=[seen]).run(GRAPH, run_id="r1", labels=TARGET)
        )
        assert result.ok
        record = asyncio.run(store.get_run("r1"))
        assert record.labels == TARGET
        assert record.status is RunStatus.COMPLETED  # set_status kept them
        assert [r.labels for r in asyncio.run(store.list_runs())] == [TARGET]
        assert seen.runs[0].labels == TARGET
        assert not seen.runs[0].resumed

    def test_the_labels_are_copied_when_the_run_starts(self) -> None:
        store = MemoryStore()
        seen = SeenRuns()
        given = dict(TARGET)

        async def main() -> RunResult:
            running = asyncio.create_task(
                Engine(store=store, interceptors=[seen]).run(GRAPH, run_id="r1", labels=given)
            )
            await asyncio.sleep(1)
            given["later"] = "x"
            return await running

        assert run_virtual(main()).ok
        assert asyncio.run(store.get_run("r1")).labels == TARGET
        assert seen.runs[0].labels == TARGET

    def test_a_resume_reads_the_labels_back_from_the_store(self) -> None:
        store = MemoryStore()

        async def main() -> tuple[RunResult, SeenRuns]:
            running = asyncio.create_task(
                Engine(store=store).run(GRAPH, run_id="r1", labels=TARGET)
            )
            await asyncio.sleep(1)  # "a" done, "b" in flight
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            seen = SeenRuns()
            return await Engine(store=store, interceptors=[seen]).resume("r1", GRAPH), seen

        result, seen = run_virtual(main())
        assert result.ok
        (run,) = seen.runs
        assert run.resumed
        assert dict(run.labels) == TARGET
        assert isinstance(run.labels, MappingProxyType)
        assert asyncio.run(store.get_run("r1")).labels == TARGET

    def test_a_resume_of_a_completed_run_sees_its_labels(self) -> None:
        store = MemoryStore()
        seen = SeenRuns()
        engine = Engine(store=store, interceptors=[seen])
        run_virtual(engine.run(GRAPH, run_id="r1", labels={"k": "v"}))
        assert run_virtual(engine.resume("r1", GRAPH)).ok
        assert [dict(r.labels) for r in seen.runs] == [{"k": "v"}, {"k": "v"}]

    def test_a_run_without_labels_stores_none(self) -> None:
        store = MemoryStore()
        seen = SeenRuns()
        run_virtual(Engine(store=store, interceptors=[seen]).run(GRAPH, run_id="r1"))
        run_virtual(Engine(store=store).run(GRAPH, run_id="r2", labels={}))
        assert asyncio.run(store.get_run("r1")).labels == {}
        assert asyncio.run(store.get_run("r2")).labels == {}
        assert seen.runs[0].labels == {}

    def test_labels_at_the_limits_are_accepted(self) -> None:
        store = MemoryStore()
        labels = {f"{k:0256d}": "v" * 1024 for k in range(64)}
        run_virtual(Engine(store=store).run(GRAPH, run_id="r1", labels=labels))
        assert asyncio.run(store.get_run("r1")).labels == labels


class TestRunsWithoutAStore:
    def test_interceptors_see_the_labels(self) -> None:
        seen = SeenRuns()
        result = run_virtual(Engine(interceptors=[seen]).run(GRAPH, labels=TARGET))
        assert result.ok
        assert seen.runs[0].labels == TARGET

    def test_the_labels_are_read_only(self) -> None:
        seen = SeenRuns()
        run_virtual(Engine(interceptors=[seen]).run(GRAPH, labels=TARGET))
        run_virtual(Engine(interceptors=[seen]).run(GRAPH))
        for run in seen.runs:
            with pytest.raises(TypeError):
                run.labels["k"] = "v"  # type: ignore[index]
        assert seen.runs[1].labels == {}

    def test_a_run_context_built_without_labels_has_none(self) -> None:
        run = RunContext(GRAPH, "r1", {})
        assert run.labels == {}
        given = {"k": "v"}
        labelled = RunContext(GRAPH, "r1", {}, labels=given)
        given["k"] = "changed"
        assert labelled.labels == {"k": "v"}


BAD_LABELS = [
    pytest.param(["stageflow.target=x"], "mapping", id="a-list"),
    pytest.param("k=v", "mapping", id="a-str"),
    pytest.param(42, "mapping", id="an-int"),
    pytest.param({1: "v"}, "key", id="an-int-key"),
    pytest.param({None: "v"}, "key", id="a-None-key"),
    pytest.param({"": "v"}, "key", id="an-empty-key"),
    pytest.param({"k" * 257: "v"}, "key", id="a-key-too-long"),
    pytest.param({"k": 1}, "'k'", id="an-int-value"),
    pytest.param({"k": None}, "'k'", id="a-None-value"),
    pytest.param({"k": b"v"}, "'k'", id="a-bytes-value"),
    pytest.param({"k": "v" * 1025}, "'k'", id="a-value-too-long"),
    pytest.param({f"k{i}": "v" for i in range(65)}, "at most 64", id="too-many"),
]


class TestBadLabels:
    @pytest.mark.parametrize(("labels", "said"), BAD_LABELS)
    def test_are_refused_before_the_run_is_stored(self, labels: Any, said: str) -> None:
        store = MemoryStore()
        with pytest.raises(ConfigurationError) as caught:
            run_virtual(Engine(store=store).run(GRAPH, run_id="r1", labels=labels))
        assert caught.value.field == "labels"
        assert said in str(caught.value)
        assert asyncio.run(store.list_runs()) == [], "nothing may be stored"

    @pytest.mark.parametrize(("labels", "said"), BAD_LABELS)
    def test_are_refused_without_a_store_too(self, labels: Any, said: str) -> None:
        with pytest.raises(ConfigurationError) as caught:
            run_virtual(Engine().run(GRAPH, labels=labels))
        assert caught.value.field == "labels"

    def test_the_error_names_the_bad_key_and_value(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            run_virtual(Engine().run(GRAPH, labels={"good": "v", "bad": 3}))
        assert "'bad'" in str(caught.value)
        assert caught.value.value == 3
        with pytest.raises(ConfigurationError) as caught:
            run_virtual(Engine().run(GRAPH, labels={"good": "v", 7: "v"}))
        assert "7" in str(caught.value)
        assert caught.value.value == 7

    def test_a_long_value_is_cut_short_in_the_message(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            run_virtual(Engine().run(GRAPH, labels={"k": "v" * 5000}))
        assert len(str(caught.value)) < 300
        assert "5000 characters" in str(caught.value)


class TestRunRecord:
    def test_labels_default_to_empty_and_count_in_equality_not_in_the_hash(self) -> None:
        plain = RunRecord("r1", "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0)
        labelled = RunRecord("r1", "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0, labels={"k": "v"})
        assert plain.labels == {}
        assert plain != labelled
        assert labelled == RunRecord(
            "r1", "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0, labels={"k": "v"}
        )
        assert hash(plain) == hash(labelled)  # hashable, though a dict is not

    def test_the_memory_store_hands_out_copies(self) -> None:
        store = MemoryStore()
        record = RunRecord("r1", "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0, labels={"k": "v"})
        asyncio.run(store.create_run(record))
        got = asyncio.run(store.get_run("r1"))
        got.labels["k"] = "changed"  # type: ignore[index]
        asyncio.run(store.list_runs())[0].labels["k"] = "changed"  # type: ignore[index]
        assert asyncio.run(store.get_run("r1")).labels == {"k": "v"}
