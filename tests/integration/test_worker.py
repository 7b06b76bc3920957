"""Worker in this process, on a real SQLite file and a real PostgreSQL database.

Pinned: runs are claimed by priority, then age; a worker drives no more than its
concurrency; a run that waits for input is taken up again once the input is given, and one
whose input deadline passes goes on to its timeout; a worker stopped before its runs end
sends them back to their queue, where another worker finishes them without running again
what completed; a run of a pipeline the catalog lacks, or whose graph changed, is recorded
as failed saying why; the worker lists itself in the store while it runs and removes its
record when it stops; bad arguments are refused by name before anything runs.

(Real processes, SIGKILLed workers and the shared limit: tests/workers.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stageflow import (
    Budget,
    Catalog,
    ConfigurationError,
    Engine,
    Pipeline,
    RunStatus,
    StageContext,
    StageStatus,
    Worker,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

DEADLINE = 20.0  # seconds a test waits for runs to end, at most


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    postgres: str = request.getfixturevalue("postgres_url")
    return postgres


class Calls:
    """What the stages were called for, in order: (run's data "n", stage)."""

    def __init__(self) -> None:
        self.made: list[tuple[Any, str]] = []
        self.running = 0
        self.most = 0
        self.gate: asyncio.Event | None = None  # stage "slow" waits for it when set

    def stage(self, name: str) -> Callable[[StageContext], Awaitable[dict[str, Any]]]:
        async def call(ctx: StageContext) -> dict[str, Any]:
            self.made.append((ctx.data.get("n"), name))
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                if name == "slow" and self.gate is not None:
                    await self.gate.wait()
                else:
                    await asyncio.sleep(0.01)
            finally:
                self.running -= 1
            return {"stage": name}

        return call


def chain(calls: Calls, name: str = "chain") -> Pipeline:
    return (
        Pipeline(name)
        .with_stage("first", calls.stage("first"))
        .with_stage("slow", calls.stage("slow"), dependencies=["first"])
        .with_stage("last", calls.stage("last"), dependencies=["slow"])
    )


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"not within {DEADLINE}s: {what}")
        await asyncio.sleep(0.02)


async def statuses(store: SQLAlchemyStore) -> dict[str, RunStatus]:
    return {r.run_id: r.status for r in await store.list_runs()}


def using(url: str, body: Callable[[SQLAlchemyStore], Awaitable[Any]], ttl: float = 30.0) -> Any:
    async def main() -> Any:
        store = SQLAlchemyStore(url, lease_ttl=ttl)
        try:
            return await body(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


class TestClaiming:
    def test_runs_are_driven_by_priority_then_age_one_at_a_time(self, url):
        calls = Calls()
        graph = chain(calls).build()

        async def body(store):
            engine = Engine(store=store)
            for n, priority in enumerate([0, 2, 1, 2, 0]):
                await engine.submit(graph, {"n": n}, priority=priority)
            worker = Worker(engine, {"chain": graph}, concurrency=1, poll=0.01)
            task = asyncio.ensure_future(worker.run())

            async def done():
                return set((await statuses(store)).values()) == {RunStatus.COMPLETED}

            await until(done, "every run completed")
            worker.stop()
            await task
            return [n for n, stage in calls.made if stage == "first"], calls.most

        order, most = using(url, body)
        assert order == [1, 3, 2, 0, 4], "priority 2 first (oldest first among equals), then 1, 0"
        assert most == 1, "concurrency=1 drives one run at a time"

    def test_a_worker_drives_at_most_its_concurrency_and_only_its_queues(self, url):
        calls = Calls()
        graph = chain(calls).build()

        async def body(store):
            engine = Engine(store=store)
            mine = [await engine.submit(graph, {"n": n}, queue="mine") for n in range(6)]
            other = await engine.submit(graph, {"n": 99}, queue="other")
            worker = Worker(engine, Catalog({"chain": graph}), queues=["mine"], concurrency=3,
                            poll=0.01)  # fmt: skip
            task = asyncio.ensure_future(worker.run())

            async def done():
                found = await statuses(store)
                return all(found[r] is RunStatus.COMPLETED for r in mine)

            await until(done, "the runs of queue 'mine' completed")
            worker.stop()
            await task
            return calls.most, (await store.get_run(other)).status

        most, other = using(url, body)
        assert most == 3
        assert other is RunStatus.QUEUED, "a run of another queue is left for its workers"


class TestWaiting:
    def test_a_waiting_run_goes_on_once_its_input_is_given(self, url):
        calls = Calls()
        graph = (
            Pipeline("ask")
            .with_stage("first", calls.stage("first"))
            .with_input("approve", schema=bool, dependencies=["first"])
            .with_stage("last", calls.stage("last"), dependencies=["approve"])
            .build()
        )

        async def body(store):
            engine = Engine(store=store)
            run_id = await engine.submit(graph, {"n": 1})
            worker = Worker(engine, {"ask": graph}, poll=0.01)
            task = asyncio.ensure_future(worker.run())

            async def waiting():
                return (await store.get_run(run_id)).status is RunStatus.WAITING

            await until(waiting, "the run stopped to wait")
            await asyncio.sleep(0.1)  # a few rounds of claims: nothing to take up
            assert not worker.driving, "a waiting run without its input is not claimed"
            await Engine(store=store).send(run_id, "approve", True, graph=graph)

            async def completed():
                return (await store.get_run(run_id)).status is RunStatus.COMPLETED

            await until(completed, "the run completed after its input")
            worker.stop()
            await task
            return calls.made, (await store.stage_records(run_id))["last"].status

        made, last = using(url, body)
        assert made == [(1, "first"), (1, "last")], "first ran once, not again after the wait"
        assert last is StageStatus.COMPLETED

    def test_a_run_whose_input_deadline_passes_is_taken_up_and_times_out(self, url):
        calls = Calls()
        graph = (
            Pipeline("ask")
            .with_input("approve", schema=bool, timeout=0.3, on_timeout=False)
            .with_stage("last", calls.stage("last"), dependencies=["approve"])
            .build()
        )

        async def body(store):
            engine = Engine(store=store)
            run_id = await engine.submit(graph)
            worker = Worker(engine, {"ask": graph}, poll=0.02)
            task = asyncio.ensure_future(worker.run())

            async def completed():
                return (await store.get_run(run_id)).status is RunStatus.COMPLETED

            await until(completed, "the run went on with the timeout's value")
            worker.stop()
            await task
            return await store.stage_records(run_id)

        records = using(url, body)
        assert records["last"].status is StageStatus.COMPLETED
        assert '"value":false' in records["approve"].output.replace(" ", "")


class TestStopping:
    def test_a_stopped_worker_sends_its_runs_back_and_another_finishes_them(self, url):
        calls = Calls()
        graph = chain(calls).build()

        async def body(store):
            engine = Engine(store=store)
            run_id = await engine.submit(graph, {"n": 7})
            calls.gate = asyncio.Event()  # "slow" waits until the first worker is gone
            first = Worker(engine, {"chain": graph}, poll=0.01, grace=0)
            task = asyncio.ensure_future(first.run())

            async def in_slow():
                return (7, "slow") in calls.made

            await until(in_slow, "the run reached its slow stage")
            first.stop()
            await task
            requeued = await store.get_run(run_id)
            workers_left = await store.list_workers()
            calls.gate.set()
            second = Worker(engine.replace(), {"chain": graph}, poll=0.01)
            task = asyncio.ensure_future(second.run())

            async def completed():
                return (await store.get_run(run_id)).status is RunStatus.COMPLETED

            await until(completed, "the second worker completed it")
            second.stop()
            await task
            return requeued.status, workers_left, calls.made, first.owner != second.owner

        status, workers_left, made, distinct = using(url, body)
        assert status is RunStatus.QUEUED, "sent back to its queue, not cancelled"
        assert workers_left == [], "a worker that stops removes its record"
        assert made == [(7, "first"), (7, "slow"), (7, "slow"), (7, "last")], (
            "first is restored, not run again; slow, in flight, runs again"
        )
        assert distinct

    def test_a_worker_lists_itself_with_the_runs_it_drives(self, url):
        calls = Calls()
        graph = chain(calls).build()

        async def body(store):
            engine = Engine(store=store)
            run_id = await engine.submit(graph, {"n": 1})
            calls.gate = asyncio.Event()
            worker = Worker(engine, {"chain": graph}, poll=0.01, concurrency=2, grace=5)
            task = asyncio.ensure_future(worker.run())

            async def in_slow():
                return (1, "slow") in calls.made

            await until(in_slow, "the run reached its slow stage")
            listed = await store.list_workers()
            calls.gate.set()
            worker.stop()
            await task
            return listed, run_id, worker.owner, (await store.get_run(run_id)).status

        listed, run_id, owner, status = using(url, body)
        assert [(w.owner, w.queues, w.concurrency, w.runs) for w in listed] == [
            (owner, ("default",), 2, (run_id,))
        ]
        assert status is RunStatus.COMPLETED, "within its grace a stopping worker finishes"


class TestRefusals:
    def test_a_run_the_catalog_lacks_or_whose_graph_changed_fails_saying_why(self, url):
        calls = Calls()
        graph = chain(calls).build()
        changed = chain(calls).with_stage("extra", calls.stage("extra")).build()
        other = chain(calls, "other").build()

        async def body(store):
            engine = Engine(store=store)
            lacking = await engine.submit(other)
            mismatched = await engine.submit(graph)
            worker = Worker(engine, {"chain": changed}, poll=0.01)
            task = asyncio.ensure_future(worker.run())

            async def ended():
                found = await statuses(store)
                return found[lacking] is RunStatus.FAILED and found[mismatched] is RunStatus.FAILED

            await until(ended, "both runs recorded as failed")
            worker.stop()
            await task
            return (await store.get_run(lacking)).error, (await store.get_run(mismatched)).error

        lacking, mismatched = using(url, body)
        assert "no pipeline 'other'" in (lacking or "")
        assert "extra" in (mismatched or ""), "the mismatch says what changed"
        assert calls.made == []

    def test_a_run_submitted_with_other_money_settings_fails_saying_which(self, url):
        calls = Calls()
        graph = chain(calls).build()

        async def body(store):
            run_id = await Engine(store=store, budget=Budget(max_tokens=100)).submit(graph)
            worker = Worker(Engine(store=store, budget=Budget(max_tokens=5)), {"chain": graph},
                            poll=0.01)  # fmt: skip
            task = asyncio.ensure_future(worker.run())

            async def failed():
                return (await store.get_run(run_id)).status is RunStatus.FAILED

            await until(failed, "the run recorded as failed")
            worker.stop()
            await task
            return (await store.get_run(run_id)).error

        error = using(url, body)
        assert "budget" in (error or ""), error
        assert calls.made == []

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"queues": "default"}, "queues"),
            ({"queues": []}, "queues"),
            ({"queues": ["bad queue"]}, "queues"),
            ({"concurrency": 0}, "concurrency"),
            ({"concurrency": 1.5}, "concurrency"),
            ({"limits": {"default": 0}}, "limits['default']"),
            ({"limits": ["default"]}, "limits"),
            ({"limits": {"no such!": 1}}, "limits"),
            ({"poll": 0}, "poll"),
            ({"grace": -1}, "grace"),
            ({"heartbeat": 0}, "heartbeat"),
        ],
    )
    def test_bad_arguments_are_refused_by_name(self, tmp_path, changes, field):
        engine = Engine(store=SQLAlchemyStore(f"sqlite:///{tmp_path / 'runs.db'}"))
        with pytest.raises(ConfigurationError) as caught:
            Worker(engine, {"chain": chain(Calls())}, **changes)
        assert caught.value.field == field

    @pytest.mark.parametrize("store", [None, MemoryStore()], ids=["none", "memory"])
    def test_a_store_that_keeps_no_queue_is_refused(self, store):
        with pytest.raises(ConfigurationError) as caught:
            Worker(Engine(store=store), {"chain": chain(Calls())})
        assert caught.value.field == "store"
        with pytest.raises(ConfigurationError) as caught:
            asyncio.run(Engine(store=store).submit(chain(Calls()).build()))
        assert caught.value.field == "store"

    def test_no_engine_is_refused(self):
        with pytest.raises(ConfigurationError) as caught:
            Worker("engine", {})  # type: ignore[arg-type]
        assert caught.value.field == "engine"

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"queue": ""}, "queue"),
            ({"queue": 3}, "queue"),
            ({"priority": "high"}, "priority"),
            ({"priority": 2**31}, "priority"),
            ({"run_id": "bad id"}, "run_id"),
            ({"timeout": -1}, "timeout"),
            ({"labels": {"": "x"}}, "labels"),
        ],
    )
    def test_submit_refuses_bad_arguments_by_name_and_writes_nothing(
        self, tmp_path, changes, field
    ):
        async def body(store):
            with pytest.raises(ConfigurationError) as caught:
                await Engine(store=store).submit(chain(Calls()).build(), **changes)
            return caught.value.field, await store.list_runs()

        said, runs = using(f"sqlite:///{tmp_path / 'runs.db'}", body)
        assert said == field
        assert runs == []
