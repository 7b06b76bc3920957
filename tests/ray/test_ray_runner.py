"""RayRunner on a real local Ray cluster: stages' calls in Ray workers, the scheduler, the
interceptors and the store in the driver (this process)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from stageflow import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Engine,
    ModelChain,
    Pipeline,
    RemoteError,
    RetryPolicy,
    RunStatus,
    StageTimeoutError,
    WorkerLostError,
)
from stageflow.adapters.ray import RayRunner
from stageflow.testing import run_virtual

from . import stages

pytestmark = pytest.mark.usefixtures("ray_cluster")


def engine(**settings: Any) -> Engine:
    return Engine(runners={"ray": RayRunner(cancel_grace=settings.pop("grace", 1.0))},
                  **settings)  # fmt: skip


def test_a_stage_runs_in_a_worker_and_its_output_comes_back() -> None:
    graph = (
        Pipeline("p")
        .with_stage("where", stages.where, runner="ray")
        .with_stage("square", stages.square, dependencies=("where",), runner="ray")
        .with_stage("here", stages.where, dependencies=("square",))
        .build()
    )
    result = asyncio.run(engine().run(graph, data={"n": 4}))
    assert result.status is RunStatus.COMPLETED
    assert result["square"].data["square"] == 16
    assert result["where"].data["pid"] != os.getpid()  # a Ray worker
    assert result["square"].data["pid"] != os.getpid()
    assert result["here"].data["pid"] == os.getpid()  # no runner: in the driver


def test_resources_are_the_task_s_options() -> None:
    graph = (
        Pipeline("p")
        .with_stage(
            "a",
            stages.assigned,
            runner="ray",
            resources={"num_cpus": 1, "resources": {"special": 1}},
        )
        .build()
    )
    result = asyncio.run(engine().run(graph))
    assert result["a"].data["resources"] == {"CPU": 1.0, "special": 1.0}


def test_stages_of_one_function_each_get_their_own_resources() -> None:
    graph = (
        Pipeline("p")
        .with_stage("a", stages.assigned, runner="ray", resources={"num_cpus": 1})
        .with_stage(
            "b",
            stages.assigned,
            runner="ray",
            dependencies=("a",),
            resources={"num_cpus": 0.5, "resources": {"special": 0.5}},
        )
        .with_stage("c", stages.assigned, runner="ray", dependencies=("b",))
        .build()
    )
    result = asyncio.run(engine().run(graph))
    assert result["a"].data["resources"] == {"CPU": 1.0}
    assert result["b"].data["resources"] == {"CPU": 0.5, "special": 0.5}
    assert result["c"].data["resources"] == {"CPU": 1.0}  # Ray's default


def test_a_resource_ray_does_not_know_is_refused_naming_the_stage() -> None:
    graph = Pipeline("p").with_stage("a", stages.where, runner="ray",
                                     resources={"num_cpu": 1}).build()  # fmt: skip
    with pytest.raises(ConfigurationError, match="stage 'a': resources\\['num_cpu'\\]") as e:
        asyncio.run(engine().run(graph))
    assert e.value.field == "resources"


def test_a_map_s_items_each_run_in_a_worker() -> None:
    graph = (
        Pipeline("p").with_stage("items", stages.items)
        .with_map("double", stages.doubled, over="items.items", dependencies=("items",),
                  runner="ray", max_parallel=2)
        .build()
    )  # fmt: skip
    result = asyncio.run(engine().run(graph))
    assert [r["v"] for r in result["double"].data["results"]] == [2, 4, 6, 8]
    assert all(r["pid"] != os.getpid() for r in result["double"].data["results"])


def test_usage_reported_in_a_worker_reaches_the_ledger_and_the_budget() -> None:
    graph = Pipeline("p").with_stage("a", stages.spend, runner="ray").build()
    assert asyncio.run(engine().run(graph)).usage.tokens == 400
    over = asyncio.run(engine(budget=Budget(max_tokens=100)).run(graph))
    assert over.status is RunStatus.FAILED
    assert isinstance(over["a"].error, BudgetExceededError)


def test_ctx_model_in_a_worker_downgrades_as_the_run_s_budget_says() -> None:
    pipeline, before = Pipeline("downgrades"), ()
    for i in range(4):
        pipeline = pipeline.with_stage(f"s{i}", stages.on_the_model_given, dependencies=before,
                                       estimate=400, runner="ray")  # fmt: skip
        before = (f"s{i}",)
    budget = Budget(max_tokens=1000, policy="downgrade")
    chain = ModelChain("gpt-4o", "gpt-4o-mini", "local")
    result = asyncio.run(engine(budget=budget, model_chains=[chain]).run(pipeline.build()))
    assert [result[f"s{i}"].data["model"] for i in range(4)] == [
        "gpt-4o", "gpt-4o", "gpt-4o-mini", "local"]  # fmt: skip
    assert result.usage.tokens == 1600


def test_an_exception_raised_in_a_worker_arrives_as_itself_and_is_retried() -> None:
    retry = RetryPolicy(attempts=2, base=1.0, retry_on=(stages.Pinned,))
    graph = Pipeline("p").with_stage("a", stages.pinned, runner="ray", retry=retry).build()
    result = run_virtual(engine().run(graph))  # the backoff on virtual time
    error = result["a"].error
    assert type(error) is stages.Pinned
    assert (str(error), error.code) == ("attempt 2 failed", 7)
    assert result["a"].attempts == 2
    assert any("raised in a Ray worker" in note for note in error.__notes__)


def test_an_exception_that_does_not_pickle_is_a_remote_error() -> None:
    graph = Pipeline("p").with_stage("a", stages.unpicklable, runner="ray").build()
    error = asyncio.run(engine().run(graph))["a"].error
    assert isinstance(error, RemoteError)
    assert error.type_name == "tests.ray.stages.Unpicklable"
    assert "raise Unpicklable" in error.traceback


def test_a_worker_killed_mid_call_is_a_lost_worker_and_is_retried() -> None:
    retry = RetryPolicy(attempts=2, base=0.5, retry_on=(WorkerLostError,))
    graph = Pipeline("p").with_stage("a", stages.dies_first, runner="ray", retry=retry).build()
    result = run_virtual(engine().run(graph))
    assert result.status is RunStatus.COMPLETED, result["a"].error
    assert result["a"].attempts == 2
    assert result["a"].data["attempt"] == 2


def test_without_a_retry_a_lost_worker_fails_the_stage_saying_so() -> None:
    graph = Pipeline("p").with_stage("a", stages.dies_first, runner="ray", retry=1).build()
    error = asyncio.run(engine().run(graph))["a"].error
    assert isinstance(error, WorkerLostError)
    assert (error.stage, error.runner) == ("a", "ray")
    assert "its ray worker died" in str(error)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(check: Any, what: str, seconds: float = 60.0) -> None:
    """Poll ``check()`` until true (a real effect in another process), or fail."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds}s")
        time.sleep(0.05)


def cancelled_once_started(graph: Any, data: dict[str, Any], grace: float,
                           started: Any) -> None:  # fmt: skip
    """Run ``graph`` and cancel the run once ``started()`` says its remote call is going."""

    async def main() -> None:
        run = asyncio.create_task(engine(grace=grace).run(graph, data=data))
        await asyncio.to_thread(_wait_for, started, "the remote call started")
        run.cancel()
        with pytest.raises(asyncio.CancelledError):  # a cancelled engine.run() re-raises
            await run

    asyncio.run(main())


def test_a_cancelled_call_cancels_its_task_and_kills_a_stuck_worker(tmp_path: Path) -> None:
    pidfile, release = tmp_path / "pid", tmp_path / "release"
    graph = Pipeline("p").with_stage("a", stages.blocks, runner="ray").build()
    data = {"pidfile": str(pidfile), "release": str(release)}
    cancelled_once_started(graph, data, 0.0, pidfile.exists)
    pid = int(pidfile.read_text())
    _wait_for(lambda: not _alive(pid), f"worker {pid} killed")


def test_a_cancelled_async_call_stops_and_leaves_its_worker_s_loop_clean(tmp_path: Path) -> None:
    pidfile, beats = tmp_path / "pid", tmp_path / "beats"
    graph = Pipeline("p").with_stage("a", stages.beats, runner="ray").build()
    data = {"pidfile": str(pidfile), "beats": str(beats)}
    cancelled_once_started(graph, data, 5.0, lambda: beats.exists() and beats.stat().st_size > 2)
    pid = int(pidfile.read_text())
    time.sleep(0.3)  # real time: the worker's loop, not the engine's
    size = beats.stat().st_size
    time.sleep(0.3)
    assert beats.stat().st_size == size  # stopped by the interrupt, not left in the loop
    assert _alive(pid)  # not killed: the interrupt was enough
    again = Pipeline("q").with_stage("w", stages.tasks_here, runner="ray").build()
    for _ in range(50):  # until a call lands on that worker: its loop holds nothing
        here = asyncio.run(engine().run(again))["w"].data
        if here["pid"] == pid:
            assert here["others"] == 0
            break
    else:
        pytest.fail(f"no call ran on worker {pid} again")


def test_a_timeout_cancels_the_remote_call() -> None:
    graph = Pipeline("p").with_stage("a", stages.blocks, runner="ray", timeout=30,
                                     retry=1).build()  # fmt: skip
    result = run_virtual(engine(grace=0.0).run(
        graph, data={"pidfile": "/dev/null", "release": "/nonexistent/never"}))  # fmt: skip
    assert isinstance(result["a"].error, StageTimeoutError)


def test_a_loop_body_stage_in_a_worker_sees_its_iteration() -> None:
    body = Pipeline("body").with_stage("step", stages.step, runner="ray").build()
    graph = Pipeline("p").with_loop("l", body, until=lambda out: out["n"] >= 3,
                                    max_iterations=5).build()  # fmt: skip
    result = asyncio.run(engine().run(graph, run_id="loop-run"))
    assert result["l"].data == {"n": 3, "was": 2, "key": "loop-run:l[3].step"}
