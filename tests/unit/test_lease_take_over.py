"""Taking over a run whose driver is known dead: ``Engine.resume(take_over=True)``.

The old driver is kept alive on purpose (blocked in a stage): the fencing token
must make its late writes harmless, and its run must stop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from stageflow import (
    ConfigurationError,
    Engine,
    Lease,
    LeaseLostError,
    Pipeline,
    RunLeasedError,
    RunStatus,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import RecordingSink, run_virtual


def loop_time() -> float:
    return asyncio.get_running_loop().time()  # virtual under run_virtual


class TestTakingOver:
    def test_a_second_engine_takes_over_a_live_driver_whose_late_completion_is_refused(self):
        store = MemoryStore(clock=loop_time)
        calls: Counter[str] = Counter()
        gate: list[asyncio.Event] = []

        async def a(ctx):
            calls["a"] += 1
            return {"n": 1}

        async def slow(ctx):
            calls["slow"] += 1
            if calls["slow"] == 1:  # the first driver: stuck until the second lets it go
                await gate[0].wait()
                return {"by": "first"}
            gate[0].set()  # the first driver wakes up and completes slow, while this
            await asyncio.sleep(1)  # drive holds the lease: its write must be refused
            return {"by": "second"}

        async def c(ctx):
            calls["c"] += 1
            return {"after": ctx.inputs.get_from("slow", "by")}

        graph = (
            Pipeline("taken")
            .with_stage("a", a)
            .with_stage("slow", slow, dependencies=("a",))
            .with_stage("c", c, dependencies=("slow",))
            .build()
        )
        sink = RecordingSink()

        async def main() -> Any:
            gate.append(asyncio.Event())
            # A lease of an hour: its heartbeat is far off, so the late write is what
            # finds the lease gone.
            first = Engine(store=store, lease_ttl=3600)
            running = asyncio.create_task(first.run(graph, run_id="r1"))
            await asyncio.sleep(1)  # a stored, slow in flight
            second = Engine(store=store, sink=sink)
            with pytest.raises(RunLeasedError) as refused:
                await second.resume("r1", graph)
            assert refused.value.owner == first.owner
            taken = await second.resume("r1", graph, take_over=True)
            return taken, await running

        taken, late = run_virtual(main())

        assert taken.ok
        assert taken["c"].data == {"after": "second"}
        assert "stage.restored" in sink.types("a")
        assert calls == {"a": 1, "slow": 2, "c": 1}  # slow was in flight: run again, once
        assert late.status == "failed"
        assert isinstance(late["slow"].error, LeaseLostError)
        assert late["c"].status != "completed"
        records = run_virtual(store.stage_records("r1"))
        assert records["slow"].output == '{"by":"second"}'  # the late outcome never landed
        assert records["c"].output == '{"after":"second"}'
        record = run_virtual(store.get_run("r1"))
        assert (record.status, record.error) == (RunStatus.COMPLETED, None)

    def test_the_old_drivers_late_state_save_is_refused_and_no_batch_is_done_twice(self):
        store = MemoryStore(clock=loop_time)
        done: list[tuple[int, int]] = []
        drives: list[int] = []
        gate: list[asyncio.Event] = []

        async def batches(ctx):
            drives.append(len(drives) + 1)
            drive = drives[-1]
            start = await ctx.state.load(default=0)
            if drive == 2:  # the first driver wakes up while this drive holds the lease
                gate[0].set()
                await asyncio.sleep(1)
            for batch in range(start, 4):
                if drive == 1 and batch == 2:
                    await gate[0].wait()  # the first driver hangs after two batches
                done.append((drive, batch))
                await ctx.state.save(batch + 1)
            return {"batches": 4}

        graph = Pipeline("batches").with_stage("batches", batches).build()

        async def main() -> Any:
            gate.append(asyncio.Event())
            running = asyncio.create_task(
                Engine(store=store, lease_ttl=3600).run(graph, run_id="r1")
            )
            await asyncio.sleep(1)
            taken = await Engine(store=store).resume("r1", graph, take_over=True)
            return taken, await running

        taken, late = run_virtual(main())

        assert taken.ok
        assert isinstance(late["batches"].error, LeaseLostError)
        # The first driver did batch 2 after the take-over, but could not save it and
        # went no further; the second driver did batches 2 and 3, once each.
        assert done == [(1, 0), (1, 1), (1, 2), (2, 2), (2, 3)]
        assert run_virtual(store.load_state("r1", "batches")) == "4"

    def test_a_live_old_driver_stops_its_run_at_its_next_heartbeat(self):
        store = MemoryStore(clock=loop_time)
        started: list[str] = []

        async def forever(ctx):
            started.append(ctx.run_id)
            if len(started) == 1:
                await asyncio.Event().wait()  # the first driver hangs for good
            await asyncio.sleep(25)  # the take-over outlasts the first driver's heartbeat
            return {}

        graph = Pipeline("hung").with_stage("forever", forever).build()

        async def main() -> Any:
            running = asyncio.create_task(Engine(store=store, lease_ttl=30).run(graph, run_id="r1"))
            await asyncio.sleep(1)
            taking = asyncio.create_task(Engine(store=store).resume("r1", graph, take_over=True))
            late = await asyncio.wait_for(running, 60)  # its heartbeat (every 10 s) notices
            assert not taking.done(), "the first driver must stop while the second drives"
            assert loop_time() <= 11
            return await taking, late

        taken, late = run_virtual(main())

        assert taken.ok
        assert late.status != "completed"
        assert isinstance(late.error, LeaseLostError)
        assert run_virtual(store.get_run("r1")).status == RunStatus.COMPLETED

    def test_taking_over_a_free_run_is_a_plain_resume(self):
        store = MemoryStore(clock=loop_time)
        graph = Pipeline("free").with_stage("a", lambda ctx: {"n": 1}).build()

        async def main() -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph, take_over=True)

        assert run_virtual(main()).ok


class _OldStore(MemoryStore):
    """A store written before take-overs: its acquire_lease has no take_over option."""

    async def acquire_lease(self, run_id: str, owner: str, ttl: float) -> Lease:  # type: ignore[override]
        return await super().acquire_lease(run_id, owner, ttl)


class TestBadInput:
    @pytest.mark.parametrize("value", ["yes", 1, None])
    def test_take_over_must_be_a_bool(self, value):
        store = MemoryStore()
        graph = Pipeline("p").with_stage("a", lambda ctx: {}).build()
        run_virtual(Engine(store=store).run(graph, run_id="r1"))

        with pytest.raises(ConfigurationError, match="take_over") as error:
            run_virtual(Engine(store=store).resume("r1", graph, take_over=value))

        assert error.value.field == "take_over"

    def test_a_store_without_take_over_is_refused_clearly(self):
        store = _OldStore()
        graph = Pipeline("p").with_stage("a", lambda ctx: {}).build()
        run_virtual(Engine(store=store).run(graph, run_id="r1"))

        assert run_virtual(Engine(store=store).resume("r1", graph)).ok  # no take-over: fine
        with pytest.raises(ConfigurationError, match=r"_OldStore\.acquire_lease has no take_over"):
            run_virtual(Engine(store=store).resume("r1", graph, take_over=True))
