"""SQLite: writes that meet another process's write lock wait in a thread, never on the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from stageflow import Engine, Pipeline, RunRecord, RunStatus, StageRecord, StageStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore


def hold_write_lock(path: str, seconds: float) -> threading.Thread:
    """Another connection (as another process would) holds the write lock for a while."""
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    locked.wait(5)
    return thread


async def create(store: SQLAlchemyStore, run_id: str) -> None:
    await store.create_run(RunRecord(run_id, "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0))


def stage(run_id: str, name: str) -> StageRecord:
    return StageRecord(run_id, name, StageStatus.COMPLETED, "{}", 1, 0.0, 0.1)


class TestWaitingForTheLock:
    def test_a_lone_write_waits_in_a_thread_while_the_loop_goes_on(self, tmp_path):
        path = str(tmp_path / "runs.db")

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            await create(store, "r1")
            lease = await store.acquire_lease("r1", "me", 30)
            ticks = 0

            async def tick():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            holder = hold_write_lock(path, 0.3)
            await store.record_stage(lease, stage("r1", "a"))
            ticker.cancel()
            holder.join()
            records = await store.stage_records("r1")
            await store.aclose()
            return ticks, records

        ticks, records = asyncio.run(main())

        assert set(records) == {"a"}
        assert ticks >= 10  # the loop kept running while the write waited

    def test_a_group_of_writes_waits_together_and_each_keeps_its_outcome(self, tmp_path):
        path = str(tmp_path / "runs.db")

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            await create(store, "r1")
            lease = await store.acquire_lease("r1", "me", 30)
            await store.record_stage(lease, stage("r1", "warm"))  # opens the burst
            holder = hold_write_lock(path, 0.3)
            results = await asyncio.gather(
                *(store.record_stage(lease, stage("r1", f"s{k}")) for k in range(20)),
                return_exceptions=True,
            )
            holder.join()
            records = await store.stage_records("r1")
            await store.aclose()
            return results, records

        results, records = asyncio.run(main())

        assert results == [None] * 20
        assert len(records) == 21

    def test_a_whole_fan_out_completes_under_contention(self, tmp_path):
        path = str(tmp_path / "runs.db")

        async def noop(ctx):
            return {"stage": ctx.stage}

        pipeline = Pipeline("wide").with_stage("root", noop)
        for k in range(50):
            pipeline = pipeline.with_stage(f"s{k}", noop, dependencies=("root",))

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            await store.list_runs()
            holder = hold_write_lock(path, 0.2)
            result = await Engine(store=store).run(pipeline.build(), run_id="w1")
            holder.join()
            records = await store.stage_records("w1")
            await store.aclose()
            return result, records

        result, records = asyncio.run(main())

        assert result.ok
        assert len(records) == 51
