"""SQLAlchemyStore on a real SQLite file and a real PostgreSQL server: the contract, and more."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from stageflow import (
    CheckpointStore,
    ConfigurationError,
    Engine,
    Pipeline,
    RunCatalog,
    RunStore,
    SchemaError,
    StoreError,
)
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.testing import RUN_CATALOG_CHECKS, RUN_STORE_CHECKS, ManualClock


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    return request.getfixturevalue("postgres_url")


class TestContract:
    @pytest.mark.parametrize("check", RUN_STORE_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_run_store_contract(self, url, check):
        async def factory(clock: ManualClock) -> SQLAlchemyStore:
            return SQLAlchemyStore(url, clock=clock)

        asyncio.run(check(factory))

    @pytest.mark.parametrize("check", RUN_CATALOG_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_run_catalog_contract(self, url, check):
        async def factory(clock: ManualClock) -> SQLAlchemyStore:
            return SQLAlchemyStore(url, clock=clock)

        asyncio.run(check(factory))

    def test_it_is_both_ports(self, url):
        store = SQLAlchemyStore(url)

        assert isinstance(store, RunStore)
        assert isinstance(store, RunCatalog)
        assert isinstance(store, CheckpointStore)


async def noop(ctx):
    return {"stage": ctx.stage, "pair": (1, 2)}


class TestDurableRuns:
    def test_a_run_is_checkpointed_and_a_completed_run_resumes_to_the_same_result(self, url):
        graph = (
            Pipeline("etl").with_stage("a", noop).with_stage("b", noop, dependencies=("a",)).build()
        )

        async def main():
            store = SQLAlchemyStore(url)
            try:
                first = await Engine(store=store).run(graph, data={"k": 1}, run_id="r1")
                records = await store.stage_records("r1")
                again = await Engine(store=store).resume("r1", graph)
                return first, records, again
            finally:
                await store.aclose()

        first, records, again = asyncio.run(main())

        assert first.ok
        assert again.ok
        assert set(records) == {"a", "b"}
        assert again["b"].data == {"stage": "b", "pair": (1, 2)}

    def test_many_concurrent_runs_share_one_store(self, url):
        # The figures: 50 concurrent runs on one SQLite file, 200 on PostgreSQL.
        runs = 50 if url.startswith("sqlite") else 200
        graph = Pipeline("many").with_stage("a", noop).with_stage("b", noop, dependencies=("a",))

        async def main():
            store = SQLAlchemyStore(url)
            try:
                engine = Engine(store=store)
                results = await asyncio.gather(*(engine.run(graph.build()) for _ in range(runs)))
                return results, await store.list_runs(pipeline="many")
            finally:
                await store.aclose()

        results, stored = asyncio.run(main())

        assert all(r.ok for r in results)
        assert len(stored) == runs
        assert {r.status for r in stored} == {"completed"}

    def test_processes_writing_one_sqlite_file_at_once_lose_nothing(self, tmp_path):
        # Several drivers contend for the file's write lock: the loser of each race moves
        # its write to a thread that waits for the lock, and nothing is lost or refused.
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        script = tmp_path / "driver.py"
        script.write_text(DRIVER, encoding="utf-8")
        processes = [
            subprocess.Popen([sys.executable, str(script), url, str(k)], cwd=ROOT) for k in range(4)
        ]
        assert [p.wait(timeout=120) for p in processes] == [0, 0, 0, 0]

        async def stored():
            store = SQLAlchemyStore(url)
            try:
                runs = await store.list_runs(pipeline="contended")
                records = [len(await store.stage_records(r.run_id)) for r in runs]
                return runs, records
            finally:
                await store.aclose()

        runs, records = asyncio.run(stored())
        assert len(runs) == 4 * 15
        assert {r.status for r in runs} == {"completed"}
        assert set(records) == {20}


ROOT = Path(__file__).resolve().parents[2]
DRIVER = """
import asyncio, sys
from stageflow import Engine, Pipeline
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

async def stage(ctx):
    return {"stage": ctx.stage}

async def main(url, k):
    pipeline = Pipeline("contended")
    for i in range(20):
        deps = (f"s{i - 1}",) if i % 4 else ()
        pipeline = pipeline.with_stage(f"s{i}", stage, dependencies=deps)
    graph = pipeline.build()
    store = SQLAlchemyStore(url)
    try:
        engine = Engine(store=store)
        results = await asyncio.gather(
            *(engine.run(graph, run_id=f"p{k}-r{j}") for j in range(15))
        )
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    finally:
        await store.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class TestBadInput:
    @pytest.mark.parametrize(
        "url", ["sqlite://", "sqlite:///:memory:", "mysql://x@y/z", "not a url", 5]
    )
    def test_a_url_it_cannot_use_is_refused_naming_it(self, url):
        with pytest.raises(ConfigurationError) as info:
            SQLAlchemyStore(url)  # type: ignore[arg-type]

        assert info.value.field == "url"

    def test_a_file_that_is_not_a_database_is_refused_and_left_alone(self, tmp_path):
        path = tmp_path / "notes.db"
        path.write_bytes(b"these are my notes, not a database" * 100)

        with pytest.raises(StoreError, match="cannot be used as a store") as caught:
            SQLAlchemyStore(f"sqlite:///{path}")  # at once, not at first use
        assert str(caught.value).startswith(f"{path} cannot be used as a store: it is no SQLite")
        assert path.read_bytes() == b"these are my notes, not a database" * 100

    def test_a_newer_schema_is_refused(self, tmp_path):
        path = tmp_path / "runs.db"

        async def create():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            await store.list_runs()
            await store.aclose()

        asyncio.run(create())
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE stageflow_meta SET value = '99' WHERE key = 'schema_version'")

        async def reopen():
            await SQLAlchemyStore(f"sqlite:///{path}").list_runs()

        with pytest.raises(SchemaError, match="99"):
            asyncio.run(reopen())

    def test_a_sqlite_aiosqlite_url_is_accepted(self, tmp_path):
        store = SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")

        assert asyncio.run(store.list_runs()) == []


class TestRetention:
    def test_finished_runs_older_than_the_retention_are_pruned(self, url):
        from stageflow import RunRecord, RunStatus

        clock = ManualClock()

        async def main():
            store = SQLAlchemyStore(url, clock=clock, retention=100)
            try:
                for run_id in ("old", "running"):
                    await store.create_run(
                        RunRecord(run_id, "p", "fp", "{}", RunStatus.RUNNING, clock(), clock())
                    )
                lease = await store.acquire_lease("old", "me", 30)
                await store.set_status(lease, RunStatus.COMPLETED)
                await store.release_lease(lease)
                clock.advance(150)
                await store.create_run(
                    RunRecord("new", "p", "fp", "{}", RunStatus.RUNNING, clock(), clock())
                )
                return {r.run_id for r in await store.list_runs()}
            finally:
                await store.aclose()

        assert asyncio.run(main()) == {"running", "new"}


class TestBackendErrors:
    def test_a_postgresql_error_becomes_a_store_error(self, postgres_url):
        async def main():
            store = SQLAlchemyStore(postgres_url)
            try:
                await store.get_run("nul\x00")  # PostgreSQL text cannot hold a NUL
            finally:
                await store.aclose()

        with pytest.raises(StoreError, match="0x00"):
            asyncio.run(main())

    def test_a_bad_limit_is_refused_before_the_database_sees_it(self, url):
        async def main():
            store = SQLAlchemyStore(url)
            try:
                await store.list_runs(limit=-1)
            finally:
                await store.aclose()

        with pytest.raises(ConfigurationError, match="limit"):
            asyncio.run(main())
