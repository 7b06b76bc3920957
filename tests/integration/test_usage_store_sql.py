"""SQLAlchemyStore keeps usage: the schema upgrade from version 1, atomic batches, a locked file.

The upgrade from version 2 (run labels) is tested in test_run_labels_sql.py.

The behaviour every store shares (fencing, order, sums, filters, deletion) is in the
contracts, ``stageflow.testing.RUN_STORE_CHECKS`` and ``RUN_CATALOG_CHECKS``, run by
test_sqlalchemy_store.py.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from stageflow import LeaseLostError, RunRecord, RunStatus, StoreError, UnknownRunError
from stageflow._usage import Usage
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.adapters.sqlalchemy._schema import SCHEMA_VERSION
from stageflow.ports import UsageRecord

from ._sql import VERSION, raw


def report(run_id: str, stage: str, tokens: int = 10, cost: float | None = 0.5) -> UsageRecord:
    return UsageRecord(run_id, stage, 1, "m1", tokens, 1, cost, 1_700_000_000.0)


def run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0)


class TestSchemaUpgrade:
    def test_a_new_database_is_of_the_current_version(self, backend):
        url, where = backend

        async def main():
            store = SQLAlchemyStore(url)
            await store.list_runs()
            await store.aclose()
            return await raw(where, VERSION)

        assert SCHEMA_VERSION == 7
        assert asyncio.run(main()) == [("7",)]

    def test_a_version_1_database_upgrades_itself_when_opened(self, backend):
        url, where = backend

        async def write_v1():  # the current code's file, taken back to version 1
            store = SQLAlchemyStore(url)
            await store.create_run(run("old"))
            lease = await store.acquire_lease("old", "me", 30)
            await store.set_status(lease, RunStatus.COMPLETED)
            await store.release_lease(lease)
            await store.aclose()
            await raw(
                where,
                "DROP TABLE stageflow_usage",
                "UPDATE stageflow_meta SET value = '1' WHERE key = 'schema_version'",
            )
            return await raw(where, VERSION)

        async def reopen():
            store = SQLAlchemyStore(url)
            try:
                kept = [r.run_id for r in await store.list_runs()]
                await store.create_run(run("new"))
                lease = await store.acquire_lease("new", "me", 30)
                await store.record_usage(lease, [report("new", "a"), report("new", "b", 5)])
                return kept, await store.load_usage("new"), (await store.usage()).total
            finally:
                await store.aclose()

        assert asyncio.run(write_v1()) == [("1",)]
        kept, loaded, total = asyncio.run(reopen())

        assert kept == ["old"], "the runs of the version 1 database must be kept"
        assert loaded == [report("new", "a"), report("new", "b", 5)]
        assert total == Usage(15, 2, 1.0)
        assert asyncio.run(raw(where, VERSION)) == [("7",)]

    def test_two_stores_opening_a_version_1_database_at_once_both_work(self, backend):
        url, where = backend

        async def main():
            first = SQLAlchemyStore(url)
            await first.list_runs()
            await first.aclose()
            await raw(
                where,
                "DROP TABLE stageflow_usage",
                "UPDATE stageflow_meta SET value = '1' WHERE key = 'schema_version'",
            )
            stores = [SQLAlchemyStore(url) for _ in range(2)]
            try:
                await asyncio.gather(*(s.list_runs() for s in stores))
                return await raw(where, VERSION), [await s.usage() for s in stores]
            finally:
                for store in stores:
                    await store.aclose()

        version, summaries = asyncio.run(main())

        assert version == [("7",)]
        assert [s.tokens for s in summaries] == [0, 0]

    def test_stores_opening_a_new_database_at_once_all_work(self, backend):
        # On PostgreSQL, concurrent CREATE TABLE IF NOT EXISTS collide in the catalog: the
        # stores take turns creating the schema.
        url, where = backend

        async def main():
            stores = [SQLAlchemyStore(url) for _ in range(4)]
            try:
                await asyncio.gather(*(s.list_runs() for s in stores))
                return await raw(where, VERSION)
            finally:
                for store in stores:
                    await store.aclose()

        assert asyncio.run(main()) == [("7",)]


class TestLoadUsage:
    def test_an_unknown_run_is_an_unknown_run_error_like_its_stage_records(self, backend):
        url, _ = backend

        async def main():
            store = SQLAlchemyStore(url)
            raised = []
            try:
                for read in (store.stage_records, store.load_usage):
                    try:
                        await read("nope")
                    except UnknownRunError as error:
                        raised.append(error.run_id)
            finally:
                await store.aclose()
            return raised

        assert asyncio.run(main()) == ["nope", "nope"]


class TestValues:
    def test_infinite_floats_round_trip_though_json_has_no_number_for_them(self, backend):
        url, _ = backend
        records = [
            UsageRecord("r1", "a", 1, None, 1, 1, float("inf"), 1.5),
            UsageRecord("r1", "a", 2, None, 1, 1, float("-inf"), float("inf")),
        ]

        async def main():
            store = SQLAlchemyStore(url)
            try:
                await store.create_run(run("r1"))
                lease = await store.acquire_lease("r1", "me", 30)
                await store.record_usage(lease, records)
                return await store.load_usage("r1"), await store.usage(until=2.0)
            finally:
                await store.aclose()

        loaded, summary = asyncio.run(main())

        assert loaded == records
        assert summary.cost == float("inf")


class TestAtomicBatches:
    def test_a_batch_that_fails_midway_writes_nothing(self, backend):
        url, _ = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                await store.create_run(run("r1"))
                lease = await store.acquire_lease("r1", "me", 30)
                await store.record_usage(lease, [report("r1", "a")])
                bad = report("r1", None)  # type: ignore[arg-type]  # NOT NULL refuses it
                with pytest.raises(StoreError):
                    await store.record_usage(lease, [report("r1", "b"), bad, report("r1", "c")])
                await store.record_usage(lease, [report("r1", "d")])  # the store goes on
                return [u.stage for u in await store.load_usage("r1")]
            finally:
                await store.aclose()

        assert asyncio.run(main()) == ["a", "d"]

    def test_many_concurrent_batches_of_many_runs_all_land_each_in_order(self, backend):
        url, _ = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                leases = []
                for k in range(10):
                    await store.create_run(run(f"r{k}"))
                    leases.append(await store.acquire_lease(f"r{k}", "me", 30))
                batches = [
                    [report(lease.run_id, f"s{j}", tokens=j) for j in range(20)] for lease in leases
                ]
                await asyncio.gather(
                    *(
                        store.record_usage(lease, b)
                        for lease, b in zip(leases, batches, strict=True)
                    )
                )
                loaded = [await store.load_usage(lease.run_id) for lease in leases]
                return batches, loaded, await store.usage()
            finally:
                await store.aclose()

        batches, loaded, summary = asyncio.run(main())

        assert loaded == batches
        assert summary.input_tokens == 10 * sum(range(20))
        assert summary.cost == pytest.approx(10 * 20 * 0.5)


class TestALockedSQLiteFile:
    def test_a_batch_waits_for_another_connections_lock_off_the_loop(self, tmp_path):
        path = tmp_path / "runs.db"

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            try:
                for run_id in ("r1", "r2"):
                    await store.create_run(run(run_id))
                lease = await store.acquire_lease("r1", "me", 30)
                stale = await store.acquire_lease("r2", "me", 30)
                await store.release_lease(stale)
                blocker = sqlite3.connect(path, isolation_level=None)
                blocker.execute("BEGIN IMMEDIATE")  # as another process would
                try:
                    write = asyncio.create_task(store.record_usage(lease, [report("r1", "a")]))
                    refused = asyncio.create_task(store.record_usage(stale, [report("r2", "a")]))
                    for _ in range(20):  # the loop goes on while both wait for the lock
                        await asyncio.sleep(0)
                    waiting = not write.done() and not refused.done()
                finally:
                    blocker.execute("COMMIT")
                    blocker.close()
                await write
                with pytest.raises(LeaseLostError):
                    await refused
                return waiting, await store.load_usage("r1"), await store.load_usage("r2")
            finally:
                await store.aclose()

        waiting, written, not_written = asyncio.run(main())

        assert waiting, "a write meeting the lock must wait for it, not fail or block the loop"
        assert written == [report("r1", "a")]
        assert not_written == []
