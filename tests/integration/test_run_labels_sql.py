"""SQLAlchemyStore keeps run labels: the column, the upgrade from version 2 (and 1), resume.

That labels round-trip exactly is in the contract (``check_labels_round_trip``), run by
test_sqlalchemy_store.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from stageflow import Engine, Pipeline, RunContext, RunRecord, RunResult, RunStatus, StoreError
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.adapters.sqlalchemy import _schema as sql
from stageflow.adapters.sqlalchemy._schema import SCHEMA_VERSION

from ._sql import VERSION, raw
from .test_usage_store_sql import report

LABELS = {"stageflow.target": "examples/research.py:pipeline", "ünï": "🦉\x00\n"}


def labelled(run_id: str, labels: dict[str, str] | None = None, at: float = 0.0) -> RunRecord:
    return RunRecord(run_id, "p", "fp", "{}", RunStatus.RUNNING, at, at, labels=labels or {})


DROP_LABELS = "ALTER TABLE stageflow_runs DROP COLUMN labels"
DROP_CONFIG = "ALTER TABLE stageflow_runs DROP COLUMN config"
COLUMNS = {
    "sqlite": "SELECT name FROM pragma_table_info('stageflow_runs')",
    "postgresql": "SELECT column_name FROM information_schema.columns "
    "WHERE table_name = 'stageflow_runs'",
}


def columns(where: str) -> set[object]:
    kind = "postgresql" if where.startswith("postgresql://") else "sqlite"
    return {row[0] for row in asyncio.run(raw(where, COLUMNS[kind]))}


async def make_old(url: str, where: str, version: int) -> None:
    """A database of the current code with one run, taken back to ``version`` (1 or 2)."""
    if not where.startswith("postgresql://"):
        assert sqlite3.sqlite_version_info >= (3, 35), "DROP COLUMN needs SQLite 3.35"
    store = SQLAlchemyStore(url)
    await store.create_run(labelled("old"))
    lease = await store.acquire_lease("old", "me", 30)
    await store.set_status(lease, RunStatus.COMPLETED)
    await store.release_lease(lease)
    await store.aclose()
    statements = [DROP_CONFIG, DROP_LABELS]
    if version == 1:
        statements.append("DROP TABLE stageflow_usage")
    statements.append(f"UPDATE stageflow_meta SET value = '{version}' WHERE key = 'schema_version'")
    await raw(where, *statements)


class TestTheColumn:
    def test_labels_are_a_json_object_in_a_text_column(self, backend):
        url, where = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                await store.create_run(labelled("r1", LABELS))
                await store.create_run(labelled("r2"))
            finally:
                await store.aclose()
            return await raw(where, "SELECT run_id, labels FROM stageflow_runs ORDER BY run_id")

        (first, second) = asyncio.run(main())
        assert first[0] == "r1"
        assert json.loads(str(first[1])) == LABELS
        assert second == ("r2", "{}")

    def test_a_run_written_without_labels_gets_the_default(self, backend):
        # As a stageflow of schema 2 still running against the upgraded database writes.
        url, where = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                await store.list_runs()  # creates the schema
                await raw(
                    where,
                    "INSERT INTO stageflow_runs (run_id, pipeline, fingerprint, structure, data, "
                    "status, created_at, updated_at) "
                    "VALUES ('r1', 'p', 'fp', '', '{}', 'running', 0, 0)",
                )
                return await store.get_run("r1")
            finally:
                await store.aclose()

        assert asyncio.run(main()).labels == {}


class TestSchemaUpgrade:
    @pytest.mark.parametrize("version", [2, 1])
    def test_an_older_database_gains_the_labels_column_when_opened(self, backend, version):
        url, where = backend
        asyncio.run(make_old(url, where, version))
        assert "labels" not in columns(where)
        assert asyncio.run(raw(where, VERSION)) == [(str(version),)]

        async def reopen():
            store = SQLAlchemyStore(url)
            try:
                old = await store.get_run("old")
                await store.create_run(labelled("new", LABELS, at=1.0))
                lease = await store.acquire_lease("new", "me", 30)
                await store.record_usage(lease, [report("new", "a")])
                return old, await store.list_runs(), await store.load_usage("new")
            finally:
                await store.aclose()

        old, listed, usage = asyncio.run(reopen())

        assert old.labels == {}, "a run of the older database has no labels"
        assert old.status is RunStatus.COMPLETED
        assert [(r.run_id, r.labels) for r in listed] == [("new", LABELS), ("old", {})]
        assert usage == [report("new", "a")]
        assert "labels" in columns(where)
        assert asyncio.run(raw(where, VERSION)) == [(str(SCHEMA_VERSION),)]

    def test_two_stores_opening_a_version_2_database_at_once_both_work(self, backend):
        # Both may run the ADD COLUMN: the second finds the column there, and goes on.
        url, where = backend
        asyncio.run(make_old(url, where, 2))

        async def main():
            stores = [SQLAlchemyStore(url) for _ in range(3)]
            try:
                listed = await asyncio.gather(*(s.list_runs() for s in stores))
                await stores[0].create_run(labelled("new", LABELS))
                return listed, [await s.get_run("new") for s in stores]
            finally:
                for store in stores:
                    await store.aclose()

        listed, got = asyncio.run(main())

        assert [[r.run_id for r in runs] for runs in listed] == [["old"]] * 3
        assert [r.labels for r in got] == [LABELS] * 3
        assert asyncio.run(raw(where, VERSION)) == [(str(SCHEMA_VERSION),)]

    def test_an_upgrade_statement_that_fails_otherwise_is_a_store_error(self, backend, monkeypatch):
        url, where = backend
        asyncio.run(make_old(url, where, 2))
        monkeypatch.setitem(sql.UPGRADES, 2, ("ALTER TABLE stageflow_nope ADD COLUMN x TEXT",))

        async def open_it():
            store = SQLAlchemyStore(url)
            try:
                await store.list_runs()
            finally:
                await store.aclose()

        with pytest.raises(StoreError, match="stageflow_nope"):
            asyncio.run(open_it())
        assert asyncio.run(raw(where, VERSION)) == [("2",)], "a failed step bumps nothing"

    def test_a_store_reopening_an_upgraded_database_changes_nothing(self, backend):
        url, where = backend
        asyncio.run(make_old(url, where, 2))

        async def open_and_close():
            store = SQLAlchemyStore(url)
            try:
                return await store.list_runs()
            finally:
                await store.aclose()

        asyncio.run(open_and_close())
        assert [r.run_id for r in asyncio.run(open_and_close())] == ["old"]
        assert asyncio.run(raw(where, VERSION)) == [(str(SCHEMA_VERSION),)]


class TestEngine:
    def test_a_resume_finds_the_labels_the_run_started_with(self, backend):
        url, _ = backend
        seen: list[RunContext] = []

        class Hook:
            name = "hook"
            priority = 100

            def wrap(self, spec, call):
                return call

            def wrap_run(self, graph, call):
                async def hooked(run: RunContext) -> RunResult:
                    seen.append(run)
                    result: RunResult = await call(run)
                    return result

                return hooked

        started = asyncio.Event()

        async def slow(ctx):
            started.set()
            await asyncio.sleep(60)

        async def fast(ctx):
            return {"n": 1}

        graph = Pipeline("p").with_stage("a", fast).with_stage("b", slow, dependencies=("a",))
        graph = graph.build()

        async def main():
            store = SQLAlchemyStore(url)
            try:
                running = asyncio.create_task(
                    Engine(store=store).run(graph, run_id="r1", labels=LABELS)
                )
                await started.wait()
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
                stopped = await store.get_run("r1")
                resumed = asyncio.create_task(
                    Engine(store=store, interceptors=[Hook()]).resume("r1", graph)
                )
                while not seen:
                    await asyncio.sleep(0.01)
                resumed.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await resumed
                return stopped, await store.get_run("r1")
            finally:
                await store.aclose()

        stopped, after = asyncio.run(main())

        assert stopped.status is RunStatus.CANCELLED
        assert stopped.labels == LABELS
        assert seen[0].resumed
        assert dict(seen[0].labels) == LABELS
        assert after.labels == LABELS, "statuses set by the resume must keep the labels"
