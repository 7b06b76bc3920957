"""Durable runs on the in-memory store: checkpoint, cancel, resume, fence."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from stageflow import (
    ConfigurationError,
    Engine,
    GraphMismatchError,
    LeaseLostError,
    Pipeline,
    RunLeasedError,
    RunStatus,
    StageOutput,
    UnknownRunError,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import ManualClock, RecordingSink, run_virtual


class Stages:
    """Stages that count their calls and sleep a given virtual time."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.keys: dict[str, list[str]] = {}

    def make(self, name: str, seconds: float, **extra: Any) -> Any:
        async def stage(ctx):
            self.calls[name] = self.calls.get(name, 0) + 1
            self.keys.setdefault(name, []).append(ctx.idempotency_key)
            await asyncio.sleep(seconds)
            return {"name": name, "at": dt.datetime(2026, 1, 1), "pair": (1, 2), **extra}

        return stage


def chain(stages: Stages) -> Any:
    return (
        Pipeline("durable")
        .with_stage("a", stages.make("a", 1))
        .with_stage("b", stages.make("b", 5), dependencies=("a",))
        .with_stage("c", stages.make("c", 1), dependencies=("b",))
        .build()
    )


async def cancel_after(engine: Engine, graph: Any, seconds: float, run_id: str = "r1") -> None:
    task = asyncio.create_task(engine.run(graph, data={"topic": "owls"}, run_id=run_id))
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class TestCheckpointing:
    def test_a_completion_is_stored_before_any_dependent_starts(self):
        stages = Stages()
        store = MemoryStore()
        seen_by_b: list[list[str]] = []

        async def b(ctx):
            seen_by_b.append(sorted(await store.stage_records(ctx.run_id)))
            return {}

        graph = (
            Pipeline().with_stage("a", stages.make("a", 1)).with_stage("b", b, dependencies=("a",))
        )
        result = run_virtual(Engine(store=store).run(graph.build(), run_id="r1"))

        assert result.ok
        assert seen_by_b == [["a"]]

    def test_a_run_is_recorded_with_its_status_and_lease_released(self):
        store = MemoryStore()
        result = run_virtual(Engine(store=store).run(chain(Stages()), run_id="r1"))

        record = run_virtual(store.get_run("r1"))
        assert (result.status, record.status, record.pipeline) == (
            "completed",
            "completed",
            "durable",
        )

        async def another_driver_can_take_it():
            return await store.acquire_lease("r1", "someone-else", 30)

        assert run_virtual(another_driver_can_take_it()).owner == "someone-else"

    def test_an_output_that_cannot_be_stored_fails_its_stage_in_the_first_run(self):
        async def odd(ctx):
            return {"handle": object()}

        result = run_virtual(
            Engine(store=MemoryStore()).run(Pipeline().with_stage("odd", odd).build())
        )

        assert result["odd"].status == "failed"
        assert "stage 'odd'" in result["odd"].reason
        assert "builtins:object" in result["odd"].reason

    def test_without_a_store_nothing_is_encoded(self):
        async def odd(ctx):
            return {"handle": object()}

        result = run_virtual(Engine().run(Pipeline().with_stage("odd", odd).build()))

        assert result.ok


class TestResume:
    def test_completed_stages_are_restored_and_only_the_rest_runs(self):
        stages = Stages()
        graph = chain(stages)
        store = MemoryStore()
        sink = RecordingSink()

        async def main():
            await cancel_after(Engine(store=store), graph, 3)  # a done, b in flight
            assert (await store.get_run("r1")).status == RunStatus.CANCELLED
            return await Engine(store=store, sink=sink).resume("r1", graph)

        result = run_virtual(main())

        assert result.ok
        assert stages.calls == {"a": 1, "b": 2, "c": 1}  # b was in flight: run again
        assert result["a"].data == {"name": "a", "at": dt.datetime(2026, 1, 1), "pair": (1, 2)}
        assert "stage.restored" in sink.types("a")
        assert "stage.restored" not in sink.types("b")
        assert stages.keys["b"][0] == stages.keys["b"][1] == "r1:b"

    def test_a_restored_stage_reports_the_attempts_and_times_it_took(self):
        from stageflow import RetryPolicy

        calls = {"a": 0}

        async def a(ctx):
            calls["a"] += 1
            await asyncio.sleep(2)
            if calls["a"] == 1:
                raise ConnectionError("reset")
            return {"ok": True}

        async def b(ctx):
            await asyncio.sleep(50)

        graph = (
            Pipeline("durable")
            .with_stage("a", a, retry=RetryPolicy(attempts=2, backoff="fixed", base=1))
            .with_stage("b", b, dependencies=("a",))
            .build()
        )
        store = MemoryStore()
        first, second = RecordingSink(), RecordingSink()

        async def main():
            await asyncio.sleep(7)  # the resumed run starts later on the clock
            await cancel_after(Engine(store=store, sink=first), graph, 10)
            record = (await store.stage_records("r1"))["a"]
            result = await Engine(store=store, sink=second).resume("r1", graph)
            return record, result

        record, result = run_virtual(main())

        # 2 s, a 1 s backoff, 2 s: stored as it ran, reported as stored
        assert (record.attempts, record.started, record.ended) == (2, 0.0, 5.0)
        restored = result["a"]
        assert (restored.attempts, restored.started, restored.ended) == (2, 0.0, 5.0)
        assert restored.duration == 5.0
        assert result["b"].attempts == 1  # run again: this run's own count
        (saved,) = first.of_type("checkpoint.saved")
        assert saved.stage == "a"
        assert saved.data["attempt"] == 2
        (back,) = second.of_type("stage.restored")
        assert back.data == {"attempts": 2}
        (done,) = [e for e in second.for_stage("a") if e.type == "stage.completed"]
        assert done.attempt == 2
        assert done.data["duration"] == 5.0

    def test_checkpoint_saved_carries_the_first_attempt_without_retries(self):
        sink = RecordingSink()
        graph = chain(Stages())
        run_virtual(Engine(store=MemoryStore(), sink=sink).run(graph, run_id="r1"))
        saved = sink.of_type("checkpoint.saved")
        assert [(e.stage, e.data["attempt"]) for e in saved] == [("a", 1), ("b", 1), ("c", 1)]

    def test_the_run_data_comes_back_from_the_store(self):
        seen = []

        async def look(ctx):
            seen.append(dict(ctx.data))
            await asyncio.sleep(5)

        graph = Pipeline().with_stage("look", look).build()
        store = MemoryStore()

        async def main():
            await cancel_after(Engine(store=store), graph, 1)
            await Engine(store=store).resume("r1", graph)

        run_virtual(main())
        assert seen == [{"topic": "owls"}, {"topic": "owls"}]

    def test_resuming_a_completed_run_runs_nothing(self):
        stages = Stages()
        graph = chain(stages)
        store = MemoryStore()

        async def main():
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        result = run_virtual(main())

        assert result.ok
        assert stages.calls == {"a": 1, "b": 1, "c": 1}

    def test_a_failed_stage_runs_again_and_a_self_skip_does_not(self):
        attempts = {"flaky": 0, "skipper": 0}

        async def flaky(ctx):
            attempts["flaky"] += 1
            if attempts["flaky"] == 1:
                raise ConnectionError("down")
            return {"ok": True}

        async def skipper(ctx):
            attempts["skipper"] += 1
            return StageOutput.skip("nothing to do")

        graph = Pipeline().with_stage("flaky", flaky).with_stage("skipper", skipper).build()
        store = MemoryStore()

        async def main():
            first = await Engine(store=store, fail_fast=False).run(graph, run_id="r1")
            second = await Engine(store=store).resume("r1", graph)
            return first, second

        first, second = run_virtual(main())

        assert (first.status, second.status) == ("failed", "completed")
        assert attempts == {"flaky": 2, "skipper": 1}
        assert second["skipper"].status == "skipped"
        assert second["skipper"].reason == "nothing to do"

    def test_a_different_graph_is_refused_saying_what_changed_and_nothing_is_written(self):
        stages = Stages()
        graph = chain(stages)
        store = MemoryStore()
        changed = (
            Pipeline("durable")
            .with_stage("a", stages.make("a", 1))
            .with_stage("b", stages.make("b", 5))
            .with_stage("d", stages.make("d", 1), dependencies=("a",))
            .build()
        )

        async def main():
            await cancel_after(Engine(store=store), graph, 3)
            before = await store.stage_records("r1")
            with pytest.raises(GraphMismatchError) as info:
                await Engine(store=store).resume("r1", changed)
            return before, await store.stage_records("r1"), info.value

        before, after, error = run_virtual(main())

        assert before == after
        assert set(error.changes) == {
            "stage 'd' added",
            "stage 'c' removed",
            "stage 'b' now depends on [] instead of ['a']",
        }
        assert "stage 'd' added" in str(error)

    def test_bad_resumes_get_clear_errors(self):
        graph = chain(Stages())

        async def main():
            with pytest.raises(ConfigurationError, match="store"):
                await Engine().resume("r1", graph)
            store = MemoryStore()
            with pytest.raises(UnknownRunError, match="'nope'"):
                await Engine(store=store).resume("nope", graph)
            with pytest.raises(ConfigurationError, match="run_id"):
                await Engine(store=store).resume("bad id!", graph)
            with pytest.raises(ConfigurationError, match="build"):
                await Engine(store=store).resume("r1", Pipeline())  # type: ignore[arg-type]

        run_virtual(main())

    @pytest.mark.parametrize("ttl", [0, -1, True, "30", 10_000])
    def test_a_bad_lease_ttl_is_refused(self, ttl):
        with pytest.raises(ConfigurationError, match="lease_ttl"):
            Engine(store=MemoryStore(), lease_ttl=ttl)

    def test_a_class_instead_of_a_store_is_refused(self):
        with pytest.raises(ConfigurationError, match="store"):
            Engine(store=MemoryStore)  # type: ignore[arg-type]


class TestLeases:
    def test_a_run_being_driven_cannot_be_resumed_elsewhere(self):
        graph = chain(Stages())
        store = MemoryStore()

        async def main():
            running = asyncio.create_task(Engine(store=store).run(graph, run_id="r1"))
            await asyncio.sleep(2)
            with pytest.raises(RunLeasedError) as info:
                await Engine(store=store).resume("r1", graph)
            await running
            return info.value

        error = run_virtual(main())
        assert error.run_id == "r1"

    def test_a_long_run_keeps_its_lease_by_heartbeat(self):
        clock = ManualClock()
        store = MemoryStore(clock=lambda: clock() + asyncio.get_running_loop().time())

        async def long(ctx):
            await asyncio.sleep(100)  # ten lease lifetimes
            return {}

        graph = Pipeline().with_stage("long", long).build()

        async def main():
            running = asyncio.create_task(Engine(store=store, lease_ttl=10).run(graph, run_id="r1"))
            await asyncio.sleep(95)
            with pytest.raises(RunLeasedError):
                await store.acquire_lease("r1", "intruder", 10)
            return await running

        assert run_virtual(main()).ok

    def test_a_driver_whose_lease_was_taken_over_writes_nothing_more(self):
        clock = ManualClock()
        store = MemoryStore(clock=clock)
        stages = Stages()

        async def stall(ctx):
            clock.advance(60)  # the driver stalls past its lease: another one takes over
            await store.acquire_lease(ctx.run_id, "usurper", 30)
            return {"late": True}

        graph = (
            Pipeline()
            .with_stage("a", stages.make("a", 1))
            .with_stage("stall", stall, dependencies=("a",))
            .with_stage("c", stages.make("c", 1), dependencies=("stall",))
            .build()
        )
        result = run_virtual(Engine(store=store).run(graph, run_id="r1"))
        records = run_virtual(store.stage_records("r1"))

        assert result.status == "failed"
        assert isinstance(result["stall"].error, LeaseLostError)
        assert set(records) == {"a"}
        assert "c" not in stages.calls


class TestStageState:
    def test_a_resumed_stage_goes_on_from_its_saved_state(self):
        done: list[int] = []

        async def batches(ctx):
            start = await ctx.state.load(default=0)
            for batch in range(start, 10):
                await asyncio.sleep(1)
                done.append(batch)
                await ctx.state.save(batch + 1)
            return {"batches": len(done)}

        graph = Pipeline().with_stage("batches", batches).build()
        store = MemoryStore()

        async def main():
            await cancel_after(Engine(store=store), graph, 4.5)  # batches 0-3 done
            return await Engine(store=store).resume("r1", graph)

        result = run_virtual(main())

        assert result.ok
        assert done == list(range(10))  # nothing done twice
        assert result["batches"].data == {"batches": 10}

    def test_state_works_without_a_store_within_a_run(self):
        async def stage(ctx):
            assert await ctx.state.load() is None
            await ctx.state.save({"cursor": (1, 2)})
            return {"state": await ctx.state.load()}

        result = run_virtual(Engine().run(Pipeline().with_stage("s", stage).build()))

        assert result["s"].data == {"state": {"cursor": (1, 2)}}

    def test_a_superseded_attempt_cannot_overwrite_the_state(self):
        from stageflow import RetryPolicy, StageCancelledError

        outcome: list[str] = []

        async def slow_then_ok(ctx):
            if ctx.attempt == 1:
                await asyncio.sleep(5)  # times out
                return {}
            try:
                await stale_contexts[0].state.save("stale")
            except StageCancelledError:
                outcome.append("refused")
            await ctx.state.save("fresh")
            return {"state": await ctx.state.load()}

        stale_contexts: list[Any] = []

        async def remember(ctx):
            stale_contexts.append(ctx)
            return await slow_then_ok(ctx)

        graph = (
            Pipeline()
            .with_stage(
                "s", remember, timeout=1, retry=RetryPolicy(attempts=2, backoff="fixed", base=0)
            )
            .build()
        )
        result = run_virtual(Engine(store=MemoryStore()).run(graph))

        assert result["s"].data == {"state": "fresh"}
        assert outcome == ["refused"]


class TestRunIds:
    def test_a_run_id_already_in_the_store_is_refused_and_its_run_untouched(self):
        from stageflow import RunExistsError

        stages = Stages()
        graph = chain(stages)
        store = MemoryStore()

        async def main():
            await Engine(store=store).run(graph, run_id="r1")
            before = await store.stage_records("r1")
            with pytest.raises(RunExistsError, match="'r1'"):
                await Engine(store=store).run(graph, run_id="r1")
            return before, await store.stage_records("r1")

        before, after = run_virtual(main())

        assert before == after
        assert stages.calls == {"a": 1, "b": 1, "c": 1}


class TestResumingACompletedRun:
    def test_its_record_is_left_as_it_was(self):
        graph = chain(Stages())
        clock = ManualClock()
        store = MemoryStore(clock=clock)

        async def main():
            await Engine(store=store).run(graph, run_id="r1")
            before = await store.get_run("r1")
            clock.advance(1000)
            await Engine(store=store).resume("r1", graph)
            return before, await store.get_run("r1")

        before, after = run_virtual(main())

        assert after == before  # status and updated_at untouched: retention still applies


class TestStoreTrouble:
    def test_a_failed_lease_renewal_is_logged_and_the_run_goes_on(self, caplog):
        from stageflow import StoreError

        class Flaky(MemoryStore):
            renewals = 0

            async def renew_lease(self, lease, ttl):
                Flaky.renewals += 1
                if Flaky.renewals == 1:
                    raise StoreError("the database blinked")
                return await super().renew_lease(lease, ttl)

        async def long(ctx):
            await asyncio.sleep(30)
            return {}

        graph = Pipeline().with_stage("long", long).build()
        result = run_virtual(Engine(store=Flaky(), lease_ttl=6).run(graph))

        assert result.ok
        assert Flaky.renewals > 1
        assert "renewing the lease" in caplog.text

    def test_a_resume_that_fails_to_load_gives_the_lease_back(self):
        from stageflow import StoreError

        graph = chain(Stages())

        class Broken(MemoryStore):
            async def stage_records(self, run_id):
                raise StoreError("cannot read")

        store = Broken()

        async def main():
            await cancel_after(Engine(store=store), graph, 3)
            with pytest.raises(StoreError, match="cannot read"):
                await Engine(store=store).resume("r1", graph)
            return await store.acquire_lease("r1", "next", 30)  # free again

        assert run_virtual(main()).owner == "next"
