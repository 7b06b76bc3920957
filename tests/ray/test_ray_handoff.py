"""Outputs of remote stages handed on to remote dependents as Ray objects: the driver
never materialises them, unless it reads them (a local stage, a checkpoint, the result).

Each intermediate is a ``Tripwire``: every process that unpickles it writes its pid to a
file. The driver is this process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from stageflow import Engine, OutputRef, Pipeline, StageOutput, StageStatus
from stageflow.adapters.ray import RayRunner
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import InvalidOutputError

from . import stages

pytestmark = pytest.mark.usefixtures("ray_cluster")


def unpickled_in(trip: Path) -> list[int]:
    return [int(line) for line in trip.read_text().split()] if trip.exists() else []


@pytest.mark.parametrize("size", [100, 4_000_000], ids=["inlined", "object-store"])
def test_a_remote_output_reaches_remote_dependents_without_the_driver(
    tmp_path: Path, size: int
) -> None:
    trip = tmp_path / "trip"
    graph = (
        Pipeline("handoff")
        .with_stage("produce", stages.produce, runner="ray")
        .with_stage("middle", stages.passes, dependencies=("produce",), runner="ray")
        .with_stage("consume", stages.consume, dependencies=("produce", "middle"), runner="ray")
        .build()
    )
    result = asyncio.run(Engine(runners={"ray": RayRunner()}).run(
        graph, {"trip": str(trip), "size": size}))  # fmt: skip
    assert result.ok, result
    assert result["consume"].data["size"] == size
    pids = unpickled_in(trip)
    assert os.getpid() not in pids
    assert result["consume"].data["pid"] in pids  # it was there, where it was read
    produced = result["produce"].data
    assert isinstance(produced, OutputRef)
    assert not produced.fetched
    assert produced["blob"].payload == b"x" * size  # the result fetches it when read
    assert unpickled_in(trip).count(os.getpid()) == 1


def test_a_local_dependent_gets_the_output_fetched_once(tmp_path: Path) -> None:
    trip = tmp_path / "trip"
    graph = (
        Pipeline("handoff")
        .with_stage("produce", stages.produce, runner="ray")
        .with_stage("consume", stages.consume, dependencies=("produce",))
        .with_stage("remote", stages.consume, dependencies=("produce",), runner="ray")
        .build()
    )
    result = asyncio.run(Engine(runners={"ray": RayRunner()}).run(
        graph, {"trip": str(trip), "size": 10}))  # fmt: skip
    assert result.ok, result
    assert result["consume"].data == {"size": 10, "pid": os.getpid()}
    pids = unpickled_in(trip)
    assert pids.count(os.getpid()) == 1
    assert result["remote"].data["pid"] in pids


def test_a_durable_run_stores_remote_outputs_and_a_resume_restores_them(tmp_path: Path) -> None:
    store = SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    graph = (
        Pipeline("durable-handoff")
        .with_stage("where", stages.where, runner="ray")
        .with_stage("square", stages.square, dependencies=("where",), runner="ray")
        .build()
    )
    engine = Engine(store=store, runners={"ray": RayRunner()})

    async def main() -> Any:
        result = await engine.run(graph, {"n": 4}, run_id="handoff-1")
        return result, await store.stage_records("handoff-1")

    result, records = asyncio.run(main())
    assert result["square"].data["square"] == 16
    assert '"n":4' in records["where"].output.replace(" ", "")


def skips(ctx: Any) -> StageOutput:
    return StageOutput.skip(f"skipped at {ctx.stage}")


def returns_a_list(ctx: Any) -> Any:
    return [1, 2]


def test_how_a_remote_stage_ended_comes_back_with_its_reason() -> None:
    graph = (
        Pipeline("ended")
        .with_stage("skips", skips, runner="ray")
        .with_stage("bad", returns_a_list, runner="ray")
        .build()
    )
    result = asyncio.run(Engine(runners={"ray": RayRunner()}, fail_fast=False).run(graph))
    assert result["skips"].status is StageStatus.SKIPPED
    assert result["skips"].reason == "skipped at skips"
    assert isinstance(result["bad"].error, InvalidOutputError)
    assert "'bad' returned list" in str(result["bad"].error)


@pytest.mark.parametrize(("put_above", "pickled"), [(1000, 1), (10_000_000, 1 + 3)],
                         ids=["put-once", "sent-each-call"])  # fmt: skip
def test_large_run_data_is_put_in_the_object_store_once(
    tmp_path: Path, put_above: int, pickled: int
) -> None:
    graph = Pipeline("data")
    for name in ("a", "b", "c"):
        graph = graph.with_stage(name, stages.data_size, runner="ray")
    blob = stages.Tripwire(str(tmp_path / "trip"), b"x" * 200_000)
    before = stages.Tripwire.pickled
    engine = Engine(runners={"ray": RayRunner(put_above=put_above)})
    result = asyncio.run(engine.run(graph.build(), {"blob": blob}))
    assert result.ok, result
    assert {result[n].data["size"] for n in "abc"} == {200_000}
    assert stages.Tripwire.pickled - before == pickled  # in the driver: measured (and put)


def test_a_large_output_of_the_driver_is_put_once_for_all_its_remote_dependents(
    tmp_path: Path,
) -> None:
    graph = Pipeline("fan-out").with_stage("produce", stages.produce)  # in the driver
    for name in ("a", "b", "c"):
        graph = graph.with_stage(name, stages.consume, dependencies=("produce",), runner="ray")
    before = stages.Tripwire.pickled
    data = {"trip": str(tmp_path / "trip"), "size": 200_000}
    result = asyncio.run(Engine(runners={"ray": RayRunner()}).run(graph.build(), data))
    assert result.ok, result
    assert {result[n].data["size"] for n in "abc"} == {200_000}
    assert stages.Tripwire.pickled - before == 1


@pytest.mark.parametrize(
    ("size", "inline_below", "kept"),
    [(1000, 100_000, False), (200_000, 100_000, True), (1000, 0, True)],
    ids=["small-comes-back", "large-stays", "all-stay"],
)
def test_small_plain_outputs_come_back_with_the_call_others_stay(
    size: int, inline_below: int, kept: bool
) -> None:
    graph = (
        Pipeline("sizes")
        .with_stage("sized", stages.sized, runner="ray")
        .with_stage("after", stages.passes_text, dependencies=("sized",), runner="ray")
        .build()
    )
    engine = Engine(runners={"ray": RayRunner(inline_below=inline_below)})
    result = asyncio.run(engine.run(graph, {"size": size}))
    assert result.ok, result
    data = result["sized"].data
    assert isinstance(data, OutputRef) is kept
    assert len(data["text"]) == size
    assert data["nested"] == {"k": b"v"}
    assert result["after"].data == {"length": size}


def test_a_runner_keeps_what_it_put_for_its_last_puts_only() -> None:
    import ray

    runner = RayRunner(put_above=0)
    outputs = [{"n": i} for i in range(40)]
    refs = [runner._put(output, output) for output in outputs]
    assert all(isinstance(ref, ray.ObjectRef) for ref in refs)
    assert runner._put(outputs[-1], outputs[-1]) is refs[-1]  # the same object: once
    assert len(runner._puts) == 16
    assert runner._put(outputs[0], outputs[0]) is not refs[0]  # forgotten: put again
